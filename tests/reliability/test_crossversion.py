"""Old TRL releases' own SFT tests as acceptance: ``tests/test_sft_trainer.py`` from the sdist of an
old release, run against the installed (newest) TRL with ``import trlshim`` first, offline, with the
stand-ins of ``transparency_hub.py`` and the ``transparency_plugin`` plugin (the same machinery as
``test_transparency.py``; ``old_trl_tests.py``).

The goal (issue 10): every test that passes on its own release passes here. Which tests pass on their own
release (stock, same stand-ins built by that release's transformers) is measured by
``scripts/crossversion_baseline.py`` into ``crossversion_own_release.json`` (about 2 minutes of CI time
saved); this test checks that file is current for the sdist and stand-ins at hand. A test that passes on its
own release and fails here fails this test unless it is on the allow-list (``crossversion_allowlist.txt``:
release, test, one-line reason). The list is kept honest both ways: a listed test that passes here, that
does not pass on its own release (not part of the goal) or that no longer exists fails this test too.

Needs ``TRLSHIM_OLD_TRL_TESTS``: unpacked sdist folders ``.../trl-X.Y.Z`` (holding
``tests/test_sft_trainer.py``), separated by ``os.pathsep``; ``nox -s crossversion`` downloads them.
Skipped otherwise (no network in tests)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import pytest
from old_trl_tests import HERE, ROOT, build_hub, run_sft_tests, sdist_fingerprint, standins_fingerprint

FOLDERS = [f for f in os.environ.get("TRLSHIM_OLD_TRL_TESTS", "").split(os.pathsep) if f]
ALLOWLIST = os.path.join(HERE, "crossversion_allowlist.txt")
OWN = os.path.join(HERE, "crossversion_own_release.json")
KINDS = {"internals", "transformers", "by design", "stand-in", "trlshim gap"}  # the allow-list file's header
REGENERATE = "regenerate it: python scripts/crossversion_baseline.py PY (each old release's venv python)"


def allowlist() -> dict:
    """``{release: {test name: reason}}`` from the allow-list file (``release | test | reason``)."""
    out: dict = {}
    with open(ALLOWLIST) as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                release, test, reason = (part.strip() for part in line.split("|", 2))
                assert reason, f"allow-list entry without a reason: {line!r}"
                out.setdefault(release, {})[test] = reason
    return out


def test_allowlist_is_well_formed():
    entries = allowlist()
    assert entries, "empty allow-list file"
    for release, tests in entries.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", release), release
        assert all(re.fullmatch(r"test_\w+(\[.*\])?", t) for t in tests), tests
        assert {kind(r) for r in tests.values()} <= KINDS, tests


def own_release() -> dict:
    """``{release: entry}`` of ``crossversion_own_release.json`` (scripts/crossversion_baseline.py)."""
    with open(OWN) as fh:
        return json.load(fh)


def kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def test_own_release_outcomes_are_current():
    """The committed own-release outcomes were measured on the stand-ins and constraints of this checkout."""
    own = own_release()
    assert own, "empty own-release file"
    for release, entry in own.items():
        assert entry["standins_sha256"] == standins_fingerprint(), f"{OWN}: the stand-ins changed; {REGENERATE}"
        path = os.path.join(ROOT, "trlshim", "data", "constraints", f"trl-{release}.txt")
        with open(path, "rb") as fh:
            assert entry["constraints_sha256"] == hashlib.sha256(fh.read()).hexdigest(), (
                f"{OWN}: the constraints of TRL {release} changed; {REGENERATE}")
        assert any(state == "passed" for state in entry["outcomes"].values()), release


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    hub = str(tmp_path_factory.mktemp("hub"))
    build_hub(sys.executable, hub)
    return hub


@pytest.mark.skipif(not FOLDERS, reason="set TRLSHIM_OLD_TRL_TESTS to unpacked TRL sdists (nox -s crossversion)")
@pytest.mark.parametrize("folder", FOLDERS, ids=[os.path.basename(f.rstrip("/")) for f in FOLDERS])
def test_old_release_sft_tests_pass_on_installed_trl_with_trlshim(folder, hub, tmp_path):
    import trl

    release = os.path.basename(folder.rstrip("/")).removeprefix("trl-")
    own = own_release().get(release)
    assert own, f"no own-release outcomes for TRL {release} in {OWN}; {REGENERATE}"
    assert own["tests_sha256"] == sdist_fingerprint(folder), f"TRL {release}'s sdist tests differ; {REGENERATE}"
    outcomes, proc = run_sft_tests(sys.executable, folder, hub, "shim", str(tmp_path))
    assert set(outcomes) == set(own["outcomes"]), f"other tests than measured on TRL {release}; {REGENERATE}"
    expected = allowlist().get(release, {})
    goal = sorted(n for n, s in own["outcomes"].items() if s == "passed")
    kept = [n for n in goal if outcomes[n] == "passed"]
    listed = [n for n in goal if outcomes[n] != "passed" and n in expected]
    kinds = {k: sum(kind(expected[n]) == k for n in listed) for k in sorted({kind(expected[n]) for n in listed})}
    gained = sorted(n for n, s in outcomes.items() if s == "passed" and own["outcomes"][n] != "passed")
    print(f"TRL {release} tests/test_sft_trainer.py ({len(outcomes)} tests): passes on own release: "
          f"{len(goal)}/{len(outcomes)}; of those, pass on newest (TRL {trl.__version__}) with trlshim: "
          f"{len(kept)}/{len(goal)}; allow-listed: {len(listed)} "
          f"({', '.join(f'{k} {n}' for k, n in kinds.items()) or 'none'}); not passing on own release but "
          f"passing here: {gained or 'none'}")
    assert kept, proc.stdout[-3000:]
    unexpected = sorted(n for n in goal if outcomes[n] != "passed" and n not in expected)
    stale = sorted(n for n in expected if outcomes.get(n, "missing") in ("passed", "missing"))
    outside = sorted(n for n in expected if own["outcomes"].get(n) not in (None, "passed"))
    assert not unexpected, (f"pass on TRL {release} itself, fail on TRL {trl.__version__} with trlshim, not on the "
                            f"allow-list: {unexpected}\n{proc.stdout[-6000:]}")
    assert not stale, f"on the allow-list of {release} but passing (or gone): remove them: {stale}"
    assert not outside, f"on the allow-list of {release} but failing on TRL {release} itself (not in the goal): {outside}"
