"""What every wing's config handling shares (SFT, DPO, GRPO, ORPO, CPO, KTO, Reward).

- ``bf16_default``: TRL >= 0.19 defaults ``bf16`` to True in its configs, which raises where bf16 is
  unsupported (CPU without ``use_cpu``); when the user set neither ``bf16`` nor ``fp16`` there, trlshim
  passes ``bf16=False`` (logged once). ``bf16=None`` is unset (what ``HfArgumentParser`` passes).
- ``carried_options`` / ``carry_option`` / ``without_unset_carried``: options trlshim honours itself where a release
  removed them (DPO's and GRPO's prompt limits): the fields a FIELDS row added to the release's config - so
  ``dataclasses.replace``, ``to_dict``, deepcopy and pickle carry them - else a plain attribute.
- ``pickled_as_base`` / ``shallow_copy`` / ``deep_copy``: trlshim's own config classes pickle as the nearest
  class that is not trlshim's (a checkpoint's ``training_args.bin`` loads without trlshim), while copies keep
  trlshim's class.
"""
from __future__ import annotations

import copy
import copyreg
import dataclasses

from ... import report
from ...translate import injected_fields, installed_label


def bf16_unsupported(kwargs) -> bool:
    if kwargs.get("use_cpu"):
        return False
    try:
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
    except ImportError:
        return False
    return not is_torch_bf16_gpu_available() and not is_torch_xla_available()


def bf16_default(cls, kwargs: dict) -> dict:
    """``kwargs`` with ``bf16=False`` where ``cls`` defaults bf16 on and this machine cannot run it."""
    field = getattr(cls, "__dataclass_fields__", {}).get("bf16")
    if field is not None and field.default is not False and kwargs.get("bf16") is None and not kwargs.get("fp16"):
        if bf16_unsupported(kwargs):
            report.decided("default.bf16", f"trlshim: bf16=False ({installed_label()} defaults bf16 to True, which "
                           "this machine cannot run; pass bf16= to choose)")
            return dict(kwargs, bf16=False)
    return kwargs


def pickled_as_base(self, protocol):
    """``__reduce_ex__``: pickled as the nearest class that is not trlshim's (TRL's config, or
    TrainingArguments on releases without one) with the same attributes (trlshim's own options are then plain
    attributes; with trlshim, the trainer reads them back)."""
    base = next(c for c in type(self).__mro__ if c.__module__ != "trlshim" and dataclasses.is_dataclass(c))
    # copyreg._reconstructor is what pickle itself uses for protocols < 2 (torch.save writes protocol 2,
    # where __newobj__ must name the object's own class)
    return copyreg._reconstructor, (base, object, None), dict(self.__dict__)


def shallow_copy(self):
    """``__copy__``: copies keep trlshim's class (pickling alone goes to the base class)."""
    new = object.__new__(type(self))
    new.__dict__.update(self.__dict__)
    return new


def deep_copy(self, memo):
    """``__deepcopy__``, as ``shallow_copy``."""
    new = object.__new__(type(self))
    memo[id(self)] = new
    new.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return new


def _added(cls) -> frozenset:
    return injected_fields(cls)


def carried_options(config, attribute: str) -> dict:
    """The options trlshim carries on ``config``: its added fields that are set, plus the plain ``attribute``
    (a dict) on releases without such fields."""
    if config is None:
        return {}
    out = dict(getattr(config, attribute, None) or {})
    for name in _added(type(config)):
        value = getattr(config, name, None)
        if value is not None:
            out[name] = value
    return out


def carry_option(config, attribute: str, name: str, value) -> None:
    if name in _added(type(config)):
        setattr(config, name, value)
    else:
        setattr(config, attribute, dict(getattr(config, attribute, None) or {}, **{name: value}))


def without_unset_carried(cls, kwargs: dict) -> dict:
    """``kwargs`` without the added fields a copy passes at their default (None: not set by the user)."""
    added = _added(cls)
    return {k: v for k, v in kwargs.items() if not (k in added and v is None)}
