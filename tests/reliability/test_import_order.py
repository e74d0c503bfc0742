"""Issue 8: the order of import lines under ``trlshim/patches/`` changes nothing.

The package is copied to a temporary folder with the import lines of ``patches/__init__.py`` and
``patches/sft/__init__.py`` split one module per line and permuted; a fresh interpreter imports
that copy (``PYTHONPATH``) and records what the model is fed for three calls that exercise
several steps (a TRL-0.8 legacy call with packing, a prompt/completion dataset, a batched
formatting_func), plus the trlshim layers on ``SFTTrainer.__init__``. Every permutation must give
exactly what the unpermuted package gives."""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from reliability_support import run_scenario, structural_release

import trlshim

PACKAGE = Path(trlshim.__file__).resolve().parent

SCENARIO = """
    import tempfile, trlshim, trl
    import helpers
    from reliability_support import *
    from datasets import Dataset
    from trl.trainer import sft_trainer
    assert trlshim.__file__.startswith(__import__("os").environ["EXPECT_ROOT"]), trlshim.__file__

    def fed(**kw):
        rec, _ = helpers.run_sft(tempfile.mkdtemp(), **kw)
        return helpers.fed_examples(rec)

    r = {"layers": trainer_init_wrappers(), "legacy": legacy_call(trl.SFTTrainer, tempfile.mkdtemp())}
    r["prompt_completion"] = fed(dataset=Dataset.from_list(helpers.prompt_completion_rows()), max_length=16)
    r["batched_formatting"] = fed(dataset=Dataset.from_list([{"q": t} for t in helpers.texts(8)]), max_length=16,
                                  formatting_func=lambda b: ["Q: " + q for q in b["q"]])
    r["steps"] = [s.name for s in __import__("trlshim.patches.sft", fromlist=["PIPELINE"]).PIPELINE.steps]
    emit(r)
"""

LINE = re.compile(r"^from \. import (?:\(([\w,\s]+?)\)|([\w, ]+?))(\s*#.*)?$", re.M)  # one line or parenthesized


def _permuted_copy(tmp: Path, seed: int) -> Path:
    root = tmp / f"perm{seed}"
    shutil.copytree(PACKAGE, root / "trlshim", ignore=shutil.ignore_patterns("__pycache__"))
    rng = random.Random(seed)
    for rel in ("patches/__init__.py", "patches/sft/__init__.py"):
        path = root / "trlshim" / rel
        text = path.read_text()
        match = LINE.search(text)
        names = [n.strip() for n in (match.group(1) or match.group(2)).split(",") if n.strip()]
        rng.shuffle(names)
        if seed and names == sorted(names):
            names.reverse()
        path.write_text(text[:match.start()] + "\n".join(f"from . import {n}  # noqa: F401" for n in names)
                        + text[match.end():])
        assert len(names) >= 2 and (seed == 0 or names != sorted(names)), names  # really permuted
    return root


def _fed(root: Path) -> dict:
    r = run_scenario(SCENARIO, env={"EXPECT_ROOT": str(root)}, timeout=400,
                     pythonpath=[str(root)])
    r.pop("_stderr")
    return r


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not structural_release():
        pytest.skip("structural check: run on the oldest, a middle and the newest matrix release")
    return _fed(_permuted_copy(tmp_path_factory.mktemp("ref"), 0))


@pytest.mark.parametrize("seed", [1])
def test_import_order_changes_nothing(seed, reference, tmp_path):
    assert reference["layers"] == ["sft.pipeline"]
    assert reference["legacy"][0] == "ok" and max(reference["legacy"][1]) <= 8
    assert _fed(_permuted_copy(tmp_path, seed)) == reference
