"""Pieces the preference-trainer wings (Reward, ORPO, CPO, KTO) share.

- ``RangedPipeline``: a ``Pipeline`` whose row covers a TRL range, so a trainer that moved (ORPO:
  ``trl.trainer.orpo_trainer`` before 0.26, ``trl.experimental.orpo`` from 0.26, where TRL's old path is a
  subclass shim calling the new ``__init__``) carries exactly one row on the class that runs.
- ``arguments(trainer)``: the argument step - ``tokenizer=`` <-> ``processing_class=``, a plain
  ``TrainingArguments`` as the release's config with the same values, config fields given to the trainer
  as keyword arguments moved onto a copy of the config (kwargs win, as TRL 0.9-0.12 did for DPO), and
  anything else a TypeError naming it, the installed release and the closest valid name.
- ``config_row``: one row per config class ``__init__``: other releases' TrainingArguments spellings
  (``common.training_args``), fields a release removed (dropped when the value means what the release does
  anyway, else a TypeError with the release and advice), and ``bf16=False`` where TRL >= 0.19 defaults it to
  True on a machine that cannot run it (as ``patches/sft/config.py`` does).
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
from typing import Any, Callable, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ... import report
from ...pipeline import Pipeline, parameters, register
from ...registry import FIELDS, FieldSpec, row
from ...translate import (
    check_spelling_conflicts,
    closest,
    injected_fields,
    installed_label,
    rename,
    same_value,
)
from ...versions import release, trl_version
from . import written_for
from .config_classes import bf16_default, carried_options, carry_option, without_unset_carried
from .model_init_kwargs import translate_model_init_kwargs
from .training_args import translate_training_arguments

# The positions every release of these trainers agrees on; later positions must be keywords.
LEADING = ("model", "args", "data_collator", "train_dataset", "eval_dataset", "processing_class")


@dataclasses.dataclass(frozen=True)
class RangedPipeline(Pipeline):
    """A pipeline whose one row applies to ``versions`` (the releases where ``module`` holds the class)."""

    versions: str = ">=0.7"

    def row(self):
        return row(self.name, self.module, self.attribute, self.versions, self.reason, wrapper=self.wrapper,
                   expects=self.shape_problem)

    def describe(self, trl):
        """Every step off where this pipeline's row does not apply (``trlshim doctor``)."""
        here = trl is not None and SpecifierSet(self.versions).contains(release(trl), prereleases=True)
        return [(n, v, r, on and here) for n, v, r, on in super().describe(trl)]


def import_first(*candidates) -> Callable[[], type]:
    """A loader of the first ``(module, name)`` that imports (the class's home on the installed release)."""

    def load():
        import importlib

        for module, name in candidates:
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise ImportError(f"none of {[f'{m}.{n}' for m, n in candidates]} in {installed_label()}")

    return load


def to_config(args, config_cls, trainer: str):
    """A plain TrainingArguments (or another TA subclass) as ``config_cls`` with the same values."""
    accepted = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in accepted}
    report.translated(f"{trainer}.args.{type(args).__name__}",
                      f"trlshim: {trainer}(args={type(args).__name__}) -> {config_cls.__name__} with the same values "
                      f"({installed_label()})")
    return config_cls(**values)


def arguments(trainer: str, removed: tuple = ()) -> Callable:
    """The argument step of ``trainer`` (see module docstring). ``removed``: the wing's removed config fields;
    those trlshim emulates on the installed release, given to the trainer, are carried on a copy of the config."""

    def translate(call) -> None:
        params, fields = set(call.params), call.config_fields
        emulated = {r.field for r in removed if _gone(r) and _emulated(r)}
        check_spelling_conflicts(call.kwargs, f"{trainer}()", params | fields)
        kwargs, to_cfg, own = {}, {}, {}
        for name, value in call.kwargs.items():
            if name in emulated and name not in params and name not in fields:
                report.translated(f"{trainer}.{name}", f"trlshim: {trainer}({name}=...) kept by trlshim on "
                                  f"{call.config_cls.__name__} ({installed_label()} removed it)")
                own[name] = value
                continue
            target = rename(name, params)
            if target is not None:
                if target != name:
                    report.translated(f"{trainer}.{name}",
                                      f"trlshim: {trainer}({name}=...) -> {target}= ({installed_label()})")
                if target in kwargs and not same_value(kwargs[target], value):
                    raise TypeError(f"{trainer}() got {name!r} and {target!r}: pass only one")
                kwargs[target] = value
                continue
            on_config = rename(name, fields)
            if on_config is None:
                raise TypeError(f"{trainer}() got an unexpected keyword argument {name!r} ({installed_label()})"
                                f"{closest(name, params | fields)}")
            report.translated(f"{trainer}.{name}", f"trlshim: {trainer}({name}=...) -> "
                              f"{call.config_cls.__name__}.{on_config} ({installed_label()})")
            to_cfg[on_config] = value
        call.kwargs = kwargs
        cfg = call.args
        if cfg is not None and not isinstance(cfg, call.config_cls):
            call.replace_config(to_config(cfg, call.config_cls, trainer))
        if to_cfg:
            cfg = call.writable_config()
            for name, value in to_cfg.items():
                setattr(cfg, name, value)
        for name, value in own.items():
            set_own_option(call.writable_config(), name, value)

    return translate


MODEL_INIT_OPTIONS = ("model_init_kwargs", "ref_model_init_kwargs")


def _dtype_names(value: dict, owner: str) -> dict:
    """A ``torch.dtype`` value as its name, for releases that only take a string (``getattr(torch, value)``)."""
    out = dict(value)
    for key in ("torch_dtype", "dtype"):
        dtype = out.get(key)
        if dtype is not None and not isinstance(dtype, str) and str(dtype).startswith("torch."):
            out[key] = str(dtype).removeprefix("torch.")
            report.translated(f"{owner}.{key}.name", f"trlshim: {owner}[{key!r}]={dtype} -> {out[key]!r} "
                              f"({installed_label()} takes the dtype's name only)")
    return out


def model_init_kwargs(trainer: str, names_only_before: Optional[str] = None) -> Callable:
    """The step for ``model_init_kwargs`` / ``ref_model_init_kwargs`` (where the release has them, on the trainer or
    its config): keys in the spelling the release reads (``torch_dtype`` <-> ``dtype``, TRL 0.23;
    ``common/model_init_kwargs``), and before ``names_only_before`` a ``torch.dtype`` value as its name."""

    def translate(call) -> None:
        for name in MODEL_INIT_OPTIONS:
            value = call.get(name) if call.has(name) else None
            if not isinstance(value, dict):
                continue
            owner = f"{trainer}.{name}"
            new = translate_model_init_kwargs(value, owner)
            if names_only_before is not None and older(names_only_before):
                new = _dtype_names(new, owner)
            if list(new.items()) != list(value.items()):
                call.set(name, new)

    return translate


def expects_trainer(trainer: str):
    def expects(init) -> Optional[str]:
        params = parameters(init)
        if "kwargs" in params and "model" not in params:
            return None  # TRL's 0.26-0.28 shims (*args, **kwargs): the wrapped class underneath is checked
        missing = [p for p in ("model", "args", "train_dataset") if p not in params]
        return f"{trainer}.__init__ lacks {missing}" if missing else None

    return expects


def new_config(suffix: str, since: str):
    """The config the trainer builds when ``args`` is None (built here only when a step must write to it):
    ``<model name>-<suffix>`` from TRL ``since``, transformers' ``tmp_trainer`` before."""

    def build(call):
        if older(since):
            return call.config_cls(output_dir="tmp_trainer")
        model = call.kwargs.get("model")
        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
        return call.config_cls(output_dir=f"{str(name).split('/')[-1] or 'model'}-{suffix}")

    return build


# --- config classes ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Removed:
    """A config field the installed release lacks. ``since``: the release that removed it; ``same``: values
    that mean what the release does anyway (dropped with a report); ``advice``: what to do otherwise."""

    field: str
    since: str
    advice: str
    same: tuple = ()
    emulated: str = ""  # releases where trlshim keeps it on the config (``OPTIONS``) and a step of the wing honours it
    kind: Any = Any  # its type as the field trlshim adds (``HfArgumentParser`` converts command-line values with it)


OPTIONS = "_trlshim_pref"  # the plain attribute carrying emulated options where no FIELDS row added them


def own_options(config) -> dict:
    """The emulated options ``config`` carries (real fields where the wing's FIELDS row added them)."""
    return carried_options(config, OPTIONS)


def set_own_option(config, name: str, value) -> None:
    carry_option(config, OPTIONS, name, value)


def _gone(r: Removed) -> bool:
    trl = trl_version()
    return trl is not None and release(trl) >= Version(r.since)


def _emulated(r: Removed) -> bool:
    trl = trl_version()
    return bool(r.emulated) and trl is not None and SpecifierSet(r.emulated).contains(release(trl), prereleases=True)


def _written_for(cls, kwargs: dict, removed: tuple) -> dict:
    """``written_for``: the declared release's defaults where unset. A removed field trlshim emulates takes its
    old default even where the class has no field for it; one it cannot emulate is reported with the reason."""
    cannot = {r.field: f"{installed_label()} removed it (TRL {r.since}): {r.advice}"
              for r in removed if _gone(r) and not _emulated(r)}
    out = written_for.restore_defaults(cls.__name__, cls, kwargs, cannot=cannot)
    rel = written_for.release()
    if rel is None:
        return out
    given = set(out)
    for r in removed:
        if not (_emulated(r) and _gone(r)) or r.field in given or r.field in _fields(cls) | _added(cls):
            continue
        points = written_for.table()["classes"].get(cls.__name__, {}).get(r.field)
        old = written_for.value_at(points, rel) if points else written_for.ABSENT
        if old not in (None, written_for.ABSENT):
            report.decided(f"written_for.{cls.__name__}.{r.field}", f"trlshim: written_for={rel}: "
                           f"{cls.__name__}.{r.field} -> {old!r} (emulated: {installed_label()} removed it)")
            out[r.field] = old
    return out


def _added(cls) -> frozenset:
    return injected_fields(cls)


def _fields(cls) -> set:
    added = _added(cls)
    return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in added}


def translate_config(cls, kwargs: dict, removed: tuple) -> tuple:
    """``(keyword arguments for the installed config cls, emulated options)`` (see module docstring)."""
    fields = _fields(cls)
    kwargs = without_unset_carried(cls, kwargs)  # a copy's (dataclasses.replace) unset emulated field
    kwargs = _written_for(cls, kwargs, removed)  # written_for: that release's defaults where unset
    if kwargs:
        kwargs = translate_training_arguments(dict(kwargs), cls.__name__, fields)
    gone = {r.field: r for r in removed}
    out, extra = {}, {}
    for name, value in kwargs.items():
        if name in fields:
            out[name] = value
            continue
        r = gone.get(name)
        if r is not None and _gone(r):
            if _emulated(r):
                report.translated(f"{cls.__name__}.{name}", f"trlshim: {cls.__name__}({name}={value!r}) kept by "
                                  f"trlshim and applied with its pre-{r.since} meaning ({installed_label()} removed it)")
                extra[name] = value
                continue
            if any(same_value(value, s) for s in r.same):
                report.translated(f"{cls.__name__}.{name}", f"trlshim: dropped {cls.__name__}({name}={value!r}): "
                                  f"removed in TRL {r.since}, and {installed_label()} does the same without it")
                continue
            raise TypeError(f"{cls.__name__}({name}={value!r}): {name!r} was removed in TRL {r.since} "
                            f"({installed_label()} is installed); {r.advice}")
        out[name] = value  # the constructor's own TypeError (unknown names) stays TRL's, as without trlshim
    return bf16_default(cls, out), extra


_TRANSLATING = contextvars.ContextVar("trlshim_config_translating", default=None)


def _config_init_wrapper(removed: tuple):
    def wrapper(wrapped, instance, args, kwargs):
        cls = type(instance) if instance is not None else None
        if cls is None or not dataclasses.is_dataclass(cls) or _TRANSLATING.get() == id(instance):
            return wrapped(*args, **kwargs)  # (a TRL shim subclass calling its wrapped base: translated once)
        token = _TRANSLATING.set(id(instance))
        try:
            native, extra = translate_config(cls, kwargs, removed)
            result = wrapped(*args, **native)
            for name, value in extra.items():
                set_own_option(instance, name, value)
            return result
        finally:
            _TRANSLATING.reset(token)

    return wrapper


def _expects_callable(init) -> Optional[str]:
    return None if callable(init) else "__init__ is not callable"


def config_row(name: str, module: str, cls: str, versions: str, reason: str, removed: tuple = ()):
    return row(name, module, f"{cls}.__init__", versions, reason, wrapper=_config_init_wrapper(removed),
               expects=_expects_callable, optional=True)


def emulated_fields_row(name: str, module: str, cls: str, versions: str, removed: tuple) -> None:
    """A FIELDS row: the removed fields trlshim emulates, as real fields of the release's config (default None)
    where the release removed them, so ``dataclasses.replace``, ``to_dict``, deepcopy, pickle and late edits carry
    them and ``HfArgumentParser`` parses them (typed by ``Removed.kind``)."""
    emulated = [r for r in removed if r.emulated]
    if not emulated:
        return
    first = min(Version(r.since) for r in emulated)

    def spec():
        return FieldSpec(fields=tuple((r.field, Optional[r.kind], None) for r in emulated if _gone(r) and _emulated(r)))

    row(name, module, cls, f"{versions},>={first}", f"{', '.join(r.field for r in emulated)} (removed, emulated by "
        "trlshim) as real fields: they survive dataclasses.replace, to_dict, deepcopy, pickle; typed for the command line",
        kind=FIELDS, factory=spec, optional=True)


# --- stable names (trlshim.<Trainer>, trlshim.<Config>) ---------------------------------------------


@functools.cache
def stable_config(base, removed: tuple):
    """A subclass of the installed config class whose constructor runs the same translation as the row."""
    def __init__(self, *args, **kwargs):
        native, extra = translate_config(type(self), kwargs, removed)
        super(cls, self).__init__(*args, **native)
        for name, value in extra.items():
            set_own_option(self, name, value)

    cls = type(base.__name__, (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = f"trlshim.{base.__name__}: {base.__module__}.{base.__name__} accepting every TRL release's fields."
    return cls


@functools.cache
def stable_trainer(base, pipeline):
    """A subclass of the installed trainer running ``pipeline`` whether or not ``trlshim.patch()`` ran."""

    def __init__(self, *args, **kwargs):
        return pipeline.run(super(cls, self).__init__, self, args, kwargs)

    cls = type(base.__name__, (base,), {"__init__": __init__, "__module__": "trlshim"})
    cls.__doc__ = f"trlshim.{base.__name__}: the installed {base.__name__} accepting every TRL release's arguments."
    return cls


def older(version: str) -> bool:
    trl = trl_version()
    return trl is not None and release(trl) < Version(version)


@dataclasses.dataclass(frozen=True)
class Home:
    """Where a trainer's class lives for a range of releases: the pipeline row sits on the class whose
    ``__init__`` runs there (``where`` names the row)."""

    where: str
    trainer_module: str
    config_module: str
    versions: str


@dataclasses.dataclass(frozen=True)
class Wing:
    """What ``declare_moved`` declares for a trainer that moved between homes (ORPO, CPO, KTO)."""

    pipelines: tuple
    homes: tuple
    trainer: str
    config: str

    def home(self) -> Home:
        return next(h for h in self.homes if SpecifierSet(h.versions).contains(release(trl_version()),
                                                                                prereleases=True))

    def pipeline(self):
        """The pipeline whose row applies to the installed release (for ``trlshim.<Trainer>``)."""
        return self.pipelines[self.homes.index(self.home())]

    def trainer_class(self):
        return import_first((self.home().trainer_module, self.trainer))()

    def config_class(self):
        return import_first((self.home().config_module, self.config))()


def declare_moved(wing: str, trainer: str, config: str, homes: tuple, steps: tuple, positional: tuple,
                  removed: tuple, config_homes: tuple, new_config_since: str = "0.13") -> Wing:
    """One pipeline row per home of ``trainer`` and one config row per ``(where, module, versions)`` of
    ``config_homes`` (a release's old path may keep a subclass shim of the config for a while)."""
    out = Wing(pipelines=(), homes=homes, trainer=trainer, config=config)
    pipelines = tuple(register(RangedPipeline(
        name=f"{wing}.pipeline[{h.where}]", trainer=trainer, module=h.trainer_module, attribute=f"{trainer}.__init__",
        reason=f"{trainer} calls of every release, with their meaning", steps=steps, config_class=out.config_class,
        positional=positional, new_config=new_config(config.removesuffix("Config"), new_config_since),
        versions=h.versions, own_options=own_options, set_own_option=set_own_option,
    )) for h in homes)
    for where, module, versions in config_homes:
        config_row(f"{wing}_config.fields[{where}]", module, config, versions,
                   f"{config} in every release's spelling: removed fields explained, bf16 runnable where TRL >= 0.19 "
                   "defaults it on", removed)
        emulated_fields_row(f"{wing}_config.emulated_fields[{where}]", module, config, versions, removed)
    return dataclasses.replace(out, pipelines=pipelines)
