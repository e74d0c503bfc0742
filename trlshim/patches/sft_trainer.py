"""SFTTrainer's arguments across releases (TRL 0.7 → 1.16 style calls on TRL 0.8 → 1.16).

- ``tokenizer=`` <-> ``processing_class=`` (renamed in 0.12, alias removed in 0.16).
- SFT options given to the trainer (``max_seq_length``, ``packing``, ``dataset_text_field``, ...)
  go onto a *copy* of the config where the release has SFTConfig (the trainer kwargs were
  deprecated in 0.9 and removed in 0.13); on TRL < 0.9, fields of trlshim's SFTConfig go to the
  trainer kwargs instead. Keyword arguments win over the config, as they did in 0.9-0.12.
- A plain ``TrainingArguments`` becomes the release's SFTConfig with the same values (TRL
  0.15-0.27 raise KeyError on transformers 5 when they convert it themselves).
- Positional arguments are accepted up to ``processing_class``/``tokenizer`` (index 5), the
  positions every release agrees on; later positions differ between releases, so they must
  be passed by keyword.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import weakref

from .. import report
from ..registry import row
from ..translate import (
    SFT_OPTIONS,
    check_spelling_conflicts,
    installed_label,
    packing_strategy_value,
    rename,
    same_value,
    unplaceable,
)
from ..versions import trl_in
from . import sft_config

LEADING = ("model", "args", "data_collator", "train_dataset", "eval_dataset", "processing_class")

# Defaults a later release introduced that scripts written for it rely on: (TRL range, option,
# value, condition on the train dataset's columns). Filled only where the release would
# otherwise refuse the call, so no call that worked before changes meaning.
LATER_DEFAULTS = (("<0.12", "dataset_text_field", "text"),)

# Where the release puts its output when no args are given (we mirror it when we must build one).
DEFAULT_OUTPUT_DIR = ((">=0.15", "{model_name}-SFT"), ("<0.15", "tmp_trainer"))


_SIGNATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parameters(func) -> tuple:
    """Parameter names of ``func`` (bound: without ``self``), cached per underlying function:
    every trainer build binds through several wrapper layers."""
    target = getattr(func, "__func__", func)
    try:
        names = _SIGNATURES[target]
    except (KeyError, TypeError):
        names = tuple(inspect.signature(target).parameters)
        try:
            _SIGNATURES[target] = names
        except TypeError:
            pass
    return names[1:] if target is not func and names else names


def installed_config_class():
    """The release's SFTConfig, or trlshim's legacy class on TRL < 0.9."""
    try:
        from trl.trainer.sft_config import SFTConfig
    except ImportError:
        return sft_config.legacy_config_class()
    return SFTConfig


def _default_output_dir(model) -> str:
    for spec, pattern in DEFAULT_OUTPUT_DIR:
        if trl_in(spec):
            name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
            return pattern.format(model_name=str(name).split("/")[-1] or "model")
    return "tmp_trainer"


def to_config(args, config_cls):
    """A plain TrainingArguments (or another TA subclass) as ``config_cls`` with the same values."""
    accepted = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in accepted}
    report.translated(
        f"args.{type(args).__name__}",
        f"trlshim: SFTTrainer(args={type(args).__name__}) -> {config_cls.__name__} with the same values "
        f"({installed_label()})",
    )
    return config_cls(**values)


def bind(wrapped, args, kwargs) -> dict:
    """Name every argument by signature; positions past ``processing_class`` are refused."""
    params = parameters(wrapped)
    if len(args) > len(LEADING):
        raise TypeError(
            f"SFTTrainer() takes at most {len(LEADING)} positional arguments ({', '.join(LEADING)}); the "
            f"positions after that differ between TRL releases, so pass the rest by keyword ({installed_label()})"
        )
    bound = dict(kwargs)
    for name, value in zip(LEADING, args):
        target = rename(name, params) or name
        if target in bound or name in bound:
            raise TypeError(f"SFTTrainer() got multiple values for argument {name!r}")
        bound[target] = value
    return bound


def place(params, config_cls, legacy, kwargs):
    """Split ``kwargs`` into (trainer kwargs, config fields) for the installed release.

    SFT options go to the config wherever the release has one (they were deprecated on the
    trainer in 0.9 and removed in 0.13); on TRL < 0.9 everything stays on the trainer.
    """
    check_spelling_conflicts(kwargs, "SFTTrainer()")
    fields = set() if legacy else {f.name for f in dataclasses.fields(config_cls) if f.init}
    trainer_kw, config_kw = {}, {}
    for name, value in kwargs.items():
        sft_option = rename(name, SFT_OPTIONS) is not None or name not in params
        on_config = rename(name, fields) if sft_option else None
        target = None if on_config else rename(name, params)
        if on_config:
            report.translated(
                f"SFTTrainer.{name}",
                f"trlshim: SFTTrainer({name}=...) -> {config_cls.__name__}.{on_config} ({installed_label()})",
            )
            config_kw[on_config] = value
        elif target is not None:
            if target != name:
                report.translated(
                    f"SFTTrainer.{name}", f"trlshim: SFTTrainer({name}=...) -> {target}= ({installed_label()})"
                )
            trainer_kw[target] = value
        else:
            unplaceable(name, "SFTTrainer", set(params) | fields)
    return trainer_kw, config_kw


def _legacy_fields_to_kwargs(args, params, trainer_kw) -> None:
    """TRL < 0.9: fields set on trlshim's SFTConfig become trainer kwargs (kwargs win)."""
    for f in dataclasses.fields(type(args)):
        if not getattr(type(args), "_trlshim_owned", {}).get(f.name) or f.name in sft_config.SHIM_FIELDS:
            continue
        if f.name in sft_config.EMULATED:
            continue
        value = getattr(args, f.name)
        if same_value(value, f.default):
            continue
        target = rename(f.name, params)
        if target is None:
            raise TypeError(f"SFTConfig.{f.name} has no place in {installed_label()}'s SFTTrainer")
        if target not in trainer_kw:  # kwargs win over the config, as in TRL 0.9-0.12
            report.translated(
                f"SFTConfig->SFTTrainer.{f.name}",
                f"trlshim: SFTConfig.{f.name} -> SFTTrainer({target}=...) ({installed_label()} has no SFTConfig)",
            )
            trainer_kw[target] = value


def translate_call(wrapped, args, kwargs):
    """Call ``wrapped`` (a bound SFTTrainer.__init__) with the arguments translated."""
    params = parameters(wrapped)
    config_cls = installed_config_class()
    legacy = config_cls is sft_config.legacy_config_class()
    trainer_kw, config_kw = place(params, config_cls, legacy, bind(wrapped, args, kwargs))
    cfg = trainer_kw.get("args")
    if legacy:
        if isinstance(cfg, config_cls):
            _legacy_fields_to_kwargs(cfg, params, trainer_kw)
    else:
        if cfg is not None and not isinstance(cfg, config_cls):
            cfg = to_config(cfg, config_cls)
        if config_kw:
            if "packing_strategy" in config_kw:
                config_kw["packing_strategy"] = packing_strategy_value(config_kw["packing_strategy"])
            if cfg is None:
                cfg = new_config(config_cls, trainer_kw)
            else:
                cfg = copy.copy(cfg)  # never mutate a config the caller may share
            for name, value in config_kw.items():
                setattr(cfg, name, value)
        if cfg is not None:
            trainer_kw["args"] = cfg
    _later_defaults(trainer_kw, config_cls, legacy)
    return wrapped(**trainer_kw)


def _columns(dataset):
    names = getattr(dataset, "column_names", None)
    return set(names) if isinstance(names, (list, tuple)) else set()


def _later_defaults(trainer_kw: dict, config_cls, legacy: bool) -> None:
    """Fill LATER_DEFAULTS (e.g. ``dataset_text_field="text"``, TRL 0.12's default) where unset."""
    cfg = trainer_kw.get("args")
    for spec, name, value in LATER_DEFAULTS:
        if not trl_in(spec):
            continue
        current = trainer_kw.get(name, getattr(cfg, name, None))
        if current is not None or trainer_kw.get("formatting_func") is not None:
            continue
        if value not in _columns(trainer_kw.get("train_dataset")):
            continue
        report.decided(
            f"default.{name}",
            f"trlshim: {name}={value!r} (the default since TRL 0.12; {installed_label()} has none and would refuse)",
        )
        if legacy:
            trainer_kw[name] = value
        else:
            cfg = copy.copy(cfg) if cfg is not None else new_config(config_cls, trainer_kw)
            setattr(cfg, name, value)
            trainer_kw["args"] = cfg


def new_config(config_cls, trainer_kw):
    """The config the release would build itself when ``args`` is None (TRL's own output dir)."""
    return config_cls(output_dir=_default_output_dir(trainer_kw.get("model")))


def _arguments(wrapped, instance, args, kwargs):
    return translate_call(wrapped, args, kwargs)


def _expects(init):
    params = parameters(init)
    missing = [p for p in ("model", "args", "train_dataset") if p not in params]
    return f"SFTTrainer.__init__ lacks {missing}" if missing else None


row(
    "sft_trainer.arguments", "trl.trainer.sft_trainer", "SFTTrainer.__init__", ">=0.7",
    "accept every release's SFTTrainer arguments (tokenizer/processing_class, SFT options on trainer or config)",
    wrapper=_arguments, expects=_expects,
)
