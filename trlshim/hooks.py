"""Applying and undoing registry rows in place, with wrapt.

Rows are applied when their module is imported (``wrapt.register_post_import_hook``; at once
when it already is), so ``from trl import SFTTrainer`` bound before ``import trlshim`` sees the
patch: the class object itself is changed. Every change is recorded with the exact original
object, and ``undo_all`` puts those objects back (``is``-identical) and removes injected names.
A row whose target has an unexpected shape skips itself with one warning; nothing here may
raise into the user's import.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
import threading
import time
import warnings

import wrapt

logger = logging.getLogger("trlshim")

_MISSING = object()
_lock = threading.RLock()
_active_rows: list = []  # rows selected for the installed TRL while patched
_pending: set = set()  # modules with a wrapt post-import hook registered and not yet fired
_records: list = []  # (patch_name, owner, attribute, original or _MISSING, installed object), in order
_skipped: dict = {}  # patch name -> why it was skipped
_undo_callbacks: list = []  # instance-level changes made by patches while active (e.g. kernels on a model)
_registering = threading.local()  # set while this thread is inside wrapt.register_post_import_hook


class PatchSkippedWarning(UserWarning):
    """A patch did not apply because its target no longer has the shape it expects."""


def _marker(obj):
    return getattr(obj, "_self_trlshim_patch", None) if isinstance(obj, wrapt.FunctionWrapper) else None


def _wrapped_names(obj) -> set:
    names = set()
    while isinstance(obj, wrapt.FunctionWrapper):
        name = _marker(obj)
        if name:
            names.add(name)
        obj = obj.__wrapped__
    return names


def _resolve_owner(module, attribute):
    owner = module
    parts = attribute.split(".")
    for part in parts[:-1]:
        owner = owner.__dict__.get(part, _MISSING) if isinstance(owner, type) else getattr(owner, part, _MISSING)
        if owner is _MISSING:
            return _MISSING, parts[-1]
    return owner, parts[-1]


def _own(owner, name):
    """The attribute as stored on ``owner`` itself (no descriptor binding), or _MISSING."""
    if isinstance(owner, type) or isinstance(owner, type(sys)):
        return vars(owner).get(name, _MISSING)
    return getattr(owner, name, _MISSING)


def _skip(patch, why):
    if patch.name in _skipped:
        return
    _skipped[patch.name] = why
    if patch.optional:
        logger.debug("trlshim: patch %s not applied: %s", patch.name, why)
        return
    msg = f"trlshim: patch {patch.name!r} skipped: {why} ({patch.reason})"
    logger.warning(msg)
    warnings.warn(msg, PatchSkippedWarning, stacklevel=2)


def _prepare(patch, module):
    """Everything applying ``patch`` needs that may import (lazy module attributes, factories, shape
    checks): done outside the lock, so an import running in another thread can always finish.
    Returns ``(owner, name, injected object or None)``, or the reason to skip as a string."""
    owner, name = _resolve_owner(module, patch.attribute)
    if owner is _MISSING:
        return f"{patch.module}.{patch.attribute.rsplit('.', 1)[0]} not found"
    if patch.kind == "inject":
        return owner, name, (patch.factory() if _own(owner, name) is _MISSING else None)
    if patch.kind == "fields":
        return owner, name, patch.factory()
    own = _own(owner, name)
    target = own if own is not _MISSING else getattr(owner, name, _MISSING)
    if target is _MISSING:
        return f"{patch.module}.{patch.attribute} not found"
    if patch.expects is not None and patch.name not in _wrapped_names(target):
        why = patch.expects(target)
        if why:
            return why
    return owner, name, None


def alias_property(group, name):
    """A property for the spelling ``name`` of a field: reads and writes the spelling the class has."""

    def target(self):
        fields = getattr(type(self), "__dataclass_fields__", {})
        return next(n for n in group if n != name and n in fields)

    prop = property(lambda self: getattr(self, target(self)), lambda self, v: setattr(self, target(self), v))
    prop.__doc__ = f"trlshim: {name!r} is another spelling of this release's field ({' / '.join(group)})."
    return prop


def _set_recorded(patch, owner, name, value):
    own = _own(owner, name)
    setattr(owner, name, value)
    _records.append((patch.name, owner, name, own, value))


def _commit_fields(patch, cls, spec):
    """A FIELDS row: fields the dataclass lacks, their annotations and class defaults, alias properties."""
    if "_trlshim_injected_fields" in vars(cls):
        return
    have = dict(getattr(cls, "__dataclass_fields__", {}))
    new = {n: (t, d) for n, t, d in spec.fields if n not in have}
    if new:  # fully formed Field objects, made by dataclasses itself on a throwaway class
        made = dataclasses.make_dataclass("_trlshim_fields", [(n, t, dataclasses.field(default=d))
                                                              for n, (t, d) in new.items()])
        _set_recorded(patch, cls, "__dataclass_fields__", {**have, **made.__dataclass_fields__})
        annotations = dict(vars(cls).get("__annotations__", {}))  # (getattr would create one on 3.10+)
        _set_recorded(patch, cls, "__annotations__", {**annotations, **{n: t for n, (t, _) in new.items()}})
        for n, (_, d) in new.items():
            _set_recorded(patch, cls, n, d)
    _set_recorded(patch, cls, "_trlshim_injected_fields", frozenset(new))
    fields = set(have) | set(new)
    aliases = {}
    for group in spec.aliases:
        real = next((n for n in group if n in fields), None)
        if real is None:
            continue
        for n in group:
            if n not in fields and not hasattr(cls, n):
                _set_recorded(patch, cls, n, alias_property(group, n))
                aliases[n] = real
    if aliases:  # read by the command-line parser row: --<alias> sets the real field
        _set_recorded(patch, cls, "_trlshim_aliases", aliases)


def _commit(patch, owner, name, obj):
    """Apply ``patch`` (under the lock; imports nothing except in a rare re-injection race)."""
    if patch.kind == "fields":
        target = _own(owner, name)
        if target is _MISSING or not isinstance(target, type):
            return _skip(patch, f"{patch.module}.{patch.attribute} is not a class")
        return _commit_fields(patch, target, obj)
    if patch.kind == "inject":
        current = _own(owner, name)
        if current is not _MISSING:
            if patch.name in (getattr(current, "__trlshim_injected__", None) or ()):
                return
            return _skip(patch, f"{patch.module}.{patch.attribute} already exists")
        if obj is None:  # it existed when prepared and was removed since (an unpatch in between)
            obj = patch.factory()
        try:  # one object may be injected by several rows (trl.SFTConfig and trl.trainer.SFTConfig)
            obj.__trlshim_injected__ = frozenset(getattr(obj, "__trlshim_injected__", None) or ()) | {patch.name}
        except (AttributeError, TypeError):
            pass
        setattr(owner, name, obj)
        _records.append((patch.name, owner, name, _MISSING, obj))
        return
    own = _own(owner, name)
    target = own if own is not _MISSING else getattr(owner, name, _MISSING)
    if target is _MISSING:
        return _skip(patch, f"{patch.module}.{patch.attribute} not found")
    if patch.name in _wrapped_names(target):
        return  # already in place (a second import, a reload, a racing thread)
    new = wrapt.FunctionWrapper(target, patch.wrapper)
    new._self_trlshim_patch = patch.name
    setattr(owner, name, new)
    _records.append((patch.name, owner, name, own, new))


def _on_import(module):
    """wrapt post-import hook: apply the active rows that target this module."""
    # A package may replace itself in sys.modules while importing (TRL's _LazyModule): wrapt hands
    # us the original object, users get the replacement.
    module = sys.modules.get(module.__name__, module)
    with _lock:
        _pending.discard(module.__name__)
        todo = [p for p in _active_rows if p.module == module.__name__]
    for patch in todo:
        try:
            prepared = _prepare(patch, module)
        except Exception as exc:  # never break the user's import
            prepared = f"{type(exc).__name__}: {exc}"
        with _lock:
            if patch not in _active_rows:
                continue  # unpatched meanwhile
            if isinstance(prepared, str):
                _skip(patch, prepared)
                continue
            try:
                _commit(patch, *prepared)
            except Exception as exc:
                _skip(patch, f"{type(exc).__name__}: {exc}")


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _hook(module):
    """The callback given to wrapt. wrapt calls it at once, in the registering thread, when the
    module is already in ``sys.modules``, which includes a module another thread is still
    executing: ``apply_all`` handles that case itself (after waiting for the import)."""
    if getattr(_registering, "active", False):
        return
    _on_import(module)


IMPORT_WAIT_S = 60.0  # the longest a patching thread waits for another thread's imports to finish


def _imports_elsewhere() -> bool:
    """Whether another thread is inside an import now, while this one is not (CPython's per-module import locks;
    False where they cannot be read)."""
    locks = getattr(getattr(importlib, "_bootstrap", None), "_module_locks", None)
    if not isinstance(locks, dict):
        return False
    me, others = threading.get_ident(), False
    for ref in list(locks.values()):
        lock = ref() if callable(ref) else ref
        owner = getattr(lock, "owner", None)
        if owner == me:
            return False  # this thread is importing: waiting for others could wait for each other
        others = others or owner is not None
    return others


def _wait_for_other_imports() -> None:
    """Rows are prepared outside trlshim's lock, and preparing one may import (a factory building a config
    class imports ``transformers.training_args`` and ~1000 modules below it). Two threads importing
    overlapping modules in different orders can meet in a cycle of module locks, which CPython resolves by
    handing one of them a partially initialised module ("cannot import name ..."). A thread that is not
    importing therefore waits, bounded, until no other thread is inside an import before it prepares rows."""
    deadline = time.monotonic() + IMPORT_WAIT_S
    while _imports_elsewhere() and time.monotonic() < deadline:
        time.sleep(0.002)


def apply_all(rows) -> None:
    """Make ``rows`` active: apply those whose module is imported, hook the others."""
    with _lock:
        _active_rows[:] = rows
        names = list(dict.fromkeys(p.module for p in rows))
        for module_name in names:
            if sys.modules.get(module_name) is None and module_name not in _pending:
                _pending.add(module_name)
                _registering.active = True
                try:
                    wrapt.register_post_import_hook(_hook, module_name)
                finally:
                    _registering.active = False
    # Outside the lock: a module that another thread is importing right now is waited for (its
    # import ends by running our hook, which takes the lock), then patched complete, never half-built.
    if any(sys.modules.get(n) is not None for n in names):
        _wait_for_other_imports()
    for module_name in names:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        if _initializing(module):
            try:
                module = importlib.import_module(module_name)  # returns at once in the importing thread
            except Exception:
                continue  # the import failed there; nothing to patch
        _on_import(module)


def at_undo(callback) -> None:
    """Run ``callback`` at the next ``undo_all`` (patches that change instances register their undo)."""
    with _lock:
        _undo_callbacks.append(callback)


def undo_all() -> None:
    """Restore every original object and remove every injected name, newest change first."""
    with _lock:
        _active_rows.clear()
        while _undo_callbacks:
            try:
                _undo_callbacks.pop()()
            except Exception as exc:  # an instance may be half torn down; the class-level undo must still run
                logger.warning("trlshim: undo of an instance-level change failed: %s", exc)
        while _records:
            _, owner, name, original, installed = _records.pop()
            if original is _MISSING:
                if _own(owner, name) is installed or getattr(owner, name, None) is installed:
                    delattr(owner, name)
            else:
                setattr(owner, name, original)
        _skipped.clear()


def applied() -> list:
    """Names of the patches in place now, in the order they were applied."""
    with _lock:
        return list(dict.fromkeys(r[0] for r in _records))  # a FIELDS row records several changes


def skipped(optional: bool = True) -> dict:
    """Patches that skipped themselves, with the reason. ``optional=False``: only the rows whose skip matters
    (an optional row - a name some releases already have, a trainer some releases lack - skips by design)."""
    with _lock:
        out = dict(_skipped)
    if not optional:
        from .registry import rows

        quiet = {p.name for p in rows() if p.optional}
        out = {n: w for n, w in out.items() if n not in quiet}
    return out
