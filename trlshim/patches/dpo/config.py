"""DPOConfig across releases: every release's field names, removed fields, changed defaults, and the
class itself where TRL lacks it.

- TRL >= 0.9: ``DPOConfig.__init__`` is wrapped so every release's field names are accepted:
  ``max_target_length`` -> ``max_completion_length`` (0.14), ``loss_type`` string <-> list (0.20),
  ``rpo_alpha`` -> ``loss_type=[..., "sft"], loss_weights=[1, alpha]`` (0.29), the fields removed in 0.29
  (at values that change nothing: dropped with a report; ``max_prompt_length``/``max_completion_length``:
  kept by trlshim and honoured by ``patches/dpo/truncation.py``; anything else: a TypeError with advice).
  transformers' own renamed fields go through ``common.training_args``; ``model_init_kwargs`` keys
  through ``common.model_init_kwargs``.
- TRL >= 0.19 defaults ``bf16`` to True, which raises where bf16 is unsupported (CPU): when the user set
  neither ``bf16`` nor ``fp16`` there, trlshim passes ``bf16=False`` (as for SFTConfig).
- TRL < 0.9 has no DPOConfig: trlshim's ``TrainingArguments`` subclass with the DPO options of the
  installed ``DPOTrainer`` is injected as ``trl.DPOConfig`` / ``trl.trainer.DPOConfig``; the DPO pipeline
  moves its fields onto the trainer's keyword arguments.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

from ... import report
from ...pipeline import lookup
from ...registry import FIELDS, INJECT, FieldSpec, row
from ...translate import check_spelling_conflicts, init_fields, installed_label, same_value, unplaceable
from ..common.config_classes import (
    bf16_default,
    carried_options,
    carry_option,
    deep_copy,
    pickled_as_base,
    shallow_copy,
    without_unset_carried,
)
from ..common.model_init_kwargs import translate_model_init_kwargs
from ..common.training_args import translate_training_arguments
from ..common.written_for import restore_defaults
from .facts import FACTS
from .options import ADVICE, DPO_OPTIONS, DROPPED_AT, EMULATED, LEGACY_DEFAULTS, RENAMED

MODEL_INIT_OPTIONS = ("model_init_kwargs", "ref_model_init_kwargs")


def extras(config) -> dict:
    """Options trlshim honours itself that ``config`` carries (set by the constructor or the pipeline): real
    dataclass fields where the ``emulated_fields`` row added them, else a plain attribute."""
    return carried_options(config, "_trlshim_extra")


def set_extra(config, name: str, value) -> None:
    carry_option(config, "_trlshim_extra", name, value)



def loss_type_value(value, owner: str):
    """``loss_type`` in the installed release's type: a list from 0.20 (a string is wrapped by TRL itself),
    a string before; a list of several losses cannot be expressed before 0.20."""
    if lookup(FACTS, "loss_type_list", False) or not isinstance(value, (list, tuple)):
        return value
    if len(value) == 1:
        report.translated(f"{owner}.loss_type_list", f"trlshim: {owner}(loss_type={list(value)!r}) -> "
                          f"loss_type={value[0]!r} ({installed_label()} takes one loss type, a string)")
        return value[0]
    raise TypeError(f"{owner}(): loss_type={list(value)!r} combines several losses, which {installed_label()} "
                    "cannot do (TRL >= 0.20 can); pass one loss type")


def _rpo_alpha(kwargs: dict, accepted, owner: str) -> dict:
    """``rpo_alpha`` (removed in 0.29) as the losses TRL >= 0.20 combines: DPO + alpha * NLL ("sft")."""
    alpha = kwargs.get("rpo_alpha")
    if alpha is None or "rpo_alpha" in accepted or "loss_weights" not in accepted:
        return kwargs
    if kwargs.get("loss_weights") is not None:
        raise TypeError(f"{owner}(): rpo_alpha together with loss_weights has no place in {installed_label()}: "
                        f"use {ADVICE['rpo_alpha']}")
    losses = kwargs.get("loss_type", "sigmoid")
    losses = list(losses) if isinstance(losses, (list, tuple)) else [losses]
    report.translated(f"{owner}.rpo_alpha", f"trlshim: {owner}(rpo_alpha={alpha}) -> loss_type={losses + ['sft']}, "
                      f"loss_weights={[1.0] * len(losses) + [alpha]} ({installed_label()} removed rpo_alpha)")
    out = {k: v for k, v in kwargs.items() if k != "rpo_alpha"}
    return dict(out, loss_type=losses + ["sft"], loss_weights=[1.0] * len(losses) + [float(alpha)])


def resolve(name: str, value, accepted, owner: str):
    """Where one DPO option goes in the installed release: ``("native", spelling)``, ``("extra", name)``
    (honoured by trlshim), ``("drop", None)`` (changes nothing there); else a TypeError naming it."""
    if name in accepted:
        return "native", name
    renamed = RENAMED.get(name)
    if renamed in accepted:
        report.translated(f"{owner}.{name}", f"trlshim: {owner}({name}=...) -> {renamed}= ({installed_label()})")
        return "native", renamed
    if any(same_value(value, v) for v in DROPPED_AT.get(name, ())):
        report.translated(f"{owner}.{name}={value!r}", f"trlshim: dropped {owner}({name}={value!r}): "
                          f"{installed_label()} no longer has it, and this value changes nothing there")
        return "drop", None
    emulated = RENAMED.get(name, name)
    if emulated in EMULATED and lookup(FACTS, "tokenized_columns") is not None:
        report.translated(f"{owner}.{name}", f"trlshim: {owner}({name}={value!r}) kept by trlshim and applied "
                          f"with its pre-0.29 meaning ({installed_label()} removed it)")
        return "extra", emulated
    if name in DPO_OPTIONS or name in ADVICE:
        advice = ADVICE.get(name, "remove it")
        raise TypeError(f"{owner}(): {name}={value!r} has no place in {installed_label()} and trlshim cannot give "
                        f"it its meaning there: {advice}")
    unplaceable(name, owner, accepted)
    return "drop", None


def translate(cls, kwargs: dict) -> tuple:
    """``(native kwargs for cls, extras trlshim honours)`` for a DPOConfig construction."""
    accepted = init_fields(cls)
    owner = cls.__name__
    kwargs = without_unset_carried(cls, kwargs)  # a copy's unset emulated field
    check_spelling_conflicts(kwargs, f"{owner}()", accepted)
    kwargs = restore_defaults("DPOConfig", cls, kwargs)  # written_for: that release's defaults where unset
    kwargs = translate_training_arguments(kwargs, owner, accepted)
    kwargs = _rpo_alpha(kwargs, accepted, owner)
    native, extra = {}, {}
    for name, value in kwargs.items():
        if name in MODEL_INIT_OPTIONS:
            value = translate_model_init_kwargs(value, f"{owner}.{name}")
        if name == "loss_type":
            value = loss_type_value(value, owner)
        where, target = resolve(name, value, accepted, owner)
        if where == "native":
            native[target] = value
        elif where == "extra":
            extra[target] = value
    return bf16_default(cls, native), extra


def _init_wrapper(wrapped, instance, args, kwargs):
    cls = type(instance) if instance is not None else None
    if cls is None or not dataclasses.is_dataclass(cls):
        return wrapped(*args, **kwargs)
    native, extra = translate(cls, kwargs)
    result = wrapped(*args, **native)
    for name, value in extra.items():
        set_extra(instance, name, value)
    return result


def translating_init(init):
    """``__init__`` of trlshim's DPOConfig classes: every release's field names (see ``translate``)."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        native, extra = translate(type(self), kwargs)
        init(self, *args, **native)
        for name, value in extra.items():
            set_extra(self, name, value)

    return __init__


def build_config_class(base, fields=()):
    """A DPOConfig: ``base`` (TRL's DPOConfig, or TrainingArguments before 0.9) plus ``fields``, whose
    constructor accepts every release's spellings; pickled as ``base`` (loads without trlshim)."""
    have = set(getattr(base, "__dataclass_fields__", {}))
    specs = [(n, t, dataclasses.field(default=d)) for n, t, d in fields if n not in have]
    cls = dataclasses.make_dataclass("DPOConfig", specs, bases=(base,))
    cls.__module__ = "trlshim"
    cls._trlshim_owned = {n: True for n, _, _ in specs}
    cls.__init__ = translating_init(cls.__init__)
    cls.__reduce_ex__ = pickled_as_base
    cls.__copy__ = shallow_copy
    cls.__deepcopy__ = deep_copy
    return cls


def legacy_fields() -> tuple:
    """(name, type, default) of the DPO options TRL < 0.9's DPOTrainer takes as kwargs (``LEGACY_DEFAULTS``)."""
    return tuple((n, Optional[Any], d) for n, d in LEGACY_DEFAULTS)


@functools.cache
def legacy_config_class():
    """DPOConfig for TRL < 0.9: TrainingArguments plus the installed DPOTrainer's DPO options."""
    from transformers.training_args import TrainingArguments

    cls = build_config_class(TrainingArguments, legacy_fields())
    cls.__doc__ = "trlshim's DPOConfig for TRL < 0.9 (TrainingArguments + the DPO options of DPOTrainer)."
    return cls


def _expects_init(init) -> Optional[str]:
    return None if callable(init) else "DPOConfig.__init__ is not callable"


row(
    "dpo_config.fields", "trl.trainer.dpo_config", "DPOConfig.__init__", ">=0.9",
    "accept every release's DPOConfig field names (0.29 removals honoured or refused clearly); keep bf16 runnable",
    wrapper=_init_wrapper, expects=_expects_init,
)
row(
    "dpo_config.emulated_fields", "trl.trainer.dpo_config", "DPOConfig", ">=0.29",
    "max_prompt_length/max_completion_length (removed in 0.29, emulated) as real fields: they survive "
    "dataclasses.replace, to_dict, deepcopy, pickle",
    kind=FIELDS, factory=lambda: FieldSpec(fields=tuple((n, Optional[int], None) for n in EMULATED)),
)
for _module in ("trl", "trl.trainer"):
    row(
        f"dpo_config.legacy[{_module}]", _module, "DPOConfig", "<0.9",
        "TRL < 0.9 has no DPOConfig: provide one (TrainingArguments + DPO options)",
        kind=INJECT, factory=legacy_config_class,
    )
