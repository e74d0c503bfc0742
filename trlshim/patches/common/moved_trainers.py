"""Trainers TRL moved or deleted: every import path old code used keeps working, or fails saying why.

TRL moved ORPO, CPO, PPO, Online DPO, XPO, Nash-MD, GKD, PRM (and BCO) to ``trl.experimental`` in
0.25/0.26 and removed the old names from ``trl`` / ``trl.trainer`` in 0.29; it renamed PPOv2 to PPO
at 0.12 and dropped the alias at 0.13; it deleted PPO at 1.13, BCO/XPO/Nash-MD/PRM between 1.13 and
1.14.2, DDPO/AlignProp/IterativeSFT at 0.24 (research: trl-rl-matrix.md sections 0, 4, 5).

``TABLE`` is the one place that says so: per trainer, its names (old -> name at home), its old
modules under ``trl.trainer`` (old -> module at home), where it lives per release range, and the
release that deleted it with the replacement. From it:

- ``trl.__getattr__`` / ``trl.trainer.__getattr__`` (module-level, PEP 562; injected, so the name is
  resolved only when asked for and ``import trl`` stays lazy) return the **same class** from its new
  home - ``from trl import ORPOTrainer`` on 1.16 is ``trl.experimental.orpo.ORPOTrainer`` - reported
  once; for a deleted trainer they raise an ``ImportError`` naming the release and the replacement.
- old module paths that no longer exist (``trl.trainer.orpo_trainer``) get a small module object in
  ``sys.modules`` whose attributes resolve the same way (removed again by ``trlshim.unpatch()``).

Names a release still has are never touched (an INJECT row skips an existing name); ``PPOv2Trainer``
maps to ``PPOTrainer`` only where that class is PPOv2 renamed (>= 0.13), never the 0.7-0.11 ``.step()``
PPO; KTO never left ``trl`` (0.26-1.7 keep a FutureWarning shim there), so it needs no row.
"""
from __future__ import annotations

import dataclasses
import dis
import importlib
import sys
import types
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ... import hooks, report
from ...registry import INJECT, row
from ...translate import installed_label
from ...versions import release, trl_version


@dataclasses.dataclass(frozen=True)
class Moved:
    """One trainer's whereabouts. ``homes``: (TRL range, package holding it); ``removed``: the release
    that deleted it (``replacement`` says what to use instead). ``versions``: where trlshim acts."""

    key: str
    names: tuple  # (old name, name at home)
    modules: tuple  # (old module under trl.trainer, module name at home)
    versions: str
    homes: tuple = ()
    removed: Optional[str] = None
    replacement: str = ""

    def home(self, trl: Optional[Version] = None) -> Optional[str]:
        """The package holding it in the installed (or given: ``trlshim migrate --target``) release."""
        trl = trl_version() if trl is None else trl
        for spec, package in self.homes:
            if trl is not None and SpecifierSet(spec).contains(release(trl), prereleases=True):
                return package
        return None

    def is_removed(self, trl: Optional[Version] = None) -> bool:
        trl = trl_version() if trl is None else trl
        return self.removed is not None and trl is not None and release(trl) >= Version(self.removed)


def _pair(stem):
    return ((f"{stem}Trainer", f"{stem}Trainer"), (f"{stem}Config", f"{stem}Config"))


def _mods(mod):
    return ((f"{mod}_trainer", f"{mod}_trainer"), (f"{mod}_config", f"{mod}_config"))


_GONE_114 = "1.14"  # present in 1.13.0, absent from 1.14.2 (the research found no wheel in between)

TABLE = (
    Moved("orpo", _pair("ORPO"), _mods("orpo"), ">=0.29", ((">=0.29", "trl.experimental.orpo"),)),
    Moved("cpo", _pair("CPO"), _mods("cpo"), ">=0.29", ((">=0.29", "trl.experimental.cpo"),)),
    Moved("online_dpo", _pair("OnlineDPO"), _mods("online_dpo"), ">=0.29",
          ((">=0.29", "trl.experimental.online_dpo"),)),
    Moved("gkd", _pair("GKD"), _mods("gkd"), ">=0.29", ((">=0.29", "trl.experimental.gkd"),)),
    Moved("xpo", _pair("XPO"), _mods("xpo"), ">=0.29", ((f">=0.29,<{_GONE_114}", "trl.experimental.xpo"),),
          _GONE_114, "use trl.experimental.online_dpo.OnlineDPOTrainer, or pin trl<1.14"),
    Moved("nash_md", _pair("NashMD"), _mods("nash_md"), ">=0.29",
          ((f">=0.29,<{_GONE_114}", "trl.experimental.nash_md"),), _GONE_114,
          "use trl.experimental.online_dpo.OnlineDPOTrainer, or pin trl<1.14"),
    Moved("prm", _pair("PRM"), _mods("prm"), ">=0.29", ((f">=0.29,<{_GONE_114}", "trl.experimental.prm"),),
          _GONE_114, "no trainer in TRL replaces it: pin trl<1.14"),
    Moved("bco", _pair("BCO"), _mods("bco"), ">=0.29", ((f">=0.29,<{_GONE_114}", "trl.experimental.bco"),),
          _GONE_114, "use trl.KTOTrainer (unpaired preference data), or pin trl<1.14"),
    Moved("ppo", _pair("PPO"), _mods("ppo"), ">=0.29", ((">=0.29,<1.13", "trl.experimental.ppo"),),
          "1.13", "use trl.GRPOTrainer or trl.RLOOTrainer (online RL with reward functions), or pin trl<1.13"),
    Moved("ppov2", (("PPOv2Trainer", "PPOTrainer"), ("PPOv2Config", "PPOConfig")),
          (("ppov2_trainer", "ppo_trainer"), ("ppov2_config", "ppo_config")), ">=0.13",
          ((">=0.13,<0.29", "trl.trainer"), (">=0.29,<1.13", "trl.experimental.ppo")),
          "1.13", "use trl.GRPOTrainer or trl.RLOOTrainer (online RL with reward functions), or pin trl<1.13"),
    Moved("ddpo", _pair("DDPO"), _mods("ddpo"), ">=0.24", (), "0.24", "no trainer in TRL replaces it: pin "
          "trl<0.24"),
    Moved("alignprop", _pair("AlignProp"), _mods("alignprop"), ">=0.24", (), "0.24",
          "no trainer in TRL replaces it: pin trl<0.24"),
    Moved("iterative_sft", (("IterativeSFTTrainer", "IterativeSFTTrainer"), ("IterativeSFTConfig", "IterativeSFTConfig")),
          (("iterative_sft_trainer", "iterative_sft_trainer"), ("iterative_sft_config", "iterative_sft_config")),
          ">=0.24", (), "0.24", "use trl.SFTTrainer, or pin trl<0.24"),
)

_BY_NAME = {old: (entry, new) for entry in TABLE for old, new in entry.names}


def _removed_error(entry: Moved, what: str) -> ImportError:
    err = ImportError(
        f"{what} was removed from TRL in release {entry.removed} ({installed_label()} is installed); "
        f"{entry.replacement}", name=what.rsplit(".", 1)[0],
    )
    err._trlshim_removed = True
    return err


_IMPORT_FROM = dis.opmap["IMPORT_FROM"]


def _in_import_statement(depth: int = 2) -> bool:
    """Whether the attribute lookup that reached a module ``__getattr__`` comes from an import statement
    (``from trl import PPOTrainer``: importlib's ``_handle_fromlist`` for a package, an ``IMPORT_FROM``
    instruction for a module) rather than ``getattr``/``hasattr``. An import of a deleted trainer gets the
    ImportError naming the release and the replacement; ``hasattr(trl, "PPOTrainer")`` and
    ``getattr(trl, name, None)`` - what libraries probing for features do - get an AttributeError (False /
    the default, as on stock TRL) with the same message."""
    frame = sys._getframe(depth)
    if frame.f_code.co_name == "_handle_fromlist":
        return True
    code, at = frame.f_code.co_code, frame.f_lasti
    return 0 <= at < len(code) and code[at] == _IMPORT_FROM


def _resolve_for_caller(entry: Moved, module: str, new_name: str, what: str):
    """``_from_home`` called from a module ``__getattr__``: a removal is an AttributeError outside imports."""
    try:
        return _from_home(entry, module, new_name, what)
    except ImportError as exc:
        if getattr(exc, "_trlshim_removed", False) and not _in_import_statement(3):
            raise AttributeError(str(exc)) from None
        raise


def _from_home(entry: Moved, module: str, new_name: str, what: str):
    """``new_name`` from the trainer's home package (or one of its modules) for the installed release."""
    home = entry.home()
    if home is None:
        if entry.is_removed():
            raise _removed_error(entry, what)
        raise AttributeError(what)
    target = f"{home}.{module}" if module else home
    try:
        obj = getattr(importlib.import_module(target), new_name)
    except ModuleNotFoundError as exc:  # a release deleting it earlier than the table knows
        if entry.removed is not None and exc.name and exc.name.startswith(home):
            raise _removed_error(entry, what) from exc
        raise
    report.translated(f"moved.{what}", f"trlshim: {what} -> {target}.{new_name} ({installed_label()} moved it)")
    return obj


def _module_getattr(package: str):
    """A module-level ``__getattr__`` for ``package``: only the table's names, everything else falls through
    (AttributeError), so TRL's own lazy loading answers as before."""

    def __getattr__(name):
        native = getattr(type(sys.modules.get(package)), "__getattr__", None)  # TRL's lazy loading answers first
        if native is not None:
            try:
                return native(sys.modules[package], name)
            except AttributeError:
                pass
        found = _BY_NAME.get(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        entry, new_name = found
        if not SpecifierSet(entry.versions).contains(release(trl_version()), prereleases=True):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return _resolve_for_caller(entry, "", new_name, f"{package}.{name}")

    __getattr__.__qualname__ = __getattr__.__name__ = "__getattr__"
    __getattr__.__doc__ = f"trlshim: trainers TRL moved or deleted, resolved for {package} (patches.common.moved_trainers)"
    return __getattr__


class LegacyModule(types.ModuleType):
    """An old module path (``trl.trainer.orpo_trainer``) whose attributes come from the trainer's home."""

    def __init__(self, name: str, entry: Moved, new_module: str):
        super().__init__(name, f"trlshim: {name} for {installed_label()}, which moved or deleted it")
        self._trlshim_entry = entry
        self._trlshim_new_module = new_module

    def __getattr__(self, name):
        if name.startswith("__") or name.startswith("_trlshim"):
            raise AttributeError(name)
        entry = self._trlshim_entry
        new_name = dict(entry.names).get(name, name)
        return _resolve_for_caller(entry, self._trlshim_new_module, new_name, f"{self.__name__}.{name}")


def _legacy_module(full_name: str, entry: Moved, new_module: str):
    """Build the module object and register it in ``sys.modules`` (removed again on unpatch)."""
    module = sys.modules.get(full_name)
    if isinstance(module, LegacyModule):
        return module
    module = LegacyModule(full_name, entry, new_module)
    sys.modules[full_name] = module

    def _forget():
        if sys.modules.get(full_name) is module:
            del sys.modules[full_name]

    hooks.at_undo(_forget)
    return module


for _package in ("trl", "trl.trainer"):
    row(f"moved_trainers.getattr[{_package}]", _package, "__getattr__", ">=0.13",
        "trainers TRL moved to trl.experimental (or deleted): old names import the same class, or fail naming the "
        "release and the replacement", kind=INJECT, factory=(lambda p=_package: _module_getattr(p)))

for _entry in TABLE:
    for _old, _new in _entry.modules:
        row(f"moved_trainers.module[trl.trainer.{_old}]", "trl.trainer", _old, _entry.versions,
            f"old module path trl.trainer.{_old} of a trainer TRL moved or deleted", kind=INJECT,
            factory=(lambda o=_old, n=_new, e=_entry: _legacy_module(f"trl.trainer.{o}", e, n)), optional=True)


def native_versions(key: str) -> str:
    """The releases where ``trl.trainer.<key>_trainer`` is TRL's own module (not trlshim's legacy module)."""
    for entry in TABLE:
        if entry.key == key:
            return entry.versions.replace(">=", "<", 1)
    return ">=0.7"
