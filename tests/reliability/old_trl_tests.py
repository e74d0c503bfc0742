"""Running a TRL release's own ``tests/test_sft_trainer.py`` (from its sdist) offline, on the stand-ins of
``transparency_hub.py``: shared by ``test_transparency.py``, ``test_crossversion.py`` and
``scripts/crossversion_baseline.py``. Stdlib only (the script runs it outside the test venvs).

The stand-in hub is built by the interpreter that runs the tests (``python``): a hub saved by the newest
transformers is not loadable by old ones, so an old release's own run needs its own build.
"""
from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
# What the stand-ins are made of (whole files, or the top-level definitions the hub uses from shared ones): a
# change here can change which tests pass on their own release, so the committed own-release outcomes
# (tests/reliability/crossversion_own_release.json) record its hash.
STANDIN_SOURCES = {
    "tests/reliability/transparency_hub.py": None, "tests/reliability/transparency_plugin.py": None,
    "tests/helpers.py": ("WORDS", "_tokenizer_json"), "trlshim/tiny.py": ("tokenizer_json", "sentences"),
}


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _definitions(path: str, names) -> str:
    """The source of the top-level definitions ``names`` of the file (all of it when ``names`` is None)."""
    with open(os.path.join(ROOT, path)) as fh:
        text = fh.read()
    if names is None:
        return text
    found = {}
    for node in ast.parse(text).body:
        targets = [node.name] if hasattr(node, "name") else [t.id for t in getattr(node, "targets", []) if
                                                               isinstance(t, ast.Name)]
        for name in set(targets) & set(names):
            found[name] = ast.get_source_segment(text, node)
    assert set(found) == set(names), f"{path}: no top-level {sorted(set(names) - set(found))}"
    return "".join(found[n] for n in names)


def standins_fingerprint() -> str:
    """sha256 over the stand-ins' sources (``STANDIN_SOURCES``)."""
    return hashlib.sha256("".join(_definitions(p, n) for p, n in STANDIN_SOURCES.items()).encode()).hexdigest()


def sdist_fingerprint(folder: str) -> str:
    """sha256 of an unpacked sdist's test module and its test utilities."""
    parts = [_sha256(os.path.join(folder, "tests", name)) for name in ("test_sft_trainer.py", "testing_utils.py")
             if os.path.exists(os.path.join(folder, "tests", name))]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def env(hub: str, mode: str, python_path: tuple = ()) -> dict:
    """The environment of a run: offline, the hub stand-ins, ``mode`` "shim" (``import trlshim`` first) or
    "stock"; ``python_path`` before the tests folders (the checkout's root, for the hub builder's imports)."""
    out = dict(os.environ)
    for key in ("TRLSHIM_DISABLE", "TRLSHIM_STRICT", "TRLSHIM_TRL_VERSION"):
        out.pop(key, None)
    out.update(
        HF_HUB_CACHE=hub, TRLSHIM_HUB=hub, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        WANDB_DISABLED="true", TOKENIZERS_PARALLELISM="false", TRLSHIM_TRANSPARENCY=mode,
        PYTHONPATH=os.pathsep.join([*python_path, HERE, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    )
    return out


def outcomes(junit: str) -> dict:
    """``{classname::name: passed|failed|skipped}`` from a junit XML file."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed"
            elif child.tag == "skipped":
                state = "skipped"
        out[f"{case.get('classname')}::{case.get('name')}"] = state
    return out


def build_hub(python: str, hub: str) -> None:
    """The stand-in hub under ``hub``, saved by ``python``'s transformers."""
    proc = subprocess.run([python, os.path.join(HERE, "transparency_hub.py"), hub], env=env(hub, "stock", (ROOT,)),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"stand-in hub build failed under {python}:\n{proc.stderr[-4000:]}"


def run_sft_tests(python: str, folder: str, hub: str, mode: str, work: str, timeout: int = 1500):
    """``folder``'s ``tests/test_sft_trainer.py`` under ``python`` (mode "stock" or "shim"), run from a copy of
    its tests folder under ``work`` (from the sdist's root its own, old ``trl`` package would be imported).
    Returns ``({test name: outcome}, completed process)``; the names are the test functions' (no class)."""
    shutil.copytree(os.path.join(folder, "tests"), os.path.join(work, "tests"))
    open(os.path.join(work, "tests", "__init__.py"), "a").close()  # relative imports; some sdists omit it
    junit = os.path.join(work, "junit.xml")
    proc = subprocess.run(
        [python, "-m", "pytest", "-p", "transparency_plugin", "-p", "no:cacheprovider", "-q",
         "tests/test_sft_trainer.py", f"--junitxml={junit}", "-W", "ignore::DeprecationWarning"],
        cwd=work, env=env(hub, mode), capture_output=True, text=True, timeout=timeout,
    )
    assert os.path.exists(junit), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {name.rsplit("::", 1)[-1]: state for name, state in outcomes(junit).items()}, proc
