"""Old TRL releases' own SFT tests as acceptance: ``tests/test_sft_trainer.py`` from the sdist of an
old release, run against the installed (newest) TRL with ``import trlshim`` first, offline, with the
stand-ins of ``transparency_hub.py`` and the ``transparency_plugin`` plugin (the same machinery as
``test_transparency.py``).

Every test must pass, except those on the allow-list (``crossversion_allowlist.txt``: release, test,
one-line reason). The list is kept honest both ways: a failing test not on it fails this test, and so
does a listed test that passes (or that no longer exists).

Needs ``TRLSHIM_OLD_TRL_TESTS``: unpacked sdist folders ``.../trl-X.Y.Z`` (holding
``tests/test_sft_trainer.py``), separated by ``os.pathsep``; ``nox -s crossversion`` downloads them.
Skipped otherwise (no network in tests)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from test_transparency import HERE, _env, _outcomes

FOLDERS = [f for f in os.environ.get("TRLSHIM_OLD_TRL_TESTS", "").split(os.pathsep) if f]
ALLOWLIST = os.path.join(HERE, "crossversion_allowlist.txt")


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


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    hub = str(tmp_path_factory.mktemp("hub"))
    subprocess.run([sys.executable, os.path.join(HERE, "transparency_hub.py"), hub], check=True,
                   env=_env(hub, "stock"), capture_output=True)
    return hub


@pytest.mark.skipif(not FOLDERS, reason="set TRLSHIM_OLD_TRL_TESTS to unpacked TRL sdists (nox -s crossversion)")
@pytest.mark.parametrize("folder", FOLDERS, ids=[os.path.basename(f.rstrip("/")) for f in FOLDERS])
def test_old_release_sft_tests_pass_on_installed_trl_with_trlshim(folder, hub, tmp_path):
    import trl

    release = os.path.basename(folder.rstrip("/")).removeprefix("trl-")
    # Only the tests folder: run from the sdist's root, its own (old) trl package would be imported.
    work = tmp_path / "old"
    shutil.copytree(os.path.join(folder, "tests"), work / "tests")
    (work / "tests" / "__init__.py").touch()  # relative imports of testing_utils; some sdists omit it
    junit = str(tmp_path / "junit.xml")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "transparency_plugin", "-p", "no:cacheprovider", "-q",
         "tests/test_sft_trainer.py", f"--junitxml={junit}", "-W", "ignore::DeprecationWarning"],
        cwd=work, env=_env(hub, "shim"), capture_output=True, text=True, timeout=1500,
    )
    assert os.path.exists(junit), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {name.rsplit("::", 1)[-1]: state for name, state in _outcomes(junit).items()}
    expected = allowlist().get(release, {})
    counts = {s: sum(v == s for v in outcomes.values()) for s in ("passed", "failed", "skipped")}
    print(f"TRL {release} tests/test_sft_trainer.py on TRL {trl.__version__} with trlshim: "
          f"{counts['passed']} of {len(outcomes)} pass ({counts})")
    assert counts["passed"] > 0, proc.stdout[-3000:]
    unexpected = sorted(n for n, s in outcomes.items() if s == "failed" and n not in expected)
    stale = sorted(n for n in expected if outcomes.get(n, "missing") in ("passed", "missing"))
    assert not unexpected, f"failed, not on the allow-list: {unexpected}\n{proc.stdout[-6000:]}"
    assert not stale, f"on the allow-list of {release} but passing (or gone): remove them: {stale}"
