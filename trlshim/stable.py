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
