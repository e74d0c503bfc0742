"""Maintainer command: generate ``tests/reliability/crossversion_own_release.json``, which tests of an old
release's own ``tests/test_sft_trainer.py`` pass on that release itself (stock TRL, no trlshim), offline, on
the stand-ins of ``tests/reliability/transparency_hub.py`` built by that release's own transformers. The
crossversion test holds the newest TRL with trlshim to exactly these (issue 10). Never hand-edit that file.

    python scripts/crossversion_baseline.py PY [PY ...]      # PY: the python of a venv holding one old release

Each ``PY`` is e.g. nox's ``.nox/tests-trl-0-19-1/bin/python``; its environment needs ``pytest``,
``parameterized`` and ``pillow`` (the ``crossversion`` session's extras; a folder holding them can come in
through ``PYTHONPATH``). The sdists are downloaded from the index (``PIP_INDEX_URL``) and sha256-checked, or
read from ``--sdists DIR`` (unpacked ``trl-X.Y.Z`` folders). Other releases' entries in the file are kept.
Each entry records what it was measured from (the sdist's test files, the stand-ins' sources, the release's
constraints file); the crossversion test fails when one of them no longer matches: rerun this then.
About 2 minutes for 0.8.6, 0.12.2 and 0.19.1 on one core.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
import old_trl_tests  # noqa: E402

OUT = ROOT / "tests" / "reliability" / "crossversion_own_release.json"


def constraints_fingerprint(release: str) -> str | None:
    path = ROOT / "trlshim" / "data" / "constraints" / f"trl-{release}.txt"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def download_sdist(release: str, dest: Path) -> Path:
    """The sdist of ``release`` unpacked under ``dest``, from the index's JSON API (PEP 691), sha256-checked
    (pip cannot prepare 0.8-0.12's metadata: their setup.py symlinks examples/scripts)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(index + "/trl/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    name = f"trl-{release}.tar.gz"
    entry = {f["filename"]: f for f in json.load(urllib.request.urlopen(req))["files"]}[name]
    data = urllib.request.urlopen(entry["url"]).read()
    assert hashlib.sha256(data).hexdigest() == entry["hashes"]["sha256"], f"sha256 mismatch for {name}"
    (dest / name).write_bytes(data)
    with tarfile.open(dest / name) as tar:
        tar.extractall(dest)
    return dest / f"trl-{release}"


def versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('trl', 'transformers', 'torch', 'tokenizers', 'datasets')}))")
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(python: str, sdists: Path | None, tmp: Path) -> dict:
    found = versions(python)
    release = found["trl"]
    folder = sdists / f"trl-{release}" if sdists else download_sdist(release, tmp)
    hub = tmp / f"hub-{release}"
    old_trl_tests.build_hub(python, str(hub))
    work = tmp / f"work-{release}"
    work.mkdir()
    results, proc = old_trl_tests.run_sft_tests(python, str(folder), str(hub), "stock", str(work))
    passed = sum(v == "passed" for v in results.values())
    print(f"TRL {release} on itself (transformers {found['transformers']}): {passed} of {len(results)} pass")
    assert passed, proc.stdout[-3000:]
    return {
        "versions": found,
        "tests_sha256": old_trl_tests.sdist_fingerprint(str(folder)),
        "standins_sha256": old_trl_tests.standins_fingerprint(),
        "constraints_sha256": constraints_fingerprint(release),
        "outcomes": dict(sorted(results.items())),
    }


def main(argv: list) -> None:
    sdists = None
    if argv[:1] == ["--sdists"]:
        sdists, argv = Path(argv[1]).resolve(), argv[2:]
    if not argv:
        sys.exit(__doc__)
    table = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for python in argv:
            entry = measure(python, sdists, Path(tmp))
            table[entry["versions"]["trl"]] = entry
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({', '.join(sorted(table))})")


if __name__ == "__main__":
    main(sys.argv[1:])
