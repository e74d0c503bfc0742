"""Reporting of translations: once per process, through logging and a filterable warning.

Every argument trlshim moves, renames or drops is announced here exactly once per process
(keyed by what happened, not by call site). ``TRLSHIM_STRICT=1`` turns each translation into
a ``TranslationError`` so library authors can find legacy calls.
"""
from __future__ import annotations

import logging
import threading
import warnings

from .flags import flag

logger = logging.getLogger("trlshim")

_seen: set = set()
_applied: list = []
_lock = threading.Lock()


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


def translated(key: str, message: str) -> None:
    """Announce one translation (``key`` identifies it, ``message`` says what and why)."""
    if strict():
        raise TranslationError(f"{message} (TRLSHIM_STRICT=1 forbids translations; use the installed spelling)")
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
