"""Import/patch orderings, each in a fresh interpreter: every order gives the same behaviour
(a TRL 0.7-style call works and feeds rows of <= 8 tokens) and exactly one trlshim wrapper per
patched attribute (counted in the ``__wrapped__`` chain, independent of trlshim's own marker)."""
from __future__ import annotations

import pytest
from reliability_support import check_patched_once, check_unpatched, run_scenario

SCENARIOS = {
    # import trlshim, then trl; then a second import, reload, and patch -> unpatch -> patch
    "shim_then_trl": """
        import importlib, os, tempfile
        from reliability_support import *
        out = tempfile.mkdtemp()
        import trlshim
        import trl
        r = {"first": [wrappers(), legacy_call(trl.SFTTrainer, out)]}
        import trlshim as again
        assert again is trlshim
        importlib.reload(trlshim)
        r["reload"] = [wrappers(), legacy_call(trl.SFTTrainer, out)]
        trlshim.patch(); trlshim.patch()
        r["patch_twice"] = [wrappers()]
        trlshim.unpatch()
        r["unpatched"] = [wrappers()]
        trlshim.patch()
        r["repatched"] = [wrappers(), legacy_call(trl.SFTTrainer, out)]
        emit(r)
    """,
    # trl and its names first, trlshim after: the names bound earlier see the patch
    "trl_then_shim": """
        import tempfile
        from reliability_support import *
        from trl import SFTTrainer
        try:
            from trl import SFTConfig
        except ImportError:
            SFTConfig = None
        out = tempfile.mkdtemp()
        import trlshim
        import trl
        r = {"first": [wrappers(), legacy_call(SFTTrainer, out)],
             "same_class": SFTTrainer is trl.SFTTrainer}
        emit(r)
    """,
    # unpatch before trl was ever imported: TRL stays stock; patch() afterwards applies at once
    "unpatch_before_trl": """
        import tempfile
        from reliability_support import *
        import trlshim
        trlshim.unpatch()
        import trl
        out = tempfile.mkdtemp()
        r = {"unpatched": [wrappers()], "is_patched": trlshim.is_patched()}
        trlshim.patch()
        r["first"] = [wrappers(), legacy_call(trl.SFTTrainer, out)]
        emit(r)
    """,
    # the submodule imported directly (no `import trl` statement) fires the post-import hook
    "submodule_direct": """
        import tempfile
        from reliability_support import *
        import trlshim
        from trl.trainer.sft_trainer import SFTTrainer
        out = tempfile.mkdtemp()
        r = {"first": [wrappers(), legacy_call(SFTTrainer, out)]}
        emit(r)
    """,
}


def _check_patched(state, call=True):
    check_patched_once(state[0])
    if call:
        outcome, lengths = state[1]
        assert outcome == "ok", lengths
        assert lengths and max(lengths) == 8  # the texts are longer: every row cut to exactly 8


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ordering(scenario):
    r = run_scenario(SCENARIOS[scenario])
    _check_patched(r["first"])
    if scenario == "shim_then_trl":
        _check_patched(r["reload"])
        _check_patched(r["patch_twice"], call=False)
        check_unpatched(r["unpatched"][0])
        _check_patched(r["repatched"])
    elif scenario == "trl_then_shim":
        assert r["same_class"] is True  # the class object is patched in place, never replaced
    elif scenario == "unpatch_before_trl":
        check_unpatched(r["unpatched"][0])
        assert r["is_patched"] is False
