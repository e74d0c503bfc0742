"""SFTConfig across releases: field renames, removed options, changed defaults, and the class
itself where TRL lacks it.

- TRL >= 0.9: ``SFTConfig.__init__`` is wrapped so every release's field names are accepted
  (``max_seq_length`` <-> ``max_length`` at 0.16/0.20, ``use_liger`` -> ``use_liger_kernel`` at
  0.16/0.18, ``packing_strategy`` spellings at 0.19/0.20/0.29/1.0, no-op fields dropped with a
  report) and unknown names fail with the closest valid one.
- TRL >= 0.19 defaults ``bf16`` to True, which raises where bf16 is unsupported (CPU). When the
  user set neither ``bf16`` nor ``fp16`` there, trlshim passes ``bf16=False``. No other default
  is touched.
- TRL < 0.9 has no SFTConfig: trlshim's own ``TrainingArguments`` subclass with the 0.9 fields is
  injected as ``trl.SFTConfig`` / ``trl.trainer.SFTConfig``; the SFT pipeline's arguments step moves
  its fields onto the trainer's keyword arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import weakref
from typing import Any, Dict, Optional

from ... import report
from ...hooks import alias_property
from ...registry import FIELDS, INJECT, FieldSpec, row
from ...translate import config_kwargs, init_fields, installed_label
from ..common.config_classes import bf16_default, deep_copy, pickled_as_base, shallow_copy
from ..common.training_args import add_cli_spellings, translate_training_arguments
from ..common.written_for import restore_defaults

# Options trlshim implements itself on releases that lack them (filled by the semantics patches).
EMULATED: Dict[str, Any] = {}

# trlshim's own options, accepted by trlshim.SFTConfig on every release.
SHIM_FIELDS = {
    "embedding_learning_rate": None,
    "auto_padding_free": None,  # None: trlshim decides (see patches/packing.py); False: never
    "use_trlshim_kernels": None,  # None: on where safe (see patches/kernel_routing.py); False: never
}

# The fields of TRL 0.9's SFTConfig, used to build the class for TRL < 0.9.
LEGACY_FIELDS = (
    ("dataset_text_field", Optional[str], None),
    ("packing", bool, False),
    ("max_seq_length", Optional[int], None),
    ("dataset_num_proc", Optional[int], None),
    ("dataset_batch_size", int, 1000),
    ("neftune_noise_alpha", Optional[float], None),
    ("model_init_kwargs", Optional[dict], None),
    ("dataset_kwargs", Optional[dict], None),
    ("eval_packing", Optional[bool], None),
    ("num_of_sequences", int, 1024),
    ("chars_per_token", float, 3.6),
)


# Types of trlshim's own and emulated options, for the fields added to the installed SFTConfig (the
# command-line parser needs them).
OPTION_TYPES = {
    "embedding_learning_rate": Optional[float], "auto_padding_free": Optional[bool],
    "use_trlshim_kernels": Optional[bool], "completion_only_loss": Optional[bool], "assistant_only_loss": bool,
    "packing_strategy": Optional[str], "padding_free": bool,
}
# Spellings of one SFTConfig field across releases: the missing spelling reads and writes the real one.
FIELD_ALIASES = (("max_length", "max_seq_length"), ("use_liger_kernel", "use_liger"))


def _own_names(cls) -> set:
    """trlshim's options that are dataclass fields of ``cls`` (our classes, or added to TRL's while patched)."""
    return set(getattr(cls, "_trlshim_owned", {})) | set(getattr(cls, "_trlshim_injected_fields", ()))


def native_fields(cls) -> set:
    """The fields the installed release itself has (not those trlshim added)."""
    return set(getattr(cls, "__dataclass_fields__", {})) - set(getattr(cls, "_trlshim_injected_fields", ()))


def field_spec() -> FieldSpec:
    options = {**EMULATED, **SHIM_FIELDS}
    return FieldSpec(fields=tuple((n, OPTION_TYPES.get(n, Any), d) for n, d in options.items()),
                     aliases=FIELD_ALIASES)


def set_own_option(config, name: str, value) -> None:
    """Set one of trlshim's own or emulated options on ``config`` (a field of our classes, else an extra)."""
    if name in _own_names(type(config)):
        setattr(config, name, value)
    else:
        config._trlshim_extra = dict(getattr(config, "_trlshim_extra", None) or {}, **{name: value})


def shim_options(config) -> dict:
    """Options trlshim handles itself that ``config`` carries (fields of our classes or extras)."""
    out = dict(getattr(config, "_trlshim_extra", None) or {})
    state = getattr(config, "__dict__", {})
    native = native_fields(type(config))
    for name in {**EMULATED, **SHIM_FIELDS}:  # plain attributes: a pickled trlshim config, loaded as TRL's class
        if name in state and name not in native:
            out[name] = state[name]
    for name in _own_names(type(config)):  # fields of trlshim's own config classes, or added to TRL's
        if name not in out and (name in SHIM_FIELDS or name in EMULATED):
            out[name] = getattr(config, name)
    return out


def translate(cls, kwargs: dict):
    """(native kwargs for ``cls``, trlshim-handled extras)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not NOT_GIVEN}  # the field's own default applies
    kwargs = restore_defaults("SFTConfig", cls, kwargs)  # written_for: that release's defaults where unset
    kwargs = translate_training_arguments(kwargs, cls.__name__, init_fields(cls))  # transformers' own drift
    native, extra = config_kwargs(cls, kwargs, emulated=set(EMULATED) | set(SHIM_FIELDS))
    return bf16_default(cls, native), extra


def _init_wrapper(wrapped, instance, args, kwargs):
    cls = type(instance) if instance is not None else None
    if cls is None or not dataclasses.is_dataclass(cls):
        return wrapped(*args, **kwargs)
    native, extra = translate(cls, kwargs)
    result = wrapped(*args, **native)
    _after_init(instance, extra)
    return result


def _after_init(config, extra: dict) -> None:
    """What every SFTConfig construction leaves behind (TRL's class patched, or trlshim's own classes):
    trlshim's options that are fields set as fields (``replace()``, ``to_dict()`` and pickle carry them),
    the rest as extras; and, where the release has two spellings of one option as fields (0.16-0.19), their
    values after TRL's own ``__post_init__``, so that later edits of either spelling are found."""
    fields = getattr(type(config), "__dataclass_fields__", {})
    for name, value in extra.items():
        if name in fields:
            setattr(config, name, value)
    rest = {k: v for k, v in extra.items() if k not in fields}
    if rest:
        config._trlshim_extra = rest
    native = native_fields(type(config))
    both = {g: tuple(getattr(config, n) for n in g) for g in FIELD_ALIASES if all(n in native for n in g)}
    if both:
        config._trlshim_at_init = both


def _expects_dataclass_init(init) -> Optional[str]:
    return None if callable(init) else "SFTConfig.__init__ is not callable"


def _translating_init(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        native, extra = translate(type(self), kwargs)
        init(self, *args, **native, **{k: v for k, v in extra.items() if k in self.__dataclass_fields__})
        _after_init(self, extra)

    return __init__


def build_config_class(base, name="SFTConfig", fields=()):
    """A dataclass subclass of ``base`` adding ``fields`` (name, type, default) whose constructor
    accepts every release's spelling. Used for trlshim.SFTConfig and for TRL < 0.9."""
    have = set(getattr(base, "__dataclass_fields__", {}))
    specs = [(n, t, dataclasses.field(default=d)) for n, t, d in fields if n not in have]
    extra = [(n, OPTION_TYPES.get(n, Any), dataclasses.field(default=d))
             for n, d in {**EMULATED, **SHIM_FIELDS}.items() if n not in have]
    cls = dataclasses.make_dataclass(name, specs + extra, bases=(base,))
    cls.__module__ = "trlshim"
    cls._trlshim_owned = {n: True for n, _, _ in specs + extra}
    cls.__init__ = _translating_init(cls.__init__)
    cls.__reduce_ex__ = pickled_as_base
    cls.__copy__ = shallow_copy
    cls.__deepcopy__ = deep_copy
    all_fields = set(cls.__dataclass_fields__)
    aliases = dict(getattr(cls, "_trlshim_aliases", None) or {})
    for group in FIELD_ALIASES:  # other releases' spellings of a field, as properties of the real one
        real = next((n for n in group if n in all_fields), None)
        for n in group if real else ():
            if n not in all_fields and not hasattr(cls, n):
                setattr(cls, n, alias_property(group, n))
                aliases[n] = real
    cls._trlshim_aliases = aliases
    return cls


class _NotGiven:
    """The command-line default of an option that has several spellings: "not on the command line", so
    the parser's defaults for one spelling never conflict with a value given under another."""

    def __repr__(self):
        return "<not given>"


NOT_GIVEN = _NotGiven()


def _cli_aliases(wrapped, instance, args, kwargs):
    """``HfArgumentParser``: ``--max_seq_length`` (any release's spelling) sets the field the class has."""
    result = wrapped(*args, **kwargs)
    dtype = args[0] if args else kwargs.get("dtype")
    actions = getattr(instance, "_option_string_actions", None)
    if actions is None:
        return result
    add_cli_spellings(instance, dtype)  # TrainingArguments fields of other transformers releases
    fields = getattr(dtype, "__dataclass_fields__", {})
    for group in FIELD_ALIASES:
        if sum(n in fields for n in group) > 1:  # 0.16-0.19: both spellings are fields
            for n in group:
                if f"--{n}" in actions:
                    actions[f"--{n}"].default = NOT_GIVEN
    for alias, real in (getattr(dtype, "_trlshim_aliases", None) or {}).items():
        for a, r in {(alias, real), (alias.replace("_", "-"), real.replace("_", "-"))}:
            action, option = actions.get(f"--{r}"), f"--{a}"
            if action is not None and option not in actions:  # the same parsing, reported when used
                instance.add_argument(option, dest=action.dest, action=_ReportedAlias, type=action.type,
                                      nargs=action.nargs, const=action.const, choices=action.choices,
                                      default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return result


class _ReportedAlias(argparse.Action):
    """A command-line spelling of another release: stores into the field the class has, reported once."""

    def __call__(self, parser, namespace, values, option_string=None):
        report.translated(f"cli.{option_string}", f"trlshim: {option_string} -> --{self.dest} ({installed_label()})")
        setattr(namespace, self.dest, values)


@functools.cache
def legacy_config_class():
    """SFTConfig for TRL < 0.9: TrainingArguments plus the SFT fields of TRL 0.9."""
    from transformers.training_args import TrainingArguments  # the submodule: waits for a concurrent import

    cls = build_config_class(TrainingArguments, fields=LEGACY_FIELDS)
    cls.__doc__ = "trlshim's SFTConfig for TRL < 0.9 (TrainingArguments + the SFT fields of TRL 0.9)."
    cls.remove_unused_columns = _orphan_guard("remove_unused_columns")
    return cls


_PLACED = weakref.WeakValueDictionary()  # id -> legacy configs whose SFT fields a pipeline placed on a trainer


def placed(config) -> None:
    """A pipeline moved this legacy config's SFT fields onto the trainer (trlshim.SFTTrainer needs no patch)."""
    _PLACED[id(config)] = config


def _set_sft_fields(config) -> dict:
    state = config.__dict__
    return {n: state[n] for n, _, d in LEGACY_FIELDS if n in state and state[n] != d}


def _orphan_guard(name):
    """TRL < 0.9's own SFTTrainer reads none of the SFT fields of trlshim's config: used after
    ``trlshim.unpatch()``, the config would train with them silently dropped. Every trainer reads
    ``remove_unused_columns`` before its first step (TRL's dataset preparation, the Trainer's dataloader):
    there the orphaned config raises, naming what would be lost. Patched, it is a plain field."""

    def get(self):
        lost = _set_sft_fields(self)
        if lost and not _patched() and _PLACED.get(id(self)) is not self:
            raise RuntimeError(
                f"trlshim's SFTConfig is used after trlshim.unpatch(): {installed_label()}'s SFTTrainer would ignore "
                f"{', '.join(f'{k}={v!r}' for k, v in lost.items())}. Call trlshim.patch() again, or pass those "
                "options to SFTTrainer(...) yourself"
            )
        return self.__dict__.get(name, True)

    def set(self, value):
        self.__dict__[name] = value

    return property(get, set)


def _patched() -> bool:
    import trlshim

    return trlshim.is_patched()


row(
    "sft_config.fields", "trl.trainer.sft_config", "SFTConfig.__init__", ">=0.9",
    "accept every release's SFTConfig field names; keep bf16 runnable where TRL >= 0.19 defaults it on",
    wrapper=_init_wrapper, expects=_expects_dataclass_init,
)
row(
    "sft_config.own_fields", "trl.trainer.sft_config", "SFTConfig", ">=0.9",
    "trlshim's options as real fields (they survive replace/to_dict/pickle/the CLI parser); legacy spellings "
    "as properties of the real field",
    kind=FIELDS, factory=field_spec,
)
row(
    "sft_config.cli_aliases", "transformers.hf_argparser", "HfArgumentParser._add_dataclass_arguments", ">=0.7",
    "command-line options in every release's spelling (--max_seq_length sets max_length where that is the field)",
    wrapper=_cli_aliases,
)
row(
    "sft_config.cli_aliases.trl_parser", "trl.scripts._hf_argparser", "HfArgumentParser._add_dataclass_arguments",
    ">=1.0", "the same command-line spellings through TrlParser, whose parser TRL >= 1.0 vendors (not transformers')",
    wrapper=_cli_aliases, optional=True,
)
for _module in ("trl", "trl.trainer"):
    row(
        f"sft_config.legacy[{_module}]", _module, "SFTConfig", "<0.9",
        "TRL < 0.9 has no SFTConfig: provide one (TrainingArguments + SFT fields)",
        kind=INJECT, factory=legacy_config_class,
    )
