"""GRPOTrainer's arguments across releases (0.14 -> 1.16).

- ``tokenizer=`` -> ``processing_class=``: GRPO never had ``tokenizer`` (it arrived after the 0.12 rename),
  but scripts written against other trainers pass it; both spellings are accepted (this pipeline owns
  GRPOTrainer's one row, so the common ``processing_class`` row leaves GRPO out).
- Positional arguments up to ``processing_class`` (index 5), the positions every release agrees on; 1.8
  inserted ``quantization_config`` before ``peft_config``, so later ones must be keywords.
- An argument the installed GRPOTrainer lacks is a TypeError naming it, the release and the closest name.
- A plain ``TrainingArguments`` as ``args`` becomes the release's GRPOConfig with the same values (GRPO
  reads its own fields off ``args`` and would fail with AttributeError).
"""
from __future__ import annotations

import dataclasses

from ... import report
from ...pipeline import parameters
from ...translate import check_spelling_conflicts, closest, installed_label, rename
from .config import installed_config_class

LEADING = ("model", "reward_funcs", "args", "train_dataset", "eval_dataset", "processing_class")


def new_config(call):
    """The config TRL builds itself when ``args`` is None (``<model name>-GRPO``)."""
    model = call.kwargs.get("model")
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
    return call.config_cls(output_dir=f"{str(name).split('/')[-1] or 'model'}-GRPO")


def to_config(args, config_cls):
    accepted = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in accepted}
    report.translated(f"GRPOTrainer.args.{type(args).__name__}",
                      f"trlshim: GRPOTrainer(args={type(args).__name__}) -> {config_cls.__name__} with the same values "
                      f"({installed_label()})")
    return config_cls(**values)


def translate(call) -> None:
    """Step: every argument under the installed release's name; unknown names are a TypeError."""
    params = set(call.params)
    check_spelling_conflicts(call.kwargs, "GRPOTrainer()", params)
    out = {}
    for name, value in call.kwargs.items():
        target = name if name in params else rename(name, params)
        if target is None:
            raise TypeError(f"GRPOTrainer() got an unexpected keyword argument {name!r} ({installed_label()})"
                            f"{closest(name, params)}")
        if target != name:
            if target in call.kwargs:
                continue  # the same value under both names (checked above)
            report.translated(f"GRPOTrainer.{name}", f"trlshim: GRPOTrainer({name}=...) -> {target}= "
                              f"({installed_label()})")
        out[target] = value
    call.kwargs = out
    cfg = call.args
    if cfg is not None and not isinstance(cfg, call.config_cls):
        call.replace_config(to_config(cfg, call.config_cls))


def expects(init):
    params = parameters(init)
    missing = [p for p in ("model", "reward_funcs", "args", "train_dataset") if p not in params]
    return f"GRPOTrainer.__init__ lacks {missing}" if missing else None


__all__ = ["LEADING", "expects", "installed_config_class", "new_config", "translate"]
