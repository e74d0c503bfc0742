"""Reporting of translations: once per process, through logging and a filterable warning.

Every argument trlshim moves, renames or drops is announced here exactly once per process
(keyed by what happened, not by call site). ``TRLSHIM_STRICT=1`` turns each translation into
a ``TranslationError`` so library authors can find legacy calls.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings

from .flags import flag

logger = logging.getLogger("trlshim")

_seen: set = set()
_applied: list = []
_lock = threading.Lock()
_listeners: list = []  # fn(key, message, site) for every translation, not only the first (the pytest plugin)
# The libraries between a user's call and a report: their frames are never "the caller".
_LIBRARIES = ("trlshim", "trl", "transformers", "accelerate", "datasets", "peft", "wrapt", "torch", "huggingface_hub")


class TranslationWarning(UserWarning):
    """Issued once per process for each translation trlshim applies to a legacy call."""


class TranslationError(TypeError):
    """Raised instead of translating when ``TRLSHIM_STRICT=1``."""


def strict() -> bool:
    return flag("TRLSHIM_STRICT") is True


def _first_time(key: str, message: str) -> bool:
    """Record ``message`` under ``key`` and log it; False when ``key`` was reported already."""
    with _lock:
        if key in _seen:
            return False
        _seen.add(key)
        _applied.append(message)
    logger.info(message)
    return True


def _library_dirs() -> tuple:
    dirs = []
    for name in _LIBRARIES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            dirs.append(os.path.dirname(path) + os.sep)
    return tuple(dirs)


def call_site():
    """``(filename, line)`` of the innermost frame outside trlshim, TRL and the libraries between them - the
    line of the user's (or a library author's) code that made the legacy call - or None."""
    skip = _library_dirs()
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and not filename.startswith(skip):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def add_listener(fn) -> None:
    """Call ``fn(key, message, site)`` for every translation from now on (``site``: ``call_site()``)."""
    with _lock:
        _listeners.append(fn)


def remove_listener(fn) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def translated(key: str, message: str) -> None:
    """Announce one translation (``key`` identifies it, ``message`` says what and why)."""
    is_strict = strict()
    if _listeners or is_strict:
        site = call_site()
        for fn in list(_listeners):
            fn(key, message, site)
        if is_strict:
            where = f" [called from {site[0]}:{site[1]}]" if site else ""
            raise TranslationError(f"{message} (TRLSHIM_STRICT=1 forbids translations; use the installed spelling)"
                                   f"{where}")
    if _first_time(key, message):
        warnings.warn(message, TranslationWarning, stacklevel=4)


class UntestedReleaseWarning(UserWarning):
    """The installed TRL is outside the range trlshim is tested with (issued once per process)."""


def untested_release(message: str) -> None:
    if _first_time("untested_release", message):
        logger.warning(message)
        warnings.warn(message, UntestedReleaseWarning, stacklevel=4)


def decided(key: str, message: str) -> None:
    """Announce a decision that is not a translation of the user's arguments (logged once, no warning)."""
    _first_time(key, message)


def applied() -> list:
    """Messages of the translations and decisions made so far in this process, in order."""
    with _lock:
        return list(_applied)


def reset() -> None:
    """Forget what was reported (tests use this to see each report again)."""
    with _lock:
        _seen.clear()
        _applied.clear()
