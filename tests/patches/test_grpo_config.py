"""GRPOConfig field names and values of every release (TRL 0.14+), trlshim.GRPOConfig, and the clear
ImportError on releases without GRPO. Construction only: cheap on every release."""
from __future__ import annotations

import dataclasses
import pickle

import helpers
import pytest

import trlshim
from trlshim import report
from trlshim.versions import trl_in, trl_version

TRL = trl_version()
HAS_GRPO = trl_in(">=0.14")
needs_grpo = pytest.mark.skipif(not HAS_GRPO, reason=f"TRL {TRL} has no GRPO (introduced in TRL 0.14.0)")


def _cfg(tmp_path, cls=None, **kw):
    import trl

    base = dict(helpers.training_kwargs(tmp_path), num_generations=2, max_completion_length=4)
    return (cls or trl.GRPOConfig)(**{**base, **kw})


def _fields(cfg) -> set:
    """The fields the installed release itself has (not those trlshim adds for the options it emulates)."""
    added = getattr(type(cfg), "_trlshim_injected_fields", frozenset())
    return {f.name for f in dataclasses.fields(cfg)} - added


@pytest.mark.skipif(HAS_GRPO, reason=f"TRL {TRL} has GRPO")
def test_grpo_names_missing_release_is_a_clear_import_error():
    with pytest.raises(ImportError, match=rf"introduced in TRL 0\.14\.0; TRL {TRL} has no GRPOTrainer"):
        from trlshim import GRPOTrainer  # noqa: F401
    with pytest.raises(ImportError, match=rf"introduced in TRL 0\.14\.0; TRL {TRL} has no GRPOConfig"):
        from trlshim import GRPOConfig  # noqa: F401
    with pytest.raises(ImportError):  # TRL's own name stays absent (nothing is injected)
        from trl import GRPOTrainer  # noqa: F401


@needs_grpo
def test_grpo_max_prompt_length_kept_on_every_release(tmp_path):
    from trlshim.patches.grpo import config

    cfg = _cfg(tmp_path, max_prompt_length=7)
    if "max_prompt_length" in _fields(cfg):
        assert cfg.max_prompt_length == 7
        assert config.own_options(cfg) == {}
    else:  # TRL >= 0.28 removed it: trlshim carries it, and said so
        assert trl_in(">=0.28")
        assert config.own_options(cfg) == {"max_prompt_length": 7}
        assert any("max_prompt_length" in m for m in report.applied())


@needs_grpo
def test_grpo_loss_type_per_release(tmp_path):
    if trl_in("<0.17"):  # no option: the release's one aggregation is accepted, any other refused
        neutral = "grpo" if trl_in("<0.16") else "bnpo"
        cfg = _cfg(tmp_path, loss_type=neutral)
        assert "loss_type" not in _fields(cfg)
        assert any("loss_type" in m for m in report.applied())
        with pytest.raises(TypeError, match=rf"loss_type.*{TRL}"):
            _cfg(tmp_path, loss_type="dr_grpo")
        return
    assert _cfg(tmp_path, loss_type="dr-grpo").loss_type == "dr_grpo"
    if trl_in("<0.22"):
        with pytest.raises(ValueError, match=rf"loss_type='dapo'.*{TRL}"):
            _cfg(tmp_path, loss_type="dapo")
    else:
        assert _cfg(tmp_path, loss_type="dapo").loss_type == "dapo"
    with pytest.raises(ValueError, match="loss_type='nope'"):
        _cfg(tmp_path, loss_type="nope")


@needs_grpo
def test_grpo_vllm_mode_dropped_only_when_it_changes_nothing(tmp_path):
    cfg = _cfg(tmp_path, vllm_mode="colocate")  # use_vllm is off: no vLLM option is read anywhere
    if "vllm_mode" in _fields(cfg):
        assert cfg.vllm_mode == "colocate"
    else:
        assert any("vllm_mode" in m for m in report.applied())
        with pytest.raises(TypeError, match=rf"vllm_mode.*{TRL}"):
            _cfg(tmp_path, vllm_mode="colocate", use_vllm=True)


@needs_grpo
def test_grpo_unique_prompts_spellings(tmp_path):
    for spelling in ("wandb_log_unique_prompts", "log_unique_prompts"):
        try:
            cfg = _cfg(tmp_path, **{spelling: True})
        except TypeError as exc:  # 0.14-0.16: neither spelling exists
            assert trl_in("<0.17") and spelling in str(exc) and str(TRL) in str(exc)
            continue
        real = next(n for n in ("log_unique_prompts", "wandb_log_unique_prompts") if n in _fields(cfg))
        assert getattr(cfg, real) is True


@needs_grpo
def test_grpo_scale_rewards_strings_on_bool_releases(tmp_path):
    cfg = _cfg(tmp_path, scale_rewards="none") if trl_in(">=0.16") else None
    if cfg is not None:
        assert cfg.scale_rewards in (False, "none")  # < 0.22: the bool; later TRL's own string
        if trl_in("<0.22"):
            with pytest.raises(ValueError, match="batch"):
                _cfg(tmp_path, scale_rewards="batch")
    else:
        with pytest.raises(TypeError, match="scale_rewards"):
            _cfg(tmp_path, scale_rewards=False)


@needs_grpo
def test_grpo_unknown_field_names_closest_and_version(tmp_path):
    with pytest.raises(TypeError) as err:
        _cfg(tmp_path, num_generatoins=2)
    assert "num_generatoins" in str(err.value) and "'num_generations'" in str(err.value) and str(TRL) in str(err.value)


@needs_grpo
def test_grpo_bf16_default_runnable_on_cpu(tmp_path):
    kw = helpers.training_kwargs(tmp_path)
    kw.pop("use_cpu", None)
    kw.pop("no_cuda", None)
    import torch
    import trl

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: TRL's bf16 default may run")
    cfg = trl.GRPOConfig(**kw, num_generations=2)  # TRL >= 0.19 would default bf16 on and raise on this CPU
    assert cfg.bf16 is False


@needs_grpo
def test_grpo_stable_config_is_the_installed_class(tmp_path):
    import trl

    cfg = _cfg(tmp_path, cls=trlshim.GRPOConfig, max_prompt_length=6)
    assert isinstance(cfg, trl.GRPOConfig) and type(cfg).__module__ == "trlshim"
    back = pickle.loads(pickle.dumps(cfg))
    assert type(back) is trl.GRPOConfig  # checkpoints load without trlshim
    value = getattr(back, "max_prompt_length", None)
    if value is None:
        from trlshim.patches.grpo import config

        value = config.own_options(back).get("max_prompt_length")
    assert value == 6


@needs_grpo
def test_grpo_stable_config_translates_without_patch(tmp_path):
    trlshim.unpatch()
    try:
        with pytest.raises(TypeError, match="num_generatoins"):
            _cfg(tmp_path, cls=trlshim.GRPOConfig, num_generatoins=2)
        cfg = _cfg(tmp_path, cls=trlshim.GRPOConfig, max_prompt_length=6)
        assert cfg.num_generations == 2
    finally:
        trlshim.patch()


@needs_grpo
def test_grpo_top_k_none_means_no_filtering(tmp_path):
    if trl_in("<0.16"):  # no top_k field: TRL's own generation settings
        with pytest.raises(TypeError, match="top_k"):
            _cfg(tmp_path, top_k=None)
        return
    cfg = _cfg(tmp_path, top_k=None)
    assert cfg.top_k == (0 if trl_in(">=0.27") else None)  # 0.27+ spells "no top-k filtering" 0


@needs_grpo
def test_grpo_written_for_015_keeps_that_releases_objective(tmp_path, monkeypatch):
    from trlshim.patches.grpo import config

    monkeypatch.setenv("TRLSHIM_WRITTEN_FOR", "0.15.2")
    cfg = _cfg(tmp_path)
    assert (cfg.beta, cfg.temperature) == (0.04, 0.9)  # 0.19: beta 0.0; 0.18: temperature 1.0
    if "loss_type" in _fields(cfg):  # 0.15 averaged per sequence: what later releases call 'grpo'
        assert cfg.loss_type == "grpo"
    limit = cfg.max_prompt_length if "max_prompt_length" in _fields(cfg) else config.own_options(cfg)["max_prompt_length"]
    assert limit == 512  # 0.26-0.27: their unused field, 0.28+: carried; trlshim truncates to it from 0.26
