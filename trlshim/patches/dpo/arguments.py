"""DPOTrainer's arguments across releases (TRL 0.7 -> 1.16 style calls on TRL 0.8 -> 1.16).

- DPO options given to the trainer (``beta``, ``loss_type``, ``max_length``, ...: trainer kwargs up to
  0.12, removed in 0.13) go onto a *copy* of the config where the release has DPOConfig; on TRL < 0.9 the
  fields of trlshim's DPOConfig become trainer kwargs. Keyword arguments win over the config (as in 0.9-0.12).
- A plain ``TrainingArguments`` becomes the release's DPOConfig with the same values (0.9-0.12 raise
  AttributeError on ``model_init_kwargs``; later releases lack every DPO field on it).
- ``tokenizer=`` <-> ``processing_class=`` (renamed in 0.12, alias removed in 0.16).
- Positions: ``model``, ``ref_model``, then position 2 is ``beta`` in 0.7-0.12 and ``args`` from 0.13:
  bound by what the value is (a number: ``beta``; a TrainingArguments: ``args``), anything else, or
  more positions, is a TypeError (later positions differ between releases).
- A 0.8-0.12 style call (``max_length`` and ``max_prompt_length`` as trainer kwargs) keeps the truncation
  of those releases (see ``truncation.py``).
"""
from __future__ import annotations

import dataclasses
import numbers

from ... import report
from ...pipeline import Pipeline
from ...translate import check_spelling_conflicts, installed_label, rename, same_value, unplaceable
from . import config as dpo_config
from .options import DPO_OPTIONS

LEADING = ("model", "ref_model")


def installed_config_class():
    """The release's DPOConfig, or trlshim's legacy class on TRL < 0.9."""
    try:
        from trl.trainer.dpo_config import DPOConfig
    except ImportError:
        return dpo_config.legacy_config_class()
    return DPOConfig


def new_config(call):
    """The config the release would build itself when ``args`` is None (its own output dir)."""
    model = call.kwargs.get("model")
    pattern = call.fact("default_output_dir", "tmp_trainer")
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
    return call.config_cls(output_dir=pattern.format(model_name=str(name).split("/")[-1] or "model"))


def _is_training_arguments(value) -> bool:
    try:
        from transformers import TrainingArguments
    except ImportError:
        return False
    return isinstance(value, TrainingArguments)


@dataclasses.dataclass(frozen=True)
class DPOPipeline(Pipeline):
    """Position 2 of ``DPOTrainer`` is ``beta`` (0.7-0.12) or ``args`` (0.13+): bound by the value's kind."""

    def bind(self, params: tuple, args: tuple, kwargs: dict) -> dict:
        if len(args) > 3:
            raise TypeError(
                f"DPOTrainer() takes at most 3 positional arguments (model, ref_model, and beta or args); the "
                f"positions after that differ between TRL releases, so pass the rest by keyword ({installed_label()})"
            )
        bound = super().bind(params, args[:2], kwargs)
        if len(args) == 3:
            third = args[2]
            if isinstance(third, numbers.Real) and not isinstance(third, bool):
                name = "beta"  # DPOTrainer(model, ref_model, beta, ...) of TRL 0.7-0.12
            elif third is None or _is_training_arguments(third):
                name = "args"  # DPOTrainer(model, ref_model, args, ...) of TRL >= 0.13
            else:
                raise TypeError(
                    f"DPOTrainer(): the third positional argument ({type(third).__name__}) is neither beta (TRL "
                    f"0.7-0.12) nor args (TRL >= 0.13); pass it by keyword ({installed_label()})"
                )
            if name in bound:
                raise TypeError(f"DPOTrainer() got multiple values for argument {name!r}")
            bound[name] = third
        return bound


def to_config(args, config_cls):
    """A plain TrainingArguments (or another TA subclass) as ``config_cls`` with the same values."""
    accepted = {f.name for f in dataclasses.fields(config_cls) if f.init}
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in accepted
              and not (getattr(args, f.name) is None and defaults.get(f.name) is None)}  # unset: nothing to carry
    report.translated(f"DPOTrainer.args.{type(args).__name__}",
                      f"trlshim: DPOTrainer(args={type(args).__name__}) -> {config_cls.__name__} with the same values "
                      f"({installed_label()})")
    return config_cls(**values)


def _legacy_truncation(call, options: dict) -> None:
    """``max_length`` + ``max_prompt_length`` as trainer kwargs (TRL 0.7-0.12 style) on a release whose
    truncation differs: keep the old rule (``truncation.py``), not the release's per-part caps."""
    how = None if call.legacy else call.fact("legacy_truncation")
    length, prompt = options.get("max_length"), options.get("max_prompt_length")
    if how is None or length is None or prompt is None or "max_completion_length" in options:
        return
    if how == "completion_cap":  # TRL 0.12: per-part caps at tokenization; the nearest is a completion cap
        report.translated("DPOTrainer.legacy_truncation",
                          f"trlshim: DPOTrainer(max_length={length}, max_prompt_length={prompt}) -> also "
                          f"max_completion_length={length - prompt} (the TRL <= 0.11 completion cap; "
                          f"{installed_label()} cuts the prompt even when prompt + completion fit)")
        options["max_completion_length"] = length - prompt
        return
    report.translated("DPOTrainer.legacy_truncation",
                      f"trlshim: DPOTrainer(max_length={length}, max_prompt_length={prompt}) keeps its TRL <= 0.11 "
                      f"meaning (prompt cut first, then the completions to max_length - max_prompt_length) on "
                      f"{installed_label()}")
    options.pop("max_prompt_length")
    # TRL <= 0.28's default truncation_mode ("keep_end": the prompt loses its start); 0.29 flipped it
    options["_legacy_truncation"] = (length, prompt, options.get("truncation_mode", "keep_end") != "keep_start")


def place(call) -> tuple:
    """(trainer kwargs, DPO options) of the call for the installed release."""
    params = call.params
    check_spelling_conflicts(call.kwargs, "DPOTrainer()", set(params) | call.config_fields)
    trainer_kw, options = {}, {}
    for name, value in call.kwargs.items():
        if name in DPO_OPTIONS or (name not in params and name in call.config_fields):
            options[name] = value
            continue
        target = rename(name, params)
        if target is None:
            unplaceable(name, "DPOTrainer", set(params) | call.config_fields)
        if target != name:
            report.translated(f"DPOTrainer.{name}", f"trlshim: DPOTrainer({name}=...) -> {target}= ({installed_label()})")
        if target in trainer_kw and not same_value(trainer_kw[target], value):
            continue  # checked above: the same value under both spellings
        trainer_kw[target] = value
    return trainer_kw, options


def _legacy_fields_to_kwargs(cfg, params, options) -> None:
    """TRL < 0.9: fields set on trlshim's DPOConfig become trainer kwargs (kwargs win)."""
    owned = getattr(type(cfg), "_trlshim_owned", {})
    defaults = {n: d for n, _, d in dpo_config.legacy_fields()}
    for name in owned:
        value = getattr(cfg, name)
        if name in options or name not in params or same_value(value, defaults.get(name)):
            continue
        report.translated(f"DPOConfig->DPOTrainer.{name}",
                          f"trlshim: DPOConfig.{name} -> DPOTrainer({name}=...) ({installed_label()} has no DPOConfig)")
        options[name] = value


def translate(call) -> None:
    """Step: every release's DPOTrainer arguments, placed where the installed release takes them."""
    trainer_kw, options = place(call)
    call.kwargs = trainer_kw
    cfg = call.args
    owner = "DPOTrainer"
    if call.legacy:  # TRL < 0.9: every DPO option is a trainer kwarg
        if cfg is not None and getattr(type(cfg), "_trlshim_owned", None):
            _legacy_fields_to_kwargs(cfg, call.params, options)
        for name, value in options.items():
            if name == "loss_type":
                value = dpo_config.loss_type_value(value, owner)
            if name in dpo_config.MODEL_INIT_OPTIONS:
                value = dpo_config.translate_model_init_kwargs(value, f"{owner}.{name}")
            where, target = dpo_config.resolve(name, value, set(call.params), owner)
            if where == "native":
                call.kwargs[target] = value
        return
    if cfg is not None and not isinstance(cfg, call.config_cls):
        call.replace_config(to_config(cfg, call.config_cls))
    _legacy_truncation(call, options)
    legacy_rule = options.pop("_legacy_truncation", None)
    native, extra = dpo_config.translate(call.config_cls, options) if options else ({}, {})
    if "bf16" not in options:
        native.pop("bf16", None)  # a default is the constructor's decision (the config exists already)
    if legacy_rule is not None:
        extra["legacy_truncation"] = legacy_rule
        if "max_prompt_length" in call.config_fields:
            native["max_prompt_length"] = None  # trlshim cuts the prompt itself, with the old rule
    if not (native or extra):
        return
    cfg = call.writable_config()
    for name, value in native.items():
        if name != "max_prompt_length" or legacy_rule is None:
            report.translated(f"DPOTrainer.{name}", f"trlshim: DPOTrainer({name}=...) -> "
                              f"{call.config_cls.__name__}.{name} ({installed_label()})")
        setattr(cfg, name, value)
    for name, value in extra.items():
        dpo_config.set_extra(cfg, name, value)


def expects(init):
    from ...pipeline import parameters

    params = parameters(init)
    missing = [p for p in ("model", "ref_model", "args", "train_dataset") if p not in params]
    return f"DPOTrainer.__init__ lacks {missing}" if missing else None
