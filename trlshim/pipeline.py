"""One trainer construction as an explicit, ordered list of steps (trainer-agnostic).

A trainer's ``__init__`` carries exactly one registry row (``Pipeline.row``). Its wrapper builds
one ``TrainerCall`` - the arguments bound once by name (positionals included), the config copied
at most once, before the first write - and runs the steps selected for the installed TRL release
in the order of the pipeline's list, which is the only thing that sets the order (never import
order). A step may register work for after TRL's own ``__init__`` (``call.after``); that work runs
newest first, as nested wrappers would unwind.

Each step is data: name, TRL range (a ``packaging`` specifier), one-line reason, optional shape
check, and the function. The row's shape check runs every selected step's check: one failure on
an unknown release skips the whole pipeline with one warning, never half of it.

Per-trainer pieces (which config class, where TRL < 0.9 keeps options, trlshim's own options on a
config) are fields of ``Pipeline``, so a new trainer is one declaration under ``patches/<trainer>/``.
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import inspect
import weakref
from typing import Any, Callable, Optional, Sequence

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from . import hooks
from .registry import Patch, row
from .translate import init_fields, injected_fields, installed_label, rename, spellings
from .versions import release, trl_version

_SIGNATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parameters(func) -> tuple:
    """Parameter names of ``func`` (bound: without ``self``), cached per underlying function."""
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


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a trainer pipeline: ``run(call)`` for the TRL releases in ``versions``."""

    name: str
    versions: SpecifierSet
    reason: str
    run: Callable[[TrainerCall], None]
    expects: Optional[Callable[[Any], Optional[str]]] = None  # given the wrapped __init__: why its shape is wrong

    def applies_to(self, trl: Optional[Version]) -> bool:
        return trl is not None and self.versions.contains(release(trl), prereleases=True)


def step(name: str, versions: str, reason: str, run, expects=None) -> Step:
    return Step(name=name, versions=SpecifierSet(versions), reason=reason, run=run, expects=expects)


@dataclasses.dataclass(frozen=True)
class Fact:
    """A version-dependent value a step reads (``call.fact(name)``): the first row whose range holds wins."""

    name: str
    versions: SpecifierSet
    value: Any


def fact(name: str, versions: str, value) -> Fact:
    return Fact(name=name, versions=SpecifierSet(versions), value=value)


def lookup(facts: Sequence[Fact], name: str, default=None, trl: Optional[Version] = None):
    """The value of ``name`` for the installed (or given) release, from a table of facts."""
    trl = trl_version() if trl is None else trl
    for f in facts:
        if f.name == name and trl is not None and f.versions.contains(release(trl), prereleases=True):
            return f.value
    return default


_RUNNING = contextvars.ContextVar("trlshim_pipeline_running", default=None)  # (pipeline name, instance id)


class TrainerCall:
    """One trainer construction: the bound arguments, the config, and the options wherever the
    installed release keeps them. The caller's config object is never mutated."""

    def __init__(self, pipeline: Pipeline, wrapped, instance, args: tuple, kwargs: dict):
        self.pipeline = pipeline
        self.wrapped = wrapped
        self.instance = instance
        self.params = parameters(wrapped)
        self.config_cls = pipeline.config_class()
        self.legacy = pipeline.legacy_config is not None and self.config_cls is pipeline.legacy_config()
        added = injected_fields(self.config_cls)  # FIELDS rows: not the release's
        self.config_fields = set() if self.legacy else init_fields(self.config_cls)  # what its constructor takes
        self._native = set() if self.legacy else set(getattr(self.config_cls, "__dataclass_fields__", {})) - added
        self.kwargs = pipeline.bind(self.params, args, kwargs)
        self._owned = False  # kwargs["args"] is our own copy
        self._after: list = []

    # -- the config ------------------------------------------------------------------------------
    @property
    def args(self):
        return self.kwargs.get("args")

    def replace_config(self, config) -> None:
        """Use ``config`` (a new object trlshim built) as the trainer's config."""
        self.kwargs["args"] = config
        self._owned = True

    def writable_config(self):
        """The config, copied once before the first write (or built as TRL would when none was given)."""
        if self.args is None:
            self.replace_config(self.pipeline.new_config(self))
        elif not self._owned:
            self.replace_config(copy.copy(self.args))
        return self.kwargs["args"]

    # -- options, wherever the installed release keeps them ----------------------------------------
    def has(self, name: str) -> bool:
        """Whether the installed release has the option ``name`` itself (in any spelling)."""
        pool = self.params if self.legacy else self._native
        return any(n in pool for n in spellings(name))

    def get(self, name: str, default=None):
        """The value of an option as the installed release (or trlshim's emulation) will read it."""
        names = spellings(name)
        for n in names:
            if n in self.kwargs and n in self.params and n != "args":
                return self.kwargs[n]
        args = self.args
        if not self.has(name):
            return self.own_options().get(name, default)
        if self.legacy:
            fields = getattr(type(args), "__dataclass_fields__", {}) if args is not None else {}
            for n in names:
                if n in fields:
                    return getattr(args, n)
            for n in names:
                if n in self.params:
                    p = inspect.signature(self.wrapped).parameters[n].default
                    return default if p is inspect.Parameter.empty else p
            return default
        for n in names:
            if n in self._native:
                if args is not None:
                    return getattr(args, n)
                return self.config_cls.__dataclass_fields__[n].default
        return default

    def own_options(self) -> dict:
        """trlshim's own (and emulated) options the config carries."""
        return self.pipeline.own_options(self.args) if self.args is not None else {}

    def shim(self, name: str, default=None):
        return self.own_options().get(name, default)

    def set(self, name: str, value) -> None:
        """Set an option where the installed release (or trlshim's emulation) reads it."""
        names = spellings(name)
        if not self.has(name):
            self.pipeline.set_own_option(self.writable_config(), name, value)
            return
        if self.legacy:
            self.kwargs[next(n for n in names if n in self.params)] = value
            return
        for n in names:
            if n in self.kwargs and n in self.params:
                self.kwargs[n] = value
        setattr(self.writable_config(), next(n for n in names if n in self._native), value)

    # -- version facts and work after TRL's __init__ -------------------------------------------------
    def fact(self, name: str, default=None):
        return lookup(self.pipeline.facts, name, default)

    def after(self, callback: Callable[[TrainerCall], None]) -> None:
        """Run ``callback(call)`` after TRL's ``__init__`` returned (newest registration first)."""
        self._after.append(callback)

    def require(self, option: str, *rows: str) -> None:
        """A step that applies ``option`` through registry rows (e.g. a wrapper of a TRL helper) calls this
        before relying on them: a row that skipped itself (its target reshaped on an unknown release) makes the
        call a TypeError naming the option, rather than a trainer that silently ignores it."""
        skipped = hooks.skipped()
        for name in rows:
            if name in skipped:
                raise TypeError(
                    f"{self.pipeline.trainer}: trlshim cannot apply {option} on {installed_label()}: its patch "
                    f"{name!r} skipped itself ({skipped[name]}); leave {option} unset, or use a tested release "
                    "(trlshim doctor lists them)")


def _refuse_extra_positionals(pipeline, args):
    if len(args) > len(pipeline.positional):
        raise TypeError(
            f"{pipeline.trainer}() takes at most {len(pipeline.positional)} positional arguments "
            f"({', '.join(pipeline.positional)}); the positions after that differ between TRL releases, so pass the "
            f"rest by keyword ({installed_label()})"
        )


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The ordered steps of one trainer's construction, and what the steps need to know of it."""

    name: str  # the registry row's name
    trainer: str  # the class name, for messages
    module: str
    attribute: str  # e.g. "SFTTrainer.__init__"
    reason: str
    steps: tuple  # of Step, outermost first: the order is this list
    config_class: Callable[[], type]
    positional: tuple = ()  # parameter names every release agrees on, in order
    facts: tuple = ()  # of Fact
    legacy_config: Optional[Callable[[], type]] = None  # trlshim's config class where TRL has none
    new_config: Callable[[TrainerCall], Any] = None  # the config TRL builds when args is None
    own_options: Callable[[Any], dict] = lambda cfg: {}
    set_own_option: Callable[[Any, str, Any], None] = lambda cfg, name, value: setattr(cfg, name, value)
    expects: Optional[Callable[[Any], Optional[str]]] = None

    def bind(self, params: tuple, args: tuple, kwargs: dict) -> dict:
        """Every argument by name: positionals bound to ``positional`` (then to the installed
        spelling), so no step and no inner call ever sees or drops a positional argument."""
        _refuse_extra_positionals(self, args)
        bound = dict(kwargs)
        for name, value in zip(self.positional, args):
            target = rename(name, params) or name
            if target in bound or name in bound:
                raise TypeError(f"{self.trainer}() got multiple values for argument {name!r}")
            bound[target] = value
        return bound

    def selected(self, trl: Optional[Version]) -> tuple:
        """The steps for release ``trl``, in pipeline order (cached: every trainer build asks)."""
        cache = self.__dict__.setdefault("_selected", {})  # per pipeline object (frozen: not a field)
        try:
            return cache[trl]
        except KeyError:
            return cache.setdefault(trl, tuple(s for s in self.steps if s.applies_to(trl)))

    def shape_problem(self, target) -> Optional[str]:
        """Why ``target`` (the trainer's ``__init__``) does not have the shape every selected step needs."""
        checks = [(self.name, self.expects)] + [(s.name, s.expects) for s in self.selected(trl_version())]
        for name, check in checks:
            why = check(target) if check is not None else None
            if why:
                return f"{why} (step {name}; the whole {self.trainer} pipeline is skipped)"
        return None

    def run(self, wrapped, instance, args, kwargs):
        """Run the selected steps over one call, then TRL's ``__init__``, then the after-work."""
        key = (self.name, id(instance))
        if instance is not None and _RUNNING.get() == key:
            return wrapped(*args, **kwargs)  # trlshim.SFTTrainer over a patched class: once is enough
        call = TrainerCall(self, wrapped, instance, args, kwargs)
        for s in self.selected(trl_version()):
            s.run(call)
        token = _RUNNING.set(key)
        try:
            result = wrapped(**call.kwargs)
        finally:
            _RUNNING.reset(token)
        while call._after:
            call._after.pop()(call)
        return result

    def wrapper(self, wrapped, instance, args, kwargs):
        """The row's wrapt wrapper: looks ``run`` up at each call (not bound once at registration), so the
        row and ``trlshim.SFTTrainer`` always run the same code, instrumented or not."""
        return self.run(wrapped, instance, args, kwargs)

    def row(self) -> Patch:
        return row(self.name, self.module, self.attribute, ">=0.7", self.reason, wrapper=self.wrapper,
                   expects=self.shape_problem)

    def describe(self, trl: Optional[Version]) -> list:
        """``(step, range, reason, selected)`` for ``trlshim doctor``."""
        chosen = set(self.selected(trl))
        return [(s.name, str(s.versions), s.reason, s in chosen) for s in self.steps]


def on_unpatch(callback) -> None:
    """Run ``callback`` at ``trlshim.unpatch()`` (steps that change instances, e.g. a routed model)."""
    hooks.at_undo(callback)


_PIPELINES: dict = {}


def register(pipeline: Pipeline) -> Pipeline:
    """Declare ``pipeline``: its one registry row, and its place in ``pipelines()`` (doctor)."""
    pipeline.row()
    _PIPELINES[pipeline.name] = pipeline
    return pipeline


def pipelines() -> list:
    return list(_PIPELINES.values())
