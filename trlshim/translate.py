"""Argument tables: every spelling an SFT option had across TRL 0.7 → 1.16, and where it goes.

One table per kind of change. Placement is decided by what the *installed* release accepts
(its ``SFTTrainer.__init__`` parameters and ``SFTConfig`` fields), never by position index,
so the same rules hold for releases newer than the ones we know.
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
from typing import Optional

from . import report
from .versions import trl_in, trl_version

# Spellings of one option, newest first. The first spelling the installed target accepts wins.
SPELLINGS = (
    ("processing_class", "tokenizer"),
    ("max_length", "max_seq_length"),
    ("use_liger_kernel", "use_liger"),
)

# Trainer keywords of a SPELLINGS group: the release whose trainers take the newer spelling (the runtime shim
# reads the installed signature; ``trlshim migrate`` writes for a release that may not be installed).
TRAINER_SPELLING_SINCE = {"processing_class": "0.12"}  # tokenizer= kept as an alias until 0.15

# SFT options that were SFTTrainer keyword arguments up to TRL 0.12 and SFTConfig fields from 0.9.
SFT_OPTIONS = (
    "dataset_text_field", "packing", "max_seq_length", "max_length", "dataset_num_proc", "dataset_batch_size",
    "dataset_kwargs", "neftune_noise_alpha", "model_init_kwargs", "eval_packing", "num_of_sequences",
    "chars_per_token",
)

# Options a release removed because they no longer did anything: dropped, with a report.
NO_OPS = {
    "infinite": "a no-op since TRL 0.7.5 (packing with max_steps repeats the data by itself)",
    "dataset_batch_size": "only the batch size of the tokenizing map; it does not change what the model is fed",
    "num_of_sequences": "a buffer size of the old ConstantLengthDataset packer, which this release does not use",
    "chars_per_token": "a buffer size of the old ConstantLengthDataset packer, which this release does not use",
}

# Options removed without an equivalent: the advice given in the error.
REMOVED = {
    "model_init": "TRL >= 0.15 requires a built model: build it yourself and pass model=...",
}

# packing_strategy values each release accepts, and the spelling to use for a value it lacks.
PACKING_STRATEGIES = (
    (">=1.0", ("bfd", "bfd_split", "wrapped")),
    (">=0.29,<1.0", ("bfd", "bfd-requeue", "wrapped")),
    (">=0.20,<0.29", ("bfd", "wrapped")),
    (">=0.19,<0.20", ("ffd", "wrapped")),
)
STRATEGY_SPELLINGS = {  # same meaning, other names
    "bfd": ("bfd", "ffd"),  # best/first-fit decreasing: whole examples, overlong ones truncated
    "ffd": ("ffd", "bfd"),
    "bfd_split": ("bfd_split", "bfd-requeue"),  # overlong examples split into new rows
    "bfd-requeue": ("bfd_split", "bfd-requeue"),
    "wrapped": ("wrapped",),
}

_SCALARS = (type(None), bool, int, float, str)


def same_value(a, b) -> bool:
    if a is b:
        return True
    return isinstance(a, _SCALARS) and isinstance(b, _SCALARS) and type(a) is type(b) and a == b


def spellings(name: str) -> tuple:
    for group in SPELLINGS:
        if name in group:
            return group
    return (name,)


def installed_label() -> str:
    v = trl_version()
    return f"TRL {v}" if v is not None else "the installed TRL"


def closest(name: str, valid) -> str:
    match = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


# Options whose value TRL uses without checking its type, where a wrong type silently changes
# what is trained (packing="no" is truthy: packing on; max_seq_length=True truncates to 1 token):
# trlshim refuses such values with a TypeError on every release, whatever the spelling.
OPTION_TYPES = {
    "max_seq_length": ("an int or None", (numbers.Integral, type(None))),
    "max_length": ("an int or None", (numbers.Integral, type(None))),
    "packing": ("a bool", (bool,)),
    "eval_packing": ("a bool or None", (bool, type(None))),
    "dataset_text_field": ("a str or None", (str, type(None))),
    "dataset_num_proc": ("an int or None", (numbers.Integral, type(None))),
}


def check_option_types(kwargs: dict, where: str) -> None:
    for name, value in kwargs.items():
        expected = OPTION_TYPES.get(name)
        if expected is None:
            continue
        text, types = expected
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and bool in types and type(value).__name__ == "bool_":  # numpy.bool_
            ok = True
        if not ok:
            raise TypeError(
                f"{where}: {name}={value!r} must be {text}, not {type(value).__name__} ({installed_label()}); "
                "trlshim refuses to guess what it means"
            )


def check_spelling_conflicts(kwargs: dict, where: str, accepted=()) -> None:
    """Both spellings of one option with different values is an error, never a silent pick; the message
    names the spelling the installed release accepts (``accepted``: its parameters / fields).
    Values of the options in ``OPTION_TYPES`` must have the documented type."""
    check_option_types(kwargs, where)
    for group in SPELLINGS:  # None is "not given" (a deprecated alias field's default, as to_dict() writes it)
        given = [n for n in group if n in kwargs and kwargs[n] is not None]
        if len(given) > 1 and not all(same_value(kwargs[given[0]], kwargs[n]) for n in given[1:]):
            installed = rename(given[0], accepted)
            spelled = f"{installed_label()} spells it {installed!r}" if installed else f"{installed_label()} has neither"
            raise TypeError(
                f"{where} got both {given[0]!r} and {given[1]!r} with different values; they are two spellings "
                f"of one option ({spelled}): pass only one"
            )


def rename(name: str, accepted) -> Optional[str]:
    """The spelling of ``name`` that ``accepted`` holds, or None."""
    for candidate in spellings(name):
        if candidate in accepted:
            return candidate
    return None


def packing_strategy_value(value):
    """The installed release's spelling of a ``packing_strategy`` value (unknown values pass through)."""
    if trl_version() is None or not isinstance(value, str):
        return value
    for spec, accepted in PACKING_STRATEGIES:
        if trl_in(spec):
            if value in accepted:
                return value
            for candidate in STRATEGY_SPELLINGS.get(value, ()):
                if candidate in accepted:
                    report.translated(
                        f"packing_strategy={value}",
                        f"trlshim: packing_strategy={value!r} -> {candidate!r} ({installed_label()} spells it so)",
                    )
                    return candidate
            raise ValueError(
                f"packing_strategy={value!r} has no equivalent in {installed_label()}; it accepts "
                f"{', '.join(repr(a) for a in accepted)}"
            )
    return value


def unplaceable(name: str, owner: str, valid) -> None:
    """An argument the installed ``owner`` has no place for: a no-op is dropped (reported), a removed
    option or an unknown name is a TypeError naming it, the installed TRL and the closest valid name."""
    if name in NO_OPS:
        report.translated(f"{owner}.{name}", f"trlshim: dropped {owner}({name}=...): {NO_OPS[name]}")
    elif name in REMOVED:
        raise TypeError(f"{owner}(): {name!r} was removed in {installed_label()}: {REMOVED[name]}")
    else:
        raise TypeError(
            f"{owner}() got an unexpected keyword argument {name!r} ({installed_label()}){closest(name, valid)}"
        )


def injected_fields(cls) -> frozenset:
    """The fields FIELDS rows added to ``cls`` or a base (a TRL shim subclass that is no dataclass of its own
    shares its base's fields and records none itself)."""
    return frozenset().union(*(vars(c).get("_trlshim_injected_fields", frozenset())
                               for c in getattr(cls, "__mro__", ())))


def init_fields(cls) -> set:
    """Names a dataclass config accepts in its constructor (not the fields trlshim added to it while
    patched: those are trlshim's options, handled beside the constructor)."""
    added = injected_fields(cls)
    return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in added}


def config_kwargs(cls, kwargs: dict, emulated=()) -> tuple:
    """Translate keyword arguments for the config class ``cls``.

    Returns ``(native, extra)``: ``native`` goes to the installed constructor, ``extra`` holds
    options trlshim implements itself on this release (names in ``emulated``).
    """
    fields = init_fields(cls)
    where = f"{cls.__name__}()"
    check_spelling_conflicts(kwargs, where, fields)
    native, extra = {}, {}
    for name, value in kwargs.items():
        target = rename(name, fields)
        if target is not None and value is None and native.get(target) is not None:
            continue  # another spelling of this option carried the value (checked above: no conflict)
        if target is not None:
            if target != name:
                report.translated(
                    f"{cls.__name__}.{name}", f"trlshim: {cls.__name__}({name}=...) -> {target}= ({installed_label()})"
                )
            native[target] = value
        elif name in emulated:
            extra[name] = value
        else:
            unplaceable(name, cls.__name__, fields)
    if "packing_strategy" in native:
        native["packing_strategy"] = packing_strategy_value(native["packing_strategy"])
    return native, extra
