"""``trlshim.SFTTrainer`` and ``trlshim.SFTConfig``: names that mean the same on every release.

``SFTConfig`` subclasses the installed release's config (so TRL's ``isinstance`` checks pass)
and accepts every release's field names plus trlshim's own options. ``SFTTrainer`` subclasses
the installed ``trl.SFTTrainer`` and runs the same SFT pipeline as the patched class, whether or
not ``trlshim.patch()`` ran (once: over a patched class the inner pipeline passes the call through).
"""
from __future__ import annotations

import functools
import warnings

from .hooks import PatchSkippedWarning
from .patches.sft import PIPELINE, arguments, config


@functools.cache
def _config_subclass(base):
    cls = config.build_config_class(base)
    cls.__doc__ = f"trlshim.SFTConfig: {base.__module__}.{base.__name__} accepting every TRL release's field names."
    return cls


def sft_config_class():
    base = arguments.installed_config_class()
    if base is config.legacy_config_class():
        return base
    return _config_subclass(base)


@functools.cache
def _trainer_subclass(base):
    why = PIPELINE.shape_problem(base.__init__)
    if why:
        warnings.warn(f"trlshim: trlshim.SFTTrainer passes arguments through unchanged: {why}", PatchSkippedWarning,
                      stacklevel=3)

    def __init__(self, *args, **kwargs):
        init = super(cls, self).__init__
        if why:
            return init(*args, **kwargs)
        return PIPELINE.run(init, self, args, kwargs)

    cls = type("SFTTrainer", (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = "trlshim.SFTTrainer: the installed trl.SFTTrainer accepting every TRL release's arguments."
    return cls


def sft_trainer_class():
    from trl.trainer.sft_trainer import SFTTrainer

    return _trainer_subclass(SFTTrainer)


# -- GRPO (TRL >= 0.14) ---------------------------------------------------------------------------------------------
GRPO_SINCE = "0.14.0"


def _require_grpo(name: str) -> None:
    """TRL < 0.14 has no GRPO: an ImportError naming the release that introduced it."""
    from .versions import trl_in

    if not trl_in(f">={GRPO_SINCE}"):
        from .translate import installed_label

        raise ImportError(f"trlshim.{name}: GRPO was introduced in TRL {GRPO_SINCE}; {installed_label()} has no "
                          f"{name} (pip install 'trl>={GRPO_SINCE}')")


@functools.cache
def _grpo_config_subclass(base):
    from .patches.grpo import config as grpo_config

    return grpo_config.build_config_class(base)


def grpo_config_class():
    _require_grpo("GRPOConfig")
    from .patches.grpo import config as grpo_config

    return _grpo_config_subclass(grpo_config.installed_config_class())


@functools.cache
def _grpo_trainer_subclass(base):
    from .patches.grpo import PIPELINE as GRPO_PIPELINE

    why = GRPO_PIPELINE.shape_problem(base.__init__)
    if why:
        warnings.warn(f"trlshim: trlshim.GRPOTrainer passes arguments through unchanged: {why}", PatchSkippedWarning,
                      stacklevel=3)

    def __init__(self, *args, **kwargs):
        init = super(cls, self).__init__
        if why:
            return init(*args, **kwargs)
        return GRPO_PIPELINE.run(init, self, args, kwargs)

    cls = type("GRPOTrainer", (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = "trlshim.GRPOTrainer: the installed trl.GRPOTrainer accepting every TRL release's arguments."
    return cls


def grpo_trainer_class():
    _require_grpo("GRPOTrainer")
    from trl.trainer.grpo_trainer import GRPOTrainer

    return _grpo_trainer_subclass(GRPOTrainer)


# -- DPO --------------------------------------------------------------------------------------------------------------
@functools.cache
def _dpo_config_subclass(base):
    from .patches.dpo import config as dpo_config

    cls = dpo_config.build_config_class(base)
    cls.__doc__ = f"trlshim.DPOConfig: {base.__module__}.{base.__name__} accepting every TRL release's field names."
    return cls


def dpo_config_class():
    from .patches.dpo import arguments as dpo_arguments
    from .patches.dpo import config as dpo_config

    base = dpo_arguments.installed_config_class()
    if base is dpo_config.legacy_config_class():
        return base
    return _dpo_config_subclass(base)


@functools.cache
def _dpo_trainer_subclass(base):
    from .patches.dpo import PIPELINE as DPO_PIPELINE

    why = DPO_PIPELINE.shape_problem(base.__init__)
    if why:
        warnings.warn(f"trlshim: trlshim.DPOTrainer passes arguments through unchanged: {why}", PatchSkippedWarning,
                      stacklevel=3)

    def __init__(self, *args, **kwargs):
        init = super(cls, self).__init__
        if why:
            return init(*args, **kwargs)
        return DPO_PIPELINE.run(init, self, args, kwargs)

    cls = type("DPOTrainer", (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = "trlshim.DPOTrainer: the installed trl.DPOTrainer accepting every TRL release's arguments."
    return cls


def dpo_trainer_class():
    from trl.trainer.dpo_trainer import DPOTrainer

    return _dpo_trainer_subclass(DPOTrainer)


# -- Reward and ORPO (patches/reward, patches/orpo) ------------------------------------------------------------------


def reward_config_class():
    """trlshim.RewardConfig: the installed RewardConfig, accepting every release's field spellings."""
    from .patches import reward
    from .patches.common.preference import stable_config

    return stable_config(reward.config_class(), reward.REMOVED)


def reward_trainer_class():
    """trlshim.RewardTrainer: the installed RewardTrainer running the Reward pipeline."""
    from .patches import reward
    from .patches.common.preference import stable_trainer

    return stable_trainer(reward.trainer_class(), reward.PIPELINE)


def orpo_config_class():
    """trlshim.ORPOConfig: the installed ORPOConfig (trl.experimental.orpo from 0.26), every release's fields."""
    from .patches import orpo
    from .patches.common.preference import stable_config

    return stable_config(orpo.config_class(), orpo.REMOVED)


def orpo_trainer_class():
    """trlshim.ORPOTrainer: the installed ORPOTrainer (trl.experimental.orpo from 0.26) running the ORPO pipeline."""
    from .patches import orpo
    from .patches.common.preference import stable_trainer

    return stable_trainer(orpo.trainer_class(), orpo.pipeline())


def kto_config_class():
    """trlshim.KTOConfig: the installed KTOConfig (trl.experimental.kto in 0.26-1.7), every release's fields."""
    from .patches import kto
    from .patches.common.preference import stable_config

    return stable_config(kto.config_class(), kto.REMOVED)


def kto_trainer_class():
    """trlshim.KTOTrainer: the installed KTOTrainer running the KTO pipeline."""
    from .patches import kto
    from .patches.common.preference import stable_trainer

    return stable_trainer(kto.trainer_class(), kto.pipeline())


def cpo_config_class():
    """trlshim.CPOConfig: the installed CPOConfig (trl.experimental.cpo from 0.26), every release's fields."""
    from .patches import cpo
    from .patches.common.preference import stable_config

    return stable_config(cpo.config_class(), cpo.REMOVED)


def cpo_trainer_class():
    """trlshim.CPOTrainer: the installed CPOTrainer (trl.experimental.cpo from 0.26) running the CPO pipeline."""
    from .patches import cpo
    from .patches.common.preference import stable_trainer

    return stable_trainer(cpo.trainer_class(), cpo.pipeline())
