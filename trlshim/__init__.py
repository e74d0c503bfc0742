"""trlshim: SFT scripts written for any TRL release run, with their meaning, on the installed TRL.

``import trlshim`` patches TRL in place (before or after TRL is imported); ``trlshim.unpatch()``
restores the original objects; ``TRLSHIM_DISABLE=1`` turns the import-time patching off;
``TRLSHIM_STRICT=1`` turns every translation into an error.
"""
from __future__ import annotations

import _thread  # not threading: a bare interpreter has not imported it (~5 ms)
import os
import sys

from .flags import flag

__all__ = ["patch", "unpatch", "is_patched", "SFTTrainer", "SFTConfig", "TranslationWarning", "TranslationError"]
__version__ = "0.1.0"

_lock = _thread.allocate_lock()
_finder = None  # the _WhenTrlImported in sys.meta_path while patching waits for `import trl`


class _TrlLoader:
    """trl's own loader, plus: apply the deferred patch once trl's code has run."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _patch_now()

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _WhenTrlImported:
    """A meta path finder that only notices the first ``import trl``, so that ``import trlshim``
    alone imports neither wrapt nor the patch rows (they cost ~100 ms); the patch is applied
    right after trl's own code has run, before the importer gets the module."""

    def __init__(self):
        self._busy = _thread._local()

    def find_spec(self, name, path=None, target=None):
        if name != "trl" or getattr(self._busy, "on", False):
            return None
        import importlib.util

        self._busy.on = True
        try:
            spec = importlib.util.find_spec(name)  # the spec the other finders give
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _TrlLoader(spec.loader)
        return spec


def _remove_finder() -> None:
    global _finder
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None


def _patch_now() -> None:
    from . import hooks, patches, registry, versions  # noqa: F401  (patches declares the rows)

    with _lock:
        _remove_finder()
    # Not under _lock: apply_all may wait for another thread's import of a target module, and that
    # import ends in _TrlLoader.exec_module -> here (holding _lock while waiting would deadlock).
    trl = versions.trl_version()
    hooks.apply_all(registry.selected(trl))
    if versions.outside_tested_range(trl):
        from . import report

        report.untested_release(f"trlshim: TRL {trl} is outside the tested range (trl{versions.TESTED_RANGE}); "
                                "patches for the newest known shapes are applied, each checking its target first")


def patch(written_for=None) -> None:
    """Apply the rows selected for the installed TRL (idempotent; TRL need not be imported yet).

    ``written_for="0.11"``: TRL configs built from now on take that release's defaults for the fields a
    script leaves unset (overrides ``TRLSHIM_WRITTEN_FOR``; an unknown release is a ValueError here)."""
    global _finder
    if written_for is not None or os.environ.get("TRLSHIM_WRITTEN_FOR", "").strip():
        from . import flags, versions

        if written_for is not None:
            flags.written_for["release"] = versions.matrix_release(written_for)
        else:
            versions.matrix_release(os.environ["TRLSHIM_WRITTEN_FOR"])  # a clear error now, not at the first config
    with _lock:
        if "trl" not in sys.modules:  # defer everything (wrapt, the rows) to trl's import
            if _finder is None:
                _finder = _WhenTrlImported()
                sys.meta_path.insert(0, _finder)
            if "trlshim.hooks" not in sys.modules:
                return
    _patch_now()  # trl is imported, or hooks already are (a re-patch): apply / register now


def unpatch() -> None:
    """Restore every patched attribute to the identical original object; remove injected names."""
    from .flags import written_for

    written_for["release"] = None
    with _lock:
        _remove_finder()
        if "trlshim.hooks" not in sys.modules:
            return  # nothing was ever applied
        from . import hooks

        hooks.undo_all()
        varlen = sys.modules.get("trlshim.patches.sft.varlen")
        if varlen is not None:
            varlen.unregister()  # the attention name auto padding-free registered with transformers


def is_patched() -> bool:
    if _finder is not None:
        return True
    hooks = sys.modules.get("trlshim.hooks")
    return hooks is not None and (bool(hooks.applied()) or bool(hooks._active_rows))


def __getattr__(name):
    # Lazy, so that importing trlshim imports neither TRL nor wrapt nor logging.
    if name in ("TranslationWarning", "TranslationError"):
        from . import report

        return getattr(report, name)
    if name == "SFTConfig":
        from .stable import sft_config_class

        return sft_config_class()
    if name == "SFTTrainer":
        from .stable import sft_trainer_class

        return sft_trainer_class()
    if name == "GRPOConfig":
        from .stable import grpo_config_class

        return grpo_config_class()
    if name == "GRPOTrainer":
        from .stable import grpo_trainer_class

        return grpo_trainer_class()
    if name == "DPOConfig":
        from .stable import dpo_config_class

        return dpo_config_class()
    if name == "DPOTrainer":
        from .stable import dpo_trainer_class

        return dpo_trainer_class()
    if name in ("RewardConfig", "RewardTrainer", "ORPOConfig", "ORPOTrainer", "KTOConfig", "KTOTrainer", "CPOConfig",
                "CPOTrainer"):
        from . import stable

        kind = "config" if name.endswith("Config") else "trainer"
        return getattr(stable, f"{name[:-len(kind)].lower()}_{kind}_class")()
    raise AttributeError(f"module 'trlshim' has no attribute {name!r}")


if flag("TRLSHIM_DISABLE") is not True:
    patch()
