"""``trlshim.SFTTrainer`` and ``trlshim.SFTConfig``: names that mean the same on every release.

``SFTConfig`` subclasses the installed release's config (so TRL's ``isinstance`` checks pass)
and accepts every release's field names plus trlshim's own options. ``SFTTrainer`` subclasses
the installed ``trl.SFTTrainer`` and translates its arguments itself, so it is version-proof
even with ``TRLSHIM_DISABLE=1``.
"""
from __future__ import annotations

import functools

from .patches import sft_config, sft_trainer


@functools.cache
def _config_subclass(base):
    cls = sft_config.build_config_class(base)
    cls.__doc__ = f"trlshim.SFTConfig: {base.__module__}.{base.__name__} accepting every TRL release's field names."
    return cls


def sft_config_class():
    base = sft_trainer.installed_config_class()
    if base is sft_config.legacy_config_class():
        return base
    return _config_subclass(base)


@functools.cache
def _trainer_subclass(base):
    def __init__(self, *args, **kwargs):
        sft_trainer.translate_call(super(cls, self).__init__, args, kwargs)

    cls = type("SFTTrainer", (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = "trlshim.SFTTrainer: the installed trl.SFTTrainer accepting every TRL release's arguments."
    return cls


def sft_trainer_class():
    from trl.trainer.sft_trainer import SFTTrainer

    return _trainer_subclass(SFTTrainer)
