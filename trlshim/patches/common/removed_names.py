"""Public TRL names an old script imports, importable on every release (one table: ``NAMES``).

Each row: the name, the import paths it had in some TRL release 0.7-1.16, the releases where trlshim
must provide it (TRL lacks it there), and what it is there:

- ``impl:<module>.<attr>``: trlshim's own implementation (TRL deleted the name; ``legacy_utils``,
  ``legacy_cld``), injected with INJECT rows and removed on ``unpatch()``;
- ``alias:<module>.<attr>``: the installed release's object under the old path (the name moved);
- ``removed:<message>``: no meaningful equivalent: importing it raises ImportError with the message.

Whole modules that no longer exist (``trl.commands``, ``trl.commands.cli_utils`` from 0.13) or do not
exist yet (``trl.scripts``, ``trl.scripts.utils`` before 0.13) are module objects registered in
``sys.modules`` and on their parent while trlshim is active (``VIRTUAL_MODULES``); their names resolve
lazily, on first access, from this same table (so importing ``trl`` stays cheap), and are removed again by
``unpatch()``. Trainers and trainer configs are not here (moved trainers have their own rows).
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import types

from ...hooks import at_undo
from ...registry import INJECT, row
from .legacy_utils import AVAILABILITY


@dataclasses.dataclass(frozen=True)
class Name:
    name: str
    paths: tuple  # modules the name was imported from in some release
    versions: tuple  # specifier strings: where trlshim provides it (one INJECT row per path and range)
    provider: str  # impl:<module>.<attr> | alias:<module>.<attr> | removed:<message>


_U = "trlshim.patches.common.legacy_utils"
_C = "trlshim.patches.common.legacy_cld"
_CMD, _CLI, _SCR, _SCRU = "trl.commands", "trl.commands.cli_utils", "trl.scripts", "trl.scripts.utils"
_IMPORT_UTILS = "trl.import_utils"

NAMES = (
    Name("ConstantLengthDataset", ("trl.trainer", "trl.trainer.utils"), (">=0.20",), f"impl:{_C}.ConstantLengthDataset"),
    Name("setup_chat_format", ("trl", "trl.models", "trl.models.utils"), (">=0.26",), f"impl:{_U}.setup_chat_format"),
    Name("get_kbit_device_map", ("trl", "trl.trainer", "trl.trainer.utils"), (">=1.8",),
         f"impl:{_U}.get_kbit_device_map"),
    Name("get_kbit_device_map", ("trl.trainer",), ("<1.0",), f"impl:{_U}.get_kbit_device_map"),
    *(Name(n, ("trl.trainer",), ("<1.0",), f"alias:trl.trainer.utils.{n}")
      for n in ("get_peft_config", "get_quantization_config")),
    Name("ScriptArguments", ("trl",), ("<0.12",), f"impl:{_U}.ScriptArguments"),
    Name("SFTScriptArguments", ("trl",), ("<0.9", ">=0.13"), f"impl:{_U}.SFTScriptArguments"),
    Name("SftScriptArguments", ("trl",), (">=0.9",), f"impl:{_U}.SftScriptArguments"),
    # is_<package>_available at the top level (0.7-0.9 exported the first six from trl, 0.8-0.12 diffusers, 0.11
    # liger/llmblender, 0.12 deepspeed/llm_blender; old TRL test utilities import them; 0.10 not read: where
    # a release still has one, the optional row leaves it alone)
    *(Name(n, ("trl",), (">=0.10",), f"impl:{_U}.{n}") for n in (
        "is_peft_available", "is_wandb_available", "is_bitsandbytes_available", "is_pil_available",
        "is_xpu_available", "is_npu_available")),
    *(Name(n, ("trl",), (">=0.7",), f"impl:{_U}.{n}") for n in (
        "is_diffusers_available", "is_liger_kernel_available", "is_llmblender_available", "is_llm_blender_available",
        "is_deepspeed_available")),
    # the old releases' own trl.commands.cli_utils lacks the spellings of the other releases
    Name("ScriptArguments", (_CLI,), ("<0.12",), f"impl:{_U}.ScriptArguments"),
    Name("SFTScriptArguments", (_CMD, _CLI), ("<0.9",), f"impl:{_U}.SFTScriptArguments"),
    Name("SftScriptArguments", (_CLI,), (">=0.9,<0.13",), f"impl:{_U}.SftScriptArguments"),
    # the CLI helpers' old and new module paths (virtual modules: see VIRTUAL_MODULES)
    Name("TrlParser", (_CMD, _CLI, _SCR, _SCRU), (), "alias:trl.TrlParser"),
    Name("init_zero_verbose", (_CMD, _CLI, _SCR, _SCRU), (), "alias:trl.init_zero_verbose"),
    Name("ScriptArguments", (_CLI, _SCR, _SCRU), (), "alias:trl.ScriptArguments"),
    Name("SFTScriptArguments", (_CMD, _CLI), (), "alias:trl.SFTScriptArguments"),
    Name("SftScriptArguments", (_CLI,), (), "alias:trl.SftScriptArguments"),
    Name("YamlConfigParser", (_CMD, _CLI), (), "removed:trl.commands.cli_utils.YamlConfigParser was removed in TRL "
         "0.13; TrlParser reads the YAML file given with --config itself (from trl import TrlParser)"),
    Name("ChatArguments", (_CLI,), (), "removed:trl.commands.cli_utils.ChatArguments was removed in TRL 0.13 with "
         "the `trl chat` command (use transformers' `transformers chat`)"),
    *(Name(n, (_CMD, _CLI), (), f"removed:{n} was removed in TRL 0.13 (the DPO/Reward example-script arguments); "
           "use trl.ScriptArguments (0.12+) and the trainer's config for the rest")
      for n in ("DpoScriptArguments", "DPOScriptArguments", "RewardScriptArguments")),
    Name("get_git_commit_hash", (_CLI,), (), "removed:trl.commands.cli_utils.get_git_commit_hash was removed in TRL "
         "0.13 without a replacement"),
)

# Whole modules: (name, parent, attribute on the parent, releases where trlshim provides it).
VIRTUAL_MODULES = (
    (_CMD, "trl", "commands", ">=0.13"),
    (_SCR, "trl", "scripts", "<0.13"),
)
SUBMODULES = {_CMD: (("cli_utils", _CLI),), _SCR: (("utils", _SCRU),)}


def _resolve(provider: str):
    kind, _, what = provider.partition(":")
    if kind == "removed":
        raise ImportError(what)
    module, _, attr = what.rpartition(".")
    if kind == "impl" and attr in AVAILABILITY:
        from .legacy_utils import availability

        return availability(attr)
    return getattr(importlib.import_module(module), attr)


def _module_getattr(module_name: str):
    entries = {n.name: n.provider for n in NAMES if module_name in n.paths and n.versions}
    entries.update({n.name: n.provider for n in NAMES if module_name in n.paths and not n.versions})  # aliases win

    def __getattr__(name):
        if name not in entries:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r} (provided by trlshim for old "
                                 f"scripts; it has {sorted(entries)})")
        return _resolve(entries[name])  # ImportError for a removed name: `from x import y` shows the message

    return __getattr__


def _virtual(module_name: str, parent: str):
    mod = types.ModuleType(module_name, f"trlshim: {module_name} for scripts of TRL releases that had it")
    mod.__package__ = parent if module_name.count(".") > 1 else module_name
    mod.__getattr__ = _module_getattr(module_name)
    mod.__all__ = sorted(n.name for n in NAMES if module_name in n.paths and not n.provider.startswith("removed:"))
    mod.__trlshim_virtual__ = True
    return mod


def virtual_package(module_name: str):
    """INJECT factory: the package module object (and its submodules), registered in ``sys.modules`` until
    ``unpatch()``. A module already importable from TRL is never shadowed."""
    if module_name in sys.modules and not getattr(sys.modules[module_name], "__trlshim_virtual__", False):
        return sys.modules[module_name]
    pkg = _virtual(module_name, module_name)
    pkg.__path__ = []  # a package: `import <pkg>.<sub>` looks in sys.modules first, then finds nothing on disk
    added = {module_name: pkg}
    for attr, sub_name in SUBMODULES.get(module_name, ()):
        sub = _virtual(sub_name, module_name)
        setattr(pkg, attr, sub)
        added[sub_name] = sub
    for name, mod in added.items():
        sys.modules.setdefault(name, mod)

    def remove():
        for name, mod in added.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]

    at_undo(remove)
    return pkg


def _inject_factory(provider: str):
    return lambda: _resolve(provider)


for _n in NAMES:
    for _spec in _n.versions:
        for _path in _n.paths:
            row(f"removed_names.{_path}.{_n.name}[{_spec}]", _path, _n.name, _spec,
                f"{_n.name} importable from {_path} as in the releases that had it ({_n.provider.split(':')[0]})",
                kind=INJECT, factory=_inject_factory(_n.provider), optional=True)

# trl.import_utils: every is_<package>_available any release had, where the installed one lacks it (the module
# is a plain module, so an existing name is seen and left alone).
for _name in (*AVAILABILITY, "is_transformers_greater_than", "is_torch_greater_2_0", "is_accelerate_greater_20_0",
              "is_xpu_available", "is_npu_available"):
    row(f"removed_names.{_IMPORT_UTILS}.{_name}", _IMPORT_UTILS, _name, ">=0.7",
        f"trl.import_utils.{_name} as some TRL release had it", kind=INJECT,
        factory=_inject_factory(f"impl:{_U}.{_name}"), optional=True)

for _mod, _parent, _attr, _spec in VIRTUAL_MODULES:
    row(f"removed_names.module.{_mod}", _parent, _attr, _spec,
        f"the module {_mod} for scripts of the releases that had it (trlshim's module object while patched)",
        kind=INJECT, factory=(lambda m=_mod: virtual_package(m)), optional=True)
