"""Import/patch orderings, each in a fresh interpreter: every order gives the same behaviour
(a TRL 0.7-style call works and feeds rows of <= 8 tokens) and exactly one trlshim wrapper per
patched attribute (counted in the ``__wrapped__`` chain, independent of trlshim's own marker)."""
from __future__ import annotations

import pytest
from reliability_support import run_scenario

ONE_TRAINER_WRAPPER = ["sft_trainer.arguments"]

SCENARIOS = {
    # import trlshim, then trl; then a second import, reload, and patch -> unpatch -> patch
    "shim_then_trl": """
        import importlib, os, tempfile
        from reliability_support import *
        out = tempfile.mkdtemp()
        import trlshim
        import trl
        r = {"first": [trainer_init_wrappers(), config_init_wrappers(), legacy_call(trl.SFTTrainer, out)]}
        import trlshim as again
        assert again is trlshim
        importlib.reload(trlshim)
        r["reload"] = [trainer_init_wrappers(), config_init_wrappers(), legacy_call(trl.SFTTrainer, out)]
        trlshim.patch(); trlshim.patch()
        r["patch_twice"] = [trainer_init_wrappers(), config_init_wrappers()]
        trlshim.unpatch()
        r["unpatched"] = [trainer_init_wrappers(), config_init_wrappers()]
        trlshim.patch()
        r["repatched"] = [trainer_init_wrappers(), config_init_wrappers(), legacy_call(trl.SFTTrainer, out)]
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
        r = {"first": [trainer_init_wrappers(), config_init_wrappers(), legacy_call(SFTTrainer, out)],
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
        r = {"unpatched": [trainer_init_wrappers(), config_init_wrappers()], "is_patched": trlshim.is_patched()}
        trlshim.patch()
        r["first"] = [trainer_init_wrappers(), config_init_wrappers(), legacy_call(trl.SFTTrainer, out)]
        emit(r)
    """,
    # the submodule imported directly (no `import trl` statement) fires the post-import hook
    "submodule_direct": """
        import tempfile
        from reliability_support import *
        import trlshim
        from trl.trainer.sft_trainer import SFTTrainer
        out = tempfile.mkdtemp()
        r = {"first": [trainer_init_wrappers(), config_init_wrappers(), legacy_call(SFTTrainer, out)]}
        emit(r)
    """,
}


def _config_wrappers_expected(result_config_wrappers, trl_has_config):
    return ["sft_config.fields"] if trl_has_config else []


@pytest.fixture(scope="module")
def has_sft_config():
    from importlib.util import find_spec

    return find_spec("trl.trainer.sft_config") is not None


def _check_patched(state, has_sft_config, call=True):
    trainer, config = state[0], state[1]
    assert trainer == ONE_TRAINER_WRAPPER, f"SFTTrainer.__init__ wrappers: {trainer}"
    assert config == (["sft_config.fields"] if has_sft_config else []), f"SFTConfig.__init__ wrappers: {config}"
    if call:
        outcome, lengths = state[2]
        assert outcome == "ok", lengths
        assert lengths and max(lengths) <= 8 and max(lengths) == 8  # texts are longer: cut to exactly 8


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ordering(scenario, has_sft_config):
    r = run_scenario(SCENARIOS[scenario])
    _check_patched(r["first"], has_sft_config)
    if scenario == "shim_then_trl":
        _check_patched(r["reload"], has_sft_config)
        _check_patched(r["patch_twice"], has_sft_config, call=False)
        assert r["unpatched"] == [[], []]
        _check_patched(r["repatched"], has_sft_config)
    elif scenario == "trl_then_shim":
        assert r["same_class"] is True  # the class object is patched in place, never replaced
    elif scenario == "unpatch_before_trl":
        assert r["unpatched"] == [[], []] and r["is_patched"] is False
