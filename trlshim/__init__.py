"""trlshim: SFT scripts written for any TRL release run, with their meaning, on the installed TRL.

``import trlshim`` patches TRL in place (before or after TRL is imported); ``trlshim.unpatch()``
restores the original objects; ``TRLSHIM_DISABLE=1`` turns the import-time patching off;
``TRLSHIM_STRICT=1`` turns every translation into an error.
"""
from __future__ import annotations

import os
import threading

from .report import TranslationError, TranslationWarning

__all__ = ["patch", "unpatch", "is_patched", "SFTTrainer", "SFTConfig", "TranslationWarning", "TranslationError"]
__version__ = "0.1.0"

_lock = threading.Lock()


def patch() -> None:
    """Apply the rows selected for the installed TRL (idempotent; TRL need not be imported yet)."""
    from . import hooks, patches, registry, versions  # noqa: F401  (patches declares the rows)

    with _lock:
        hooks.apply_all(registry.selected(versions.trl_version()))


def unpatch() -> None:
    """Restore every patched attribute to the identical original object; remove injected names."""
    from . import hooks

    with _lock:
        hooks.undo_all()


def is_patched() -> bool:
    from . import hooks

    return bool(hooks.applied()) or bool(hooks._active_rows)


def __getattr__(name):
    # Lazy, so that importing trlshim does not import TRL.
    if name == "SFTConfig":
        from .stable import sft_config_class

        return sft_config_class()
    if name == "SFTTrainer":
        from .stable import sft_trainer_class

        return sft_trainer_class()
    raise AttributeError(f"module 'trlshim' has no attribute {name!r}")


if os.environ.get("TRLSHIM_DISABLE", "").strip().lower() not in {"1", "true", "yes", "on"}:
    patch()
