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

import dataclasses

from ... import report
from ...pipeline import parameters
from ...translate import (
    SFT_OPTIONS,
    check_spelling_conflicts,
    installed_label,
    packing_strategy_value,
    rename,
    same_value,
    unplaceable,
)
from . import config as sft_config

# The positions every release agrees on; later positions must be keywords.
LEADING = ("model", "args", "data_collator", "train_dataset", "eval_dataset", "processing_class")


def installed_config_class():
    """The release's SFTConfig, or trlshim's legacy class on TRL < 0.9."""
    try:
        from trl.trainer.sft_config import SFTConfig
    except ImportError:
        return sft_config.legacy_config_class()
    return SFTConfig


def new_config(call):
    """The config the release would build itself when ``args`` is None (TRL's own output dir)."""
    model = call.kwargs.get("model")
    pattern = call.fact("default_output_dir", "tmp_trainer")
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
    return call.config_cls(output_dir=pattern.format(model_name=str(name).split("/")[-1] or "model"))


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


def place(call):
    """Split the call's keyword arguments into (trainer kwargs, config fields) for the installed release.

    SFT options go to the config wherever the release has one (they were deprecated on the
    trainer in 0.9 and removed in 0.13); on TRL < 0.9 everything stays on the trainer.
    """
    params, fields = call.params, call.config_fields
    check_spelling_conflicts(call.kwargs, "SFTTrainer()", set(params) | fields)
    trainer_kw, config_kw = {}, {}
    for name, value in call.kwargs.items():
        sft_option = rename(name, SFT_OPTIONS) is not None or name not in params
        on_config = rename(name, fields) if sft_option else None
        target = None if on_config else rename(name, params)
        if on_config and value is None and config_kw.get(on_config) is not None:
            continue  # another spelling of this option carried the value
        if on_config:
            report.translated(
                f"SFTTrainer.{name}",
                f"trlshim: SFTTrainer({name}=...) -> {call.config_cls.__name__}.{on_config} ({installed_label()})",
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
    """TRL < 0.9: fields set on trlshim's SFTConfig become trainer kwargs (kwargs win). Also read off a
    TrainingArguments that carries them as plain attributes (trlshim's config, pickled: a checkpoint's
    ``training_args.bin`` loads as the release's own class, so it loads without trlshim too)."""
    owned = getattr(type(args), "_trlshim_owned", {})
    native = getattr(type(args), "__dataclass_fields__", {})
    for name, _, default in sft_config.LEGACY_FIELDS:
        if not (owned.get(name) or (name in vars(args) and name not in native)):
            continue
        value = getattr(args, name)
        if same_value(value, default):
            continue
        target = rename(name, params)
        if target is None:
            raise TypeError(f"SFTConfig.{name} has no place in {installed_label()}'s SFTTrainer")
        if target not in trainer_kw:  # kwargs win over the config, as in TRL 0.9-0.12
            report.translated(
                f"SFTConfig->SFTTrainer.{name}",
                f"trlshim: SFTConfig.{name} -> SFTTrainer({target}=...) ({installed_label()} has no SFTConfig)",
            )
            trainer_kw[target] = value


def _late_alias_edits(call) -> None:
    """Releases with both spellings as fields (0.16-0.19: ``max_seq_length`` deprecated beside ``max_length``)
    read one of them, set from the other only at construction. A spelling edited after construction
    (``cfg.max_seq_length = 8``) is carried to the one the release reads; both edited differently is an error."""
    cfg = call.args
    before = getattr(cfg, "_trlshim_at_init", None) if cfg is not None else None
    if not before:
        return
    for group, values in before.items():
        edited = {n: getattr(cfg, n) for n, v in zip(group, values) if not same_value(getattr(cfg, n), v)}
        if not edited:
            continue
        if len(edited) > 1 and len({repr(v) for v in edited.values()}) > 1:
            raise TypeError(f"SFTConfig: {' and '.join(edited)} were both changed after construction, to different "
                            f"values {list(edited.values())}; they are one option ({installed_label()}): set one")
        name, value = next(iter(edited.items()))
        for other in group:
            if other != name and not same_value(getattr(cfg, other), value):
                report.decided(f"late_edit.{name}", f"trlshim: SFTConfig.{name} changed after construction: "
                               f"{other}={value!r} too, the spelling {installed_label()} reads")
                setattr(call.writable_config(), other, value)


def translate(call) -> None:
    """Step: every release's SFTTrainer arguments, placed where the installed release takes them."""
    _late_alias_edits(call)
    trainer_kw, config_kw = place(call)
    call.kwargs = trainer_kw
    cfg = call.args
    if call.legacy:
        if cfg is not None:
            _legacy_fields_to_kwargs(cfg, call.params, call.kwargs)
            sft_config.placed(cfg)
        return
    if cfg is not None and not isinstance(cfg, call.config_cls):
        call.replace_config(to_config(cfg, call.config_cls))
    if config_kw:
        if "packing_strategy" in config_kw:
            config_kw["packing_strategy"] = packing_strategy_value(config_kw["packing_strategy"])
        cfg = call.writable_config()
        for name, value in config_kw.items():
            setattr(cfg, name, value)


def _columns(dataset):
    names = getattr(dataset, "column_names", None)
    return set(names) if isinstance(names, (list, tuple)) else set()


def text_field_default(call) -> None:
    """Step: ``dataset_text_field="text"`` (TRL 0.12's default) where the release has none and would
    refuse the call; filled only when the dataset has that column and no formatting_func is given."""
    if call.get("dataset_text_field") is not None or call.kwargs.get("formatting_func") is not None:
        return
    if "text" not in _columns(call.kwargs.get("train_dataset")):
        return
    report.decided(
        "default.dataset_text_field",
        f"trlshim: dataset_text_field='text' (the default since TRL 0.12; {installed_label()} has none and would refuse)",
    )
    call.set("dataset_text_field", "text")


def expects(init):
    params = parameters(init)
    missing = [p for p in ("model", "args", "train_dataset") if p not in params]
    return f"SFTTrainer.__init__ lacks {missing}" if missing else None
