"""transformers' ``TrainingArguments`` fields across releases 4.36 -> 5.x: renamed, moved and removed.

Every TRL config (SFTConfig, DPOConfig, GRPOConfig, ...) inherits these fields, so a script written for one
transformers release meets them through every config class. One table (``CHANGES``) says, per field, the
transformers release that stopped accepting the old spelling, what replaced it, and how a value is carried
over with its meaning (``warmup_ratio=0.1`` -> ``warmup_steps=0.1``: transformers >= 5.x reads a float
below 1 as a ratio). A field removed with no equivalent is a TypeError naming the field, the installed
transformers and what to do instead. Evidence for each row: ``docs/training-args-drift.md``.

``translate_training_arguments(kwargs, owner, accepted)`` is the one entry point; every config wrapper
(SFT here, the other trainers' wings) calls it with the field names the installed class takes. It works in
both directions: an old spelling on a new transformers, and a new spelling on an old one (``eval_strategy``
on 4.40) where the old release can express it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ... import report
from ...registry import row
from ...translate import same_value
from ...versions import installed, release


class Unplaceable(Exception):
    """Raised by a conversion for a value the installed transformers cannot express (the message: what to do)."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One field's drift. ``old`` is the earlier spelling, ``new`` the field that carries its meaning later
    (None: removed with no equivalent). ``since``: the first transformers release without ``old``; ``added``:
    the first with ``new`` in this meaning. ``forward(value, kwargs)`` gives the new kwargs (default
    ``{new: value}``; ``{}``: the value did nothing, dropped with a report) or raises ``Unplaceable``;
    ``backward(value, kwargs)`` gives the old kwargs for the new spelling on a release before ``added``
    (None: the value means the same there; raises ``Unplaceable`` when the old release cannot express it)."""

    old: str
    new: Optional[str]
    since: str
    added: Optional[str] = None
    advice: str = ""
    forward: Optional[Callable[[object, dict], dict]] = None
    backward: Optional[Callable[[object, dict], Optional[dict]]] = None
    unset: tuple = ()  # values of the target field that mean "not given" (its default): no conflict
    old_unset: tuple = (None,)  # the same for ``old`` (the target of ``backward``)
    # transformers releases that have both fields but resolve a call giving both in a way other releases do
    # not (old wins / new wins / another unit): both given with different values is a TypeError there too
    ambiguous: str = ""


def transformers_label() -> str:
    v = installed("transformers")
    return f"transformers {v}" if v is not None else "the installed transformers"


def _installed_before(version: Optional[str]) -> bool:
    v = installed("transformers")
    return version is not None and v is not None and release(v) < Version(version)


def _flag(new: str, value):
    """A bool field whose True became ``new``'s value and whose False did nothing."""

    def forward(flag, kwargs):
        if not flag:
            return {}
        if callable(value):
            return value(kwargs)
        return {new: value}

    return forward


def _default_only(default, advice: str):
    """A removed field whose default did nothing (dropped) and whose other values have no equivalent."""

    def forward(value, kwargs):
        if value == default or value is None:
            return {}
        raise Unplaceable(advice)

    return forward


def _warmup_ratio(ratio, kwargs):
    if ratio is None or ratio == 0:
        return {}
    if not 0 < ratio < 1:
        raise Unplaceable(
            f"warmup_steps reads a float in [0, 1) as a ratio of the training steps; warmup_ratio={ratio!r} "
            "is not one: pass warmup_steps=<number of steps>"
        )
    return {"warmup_steps": float(ratio)}


def _warmup_steps_back(steps, kwargs):
    """transformers < 5 takes warmup_steps as a whole number of steps: a float in (0, 1) is a ratio there."""
    if isinstance(steps, float) and 0 < steps < 1:
        return {"warmup_ratio": steps}
    if isinstance(steps, float) and steps.is_integer():
        return {"warmup_steps": int(steps)}
    return None


def _merge_fsdp(key: str, wrap_list: bool):
    def forward(value, kwargs):
        if value is None or (not wrap_list and value == 0):
            return {}
        config = kwargs.get("fsdp_config")
        if config is not None and not isinstance(config, dict):
            raise Unplaceable(f"put {key!r} into your fsdp_config file yourself")
        config = dict(config or {})
        if wrap_list:
            config[key] = list(config.get(key) or []) + [v for v in [value] if v not in (config.get(key) or [])]
        else:
            config[key] = max(config.get(key, 0), value)
        return {"fsdp_config": config}

    return forward


def _hub_model_id(kwargs):
    org, model = kwargs.get("push_to_hub_organization"), kwargs.get("push_to_hub_model_id")
    if model is None and org is None:
        return {}
    if model is None:
        model = Path(kwargs.get("output_dir") or "trainer_output").name
    return {"hub_model_id": f"{org}/{model}" if org else model}


def _logging_dir(value, kwargs):
    report_to = kwargs.get("report_to")
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if value is None or not any(n in ("all", "tensorboard") for n in names):
        return {}
    raise Unplaceable("set the environment variable TENSORBOARD_LOGGING_DIR instead")


def _sampling_back(value, kwargs):
    if value == "group_by_length":
        return {"group_by_length": True}
    if value == "random":
        return {}
    raise Unplaceable("this transformers samples the training set randomly or by length only (group_by_length=True)")


def _include_back(value, kwargs):
    items = [value] if isinstance(value, str) else list(value or [])
    if set(items) - {"inputs"}:
        raise Unplaceable("this transformers can only add the inputs (include_inputs_for_metrics=True)")
    return {"include_inputs_for_metrics": bool(items)}


def _rename(new: str):
    """The same value under the new name (None: not given, as the command line passes an unset field)."""
    return lambda value, kwargs: {new: value} if value is not None else {}


def _key_into(field: str, key: str):
    def forward(value, kwargs):
        if value is None:
            return {}
        config = kwargs.get(field)
        if config is not None and not isinstance(config, dict):
            raise Unplaceable(f"put {key!r} into your {field} yourself")
        return {field: {**(config or {}), key: value}}

    return forward


# Every TrainingArguments field renamed, moved or removed between transformers 4.36 and 5.x, oldest first.
# Evidence (release where each changed, the PR, what replaced it): docs/training-args-drift.md.
CHANGES: tuple = (
    # --- renamed or moved in 4.x (old spelling removed in 4.51, PR #36946) ---
    Change("evaluation_strategy", "eval_strategy", "4.51", added="4.41", forward=_rename("eval_strategy"),
           backward=lambda v, kw: {"evaluation_strategy": v}, ambiguous=">=4.41,<4.51", unset=("no",),
           old_unset=(None, "no")),
    Change("dispatch_batches", "accelerator_config", "4.51",
           forward=_key_into("accelerator_config", "dispatch_batches")),
    Change("split_batches", "accelerator_config", "4.51", forward=_key_into("accelerator_config", "split_batches")),
    Change("tp_size", None, "4.52", forward=_default_only(0, "load the model with from_pretrained(..., tp_plan='auto') instead")),
    # --- removed in 5.0 (PRs #41017, #41404, #41489, #41323) ---
    Change("no_cuda", "use_cpu", "5.0", forward=_flag("use_cpu", True), unset=(False,)),
    Change("use_mps_device", None, "5.0", forward=lambda v, kw: {},
           advice="mps is used by default where available"),
    Change("per_gpu_train_batch_size", "per_device_train_batch_size", "5.0",
           forward=lambda v, kw: {"per_device_train_batch_size": v} if v else {}),
    Change("per_gpu_eval_batch_size", "per_device_eval_batch_size", "5.0",
           forward=lambda v, kw: {"per_device_eval_batch_size": v} if v else {}),
    Change("adafactor", "optim", "5.0", forward=_flag("optim", "adafactor"), unset=("adamw_torch",
           "adamw_torch_fused", "adamw_hf")),
    Change("torchdynamo", "torch_compile_backend", "5.0",
           forward=lambda v, kw: {"torch_compile_backend": v} if v is not None else {}),
    Change("tpu_metrics_debug", "debug", "5.0", forward=_flag(
        "debug", lambda kw: {"debug": (" ".join(kw["debug"]) if isinstance(kw.get("debug"), list)
                                        else (kw.get("debug") or "")) + " tpu_metrics_debug"})),
    Change("push_to_hub_token", "hub_token", "5.0",
           forward=lambda v, kw: {"hub_token": v} if v is not None else {}),
    Change("push_to_hub_model_id", "hub_model_id", "5.0", forward=lambda v, kw: _hub_model_id(kw)),
    Change("push_to_hub_organization", "hub_model_id", "5.0", forward=lambda v, kw: _hub_model_id(kw)),
    Change("include_inputs_for_metrics", "include_for_metrics", "5.0", added="4.46",
           forward=lambda v, kw: {"include_for_metrics": sorted(set(kw.get("include_for_metrics") or []) | {"inputs"})}
           if v else {}, backward=_include_back, unset=([],)),
    Change("fsdp_min_num_params", "fsdp_config", "5.0", forward=_merge_fsdp("min_num_params", False)),
    Change("fsdp_transformer_layer_cls_to_wrap", "fsdp_config", "5.0",
           forward=_merge_fsdp("transformer_layer_cls_to_wrap", True)),
    Change("fp16_backend", None, "5.0", forward=_default_only(
        "auto", "transformers 5 has only torch amp (apex was removed): drop it")),
    Change("half_precision_backend", None, "5.0", forward=_default_only(
        "auto", "transformers 5 has only torch amp (apex was removed): drop it")),
    Change("fp16_opt_level", None, "5.0", forward=lambda v, kw: {},
           advice="an apex setting; transformers 5 has no apex backend"),
    Change("overwrite_output_dir", None, "5.0", forward=lambda v, kw: {},
           advice="Trainer never read it (example scripts did)"),
    Change("save_safetensors", None, "5.0", forward=_default_only(
        True, "transformers 5 always saves safetensors: convert the checkpoint yourself if you need .bin")),
    Change("jit_mode_eval", None, "5.0", forward=_default_only(False, "use torch_compile=True instead")),
    Change("use_ipex", None, "4.57", forward=_default_only(False, "IPEX support was removed: drop it")),
    Change("tpu_num_cores", None, "5.0", forward=lambda v, kw: {},
           advice="only the xla_spawn launcher read it; pass the core count to your launcher"),
    Change("past_index", None, "5.0", forward=_default_only(
        -1, "Trainer no longer feeds past memories (mems) back: handle them in your model/loss")),
    Change("ray_scope", None, "5.0", forward=_default_only(
        "last", "pass the scope to Ray Tune's hyperparameter_search yourself")),
    Change("use_legacy_prediction_loop", None, "5.0", forward=_default_only(
        False, "the legacy prediction loop was removed: drop it")),
    Change("include_tokens_per_second", None, "5.0", forward=_default_only(
        False, "compute tokens/second from include_num_input_tokens_seen and the train runtime")),
    Change("mp_parameters", None, "5.0", forward=_default_only(
        "", "SageMaker model parallelism parameters are no longer read: drop it")),
    # --- removed in 5.x ---
    Change("group_by_length", "train_sampling_strategy", "5.2", added="5.2",
           forward=_flag("train_sampling_strategy", "group_by_length"), backward=_sampling_back,
           unset=("random",)),
    Change("warmup_ratio", "warmup_steps", "5.15", added="5.0", forward=_warmup_ratio,
           backward=_warmup_steps_back, unset=(0, 0.0), ambiguous=">=5.0", old_unset=(None, 0, 0.0)),
    Change("logging_dir", None, "5.15", forward=_logging_dir,
           advice="TensorBoard reads TENSORBOARD_LOGGING_DIR"),
    # --- deprecated in 5.23 (removal announced for v6): the new spelling on older releases ---
    Change("gradient_checkpointing", "activation_checkpointing", "6.0", added="5.23",
           forward=_rename("activation_checkpointing"), backward=lambda v, kw: {"gradient_checkpointing": v},
           ambiguous=">=5.23", old_unset=(None, False)),
    Change("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs", "6.0", added="5.23",
           forward=_rename("activation_checkpointing_kwargs"),
           backward=lambda v, kw: {"gradient_checkpointing_kwargs": v}, ambiguous=">=5.23"),
)


def _by_old() -> dict:
    return {c.old: c for c in CHANGES}


def _by_new() -> dict:
    out = {}
    for c in CHANGES:
        if c.new is not None and c.backward is not None:
            out.setdefault(c.new, []).append(c)
    return out


def _place(out: dict, given: dict, moved: dict, owner: str, source: str, unset=()) -> None:
    """Add ``moved`` (kwargs produced from ``source``) to ``out``: a target given too with another value is an
    error; the same value (or the target's "not given" default) is fine."""
    for name, value in moved.items():
        current = out.get(name, given.get(name))
        if name in given and name != source and not same_value(current, value) and not any(
            same_value(current, u) or current == u for u in unset
        ) and not _merged(current, value):
            raise TypeError(
                f"{owner}() got both {source!r} and {name!r} with different values ({given[source]!r} and "
                f"{given[name]!r}); on {transformers_label()} they are one option ({name!r}): pass only one"
            )
        out[name] = value


def _merged(current, value) -> bool:
    """``value`` extends ``current`` (a dict/list a conversion merged into): not a conflict."""
    if isinstance(current, dict) and isinstance(value, dict):
        return all(value.get(k) == v for k, v in current.items())
    if isinstance(current, (list, str)) and isinstance(value, (list, str)):
        return set(str(current).split()) <= set(str(value).split()) if isinstance(current, str) else \
            set(current) <= set(value)
    return False


def _unplaceable(owner: str, name: str, value, change: Change, why: str) -> TypeError:
    return TypeError(
        f"{owner}({name}={value!r}): {transformers_label()} has no equivalent (it removed {name!r} in "
        f"{change.since}{f', replaced by {change.new!r}' if change.new else ''}): {why}"
    )


def _check_both(kwargs: dict, owner: str, accepted: set, seen: dict) -> None:
    """Both spellings of one option in one call: the same value is fine, different values are an error
    (never a silent pick: releases disagree on which one wins)."""
    for c in CHANGES:
        if c.new is None or c.forward is None or c.old not in kwargs or c.new not in kwargs:
            continue
        both_native = c.old in accepted and c.new in accepted
        if both_native and not (c.ambiguous and _installed_in(c.ambiguous)):
            continue  # this release defines what both mean (e.g. transformers 4.x: warmup_steps > 0 wins)
        try:
            moved = c.forward(kwargs[c.old], seen)
        except Unplaceable:
            continue  # reported as such when translated
        _place({}, kwargs, moved, owner, c.old, c.unset)


def _installed_in(spec: str) -> bool:
    v = installed("transformers")
    return v is not None and SpecifierSet(spec).contains(release(v), prereleases=True)


def translate_training_arguments(kwargs: dict, owner: str, accepted: set) -> dict:
    """New kwargs for a ``TrainingArguments``-derived class ``owner`` whose fields are ``accepted``: other
    transformers releases' spellings translated to the installed one (each reported once), removed fields
    without an equivalent a TypeError. Names not in the table pass through untouched; ``kwargs`` is not
    modified."""
    return _translate(kwargs, owner, accepted, {})


def _translate(kwargs: dict, owner: str, accepted: set, context: dict) -> dict:
    """``translate_training_arguments``; conversions that read other fields (fsdp_config, report_to, ...)
    see ``context`` (the command line's defaults) under ``kwargs``, conflicts are checked in ``kwargs`` only."""
    by_old, by_new = _by_old(), _by_new()
    seen = {**context, **kwargs}
    _check_both(kwargs, owner, accepted, seen)
    todo = [k for k in kwargs if (k in by_old and k not in accepted) or any(
        c.old in accepted and (k not in accepted or _installed_before(c.added)) for c in by_new.get(k, ()))]
    if not todo:
        return kwargs
    out = {k: v for k, v in kwargs.items() if k not in todo}
    for name in todo:
        value = kwargs[name]
        change = by_old.get(name)
        if change is not None and name not in accepted:
            if change.new is not None and change.new not in accepted:
                raise _unplaceable(owner, name, value, change, f"the class has no {change.new!r} either")
            try:
                moved = change.forward(value, seen) if change.forward else {change.new: value}
            except Unplaceable as exc:
                raise _unplaceable(owner, name, value, change, str(exc)) from None
            _place(out, kwargs, moved, owner, name, change.unset)
            what = ", ".join(f"{k}={v!r}" for k, v in moved.items()) or f"dropped ({change.advice or 'no effect'})"
            report.translated(
                f"training_args.{name}",
                f"trlshim: {owner}({name}={value!r}) -> {what} ({transformers_label()} removed {name!r} in "
                f"{change.since})",
            )
            continue
        change = next(c for c in by_new[name] if c.old in accepted)
        try:
            moved = change.backward(value, seen)
        except Unplaceable as exc:
            raise TypeError(
                f"{owner}({name}={value!r}): {transformers_label()} predates this ({name!r} means this since "
                f"transformers {change.added}): {exc}"
            ) from None
        if moved is None:
            out[name] = value
            continue
        _place(out, kwargs, moved, owner, name, change.old_unset)
        report.translated(
            f"training_args.{name}",
            f"trlshim: {owner}({name}={value!r}) -> {', '.join(f'{k}={v!r}' for k, v in moved.items())} "
            f"({transformers_label()} predates {name!r} in this meaning, added in {change.added})",
        )
    return out


def accepted_fields(cls) -> set:
    """The constructor fields of a ``TrainingArguments``-derived dataclass ``cls``."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _init_wrapper(wrapped, instance, args, kwargs):
    """``TrainingArguments(...)`` (and subclasses that inherit its ``__init__``): other releases' spellings."""
    cls = type(instance) if instance is not None else None
    if cls is None or not dataclasses.is_dataclass(cls) or not kwargs:
        return wrapped(*args, **kwargs)
    return wrapped(*args, **translate_training_arguments(kwargs, cls.__name__, accepted_fields(cls)))


def _expects_init(init) -> Optional[str]:
    return None if callable(init) else "TrainingArguments.__init__ is not callable"


# --- the command line: HfArgumentParser(TrainingArguments or a subclass) ---

_BOOLS = {"true": True, "yes": True, "false": False, "no": False}  # "1"/"0" stay numbers (batch sizes, indices)


def _cli_value(text):
    """A command-line value of a field the installed class lacks (so its type is unknown here)."""
    if text is True or not isinstance(text, str):
        return text
    if text.lower() in _BOOLS:
        return _BOOLS[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _int_or_float(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


class _CliSpelling(argparse.Action):
    """``--<field of another transformers release>``: converted by the table, stored in the installed fields."""

    def __call__(self, parser, namespace, values, option_string=None):
        name, accepted = option_string.lstrip("-").replace("-", "_"), self.default_accepted
        context = {k: v for k, v in vars(namespace).items() if not k.startswith("_trlshim_cli_")}
        try:
            # "no" is a value of the *_strategy fields (--evaluation_strategy no), not a boolean
            value = values if name.endswith("_strategy") else _cli_value(values)
            moved = _translate({name: value}, f"--{name}", accepted, context)
        except TypeError as exc:
            parser.error(str(exc))
        for k, v in moved.items():
            if k in accepted:
                setattr(namespace, k, v)


def add_cli_spellings(parser, dtype) -> None:
    """Called by the ``HfArgumentParser`` row (``patches/sft/config.py``) for every dataclass it adds:
    for a ``TrainingArguments`` subclass, every spelling in ``CHANGES`` the installed class lacks becomes an
    option converted exactly as the constructor converts it (``--evaluation_strategy steps`` on transformers 5
    sets ``eval_strategy``; ``--save_safetensors false`` there is a parser error naming the field)."""
    base = getattr(sys.modules.get("transformers.training_args"), "TrainingArguments", None)
    actions = getattr(parser, "_option_string_actions", None)
    if base is None or actions is None or not (isinstance(dtype, type) and issubclass(dtype, base)):
        return
    accepted = accepted_fields(dtype)
    for c in CHANGES:  # a field this release has, with a newer meaning (--warmup_steps 0.25 on transformers 4)
        action = actions.get(f"--{c.new}")
        if c.backward is not None and c.new in accepted and _installed_before(c.added) and action is not None:
            if action.type is int:  # the constructor row then converts the value (warmup_steps=0.25 -> ratio)
                action.type = _int_or_float
    names = {c.old for c in CHANGES} | {c.new for c in CHANGES if c.backward is not None}
    for name in sorted(names - accepted):
        for option in {f"--{name}", f"--{name.replace('_', '-')}"}:
            if option not in actions:
                action = parser.add_argument(option, dest=f"_trlshim_cli_{name}", action=_CliSpelling, nargs="?",
                                             const=True, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                action.default_accepted = accepted


row(
    "training_args.fields", "transformers.training_args", "TrainingArguments.__init__", ">=0.7",
    "TrainingArguments fields in every transformers release's spelling (evaluation_strategy, warmup_ratio, "
    "group_by_length, no_cuda, ...); removed fields without an equivalent are a TypeError",
    transformers=">=4.36", wrapper=_init_wrapper, expects=_expects_init,
)
