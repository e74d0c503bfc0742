"""Maintainer command: generate ``trlshim/data/release_defaults.json``, the defaults of every TRL config
class in every matrix release (what ``written_for`` restores; issue 12). Never hand-edit that file.

    python scripts/release_defaults.py dump                      # this interpreter's TRL, as JSON on stdout
    python scripts/release_defaults.py merge PY [PY ...]        # run `dump` under each Python, write the table

Each ``PY`` is the python of a virtualenv holding one matrix release (e.g. the nox sessions'
``.nox/tests-trl-*/bin/python``). The table stores, per class and field, the values in release order
as change points: ``[[first_release, value], ...]``. A field is recorded where the TRL class declares it
itself in some release (TRL's own options and the TrainingArguments fields TRL overrides), with the
effective dataclass default (``default_factory`` called) of every release; ``"<absent>"`` where the release
lacks the class or field; values JSON cannot hold are absent (never guessed).
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

# Config class -> its trainer: where a release has no config class, a script of that release passed
# TrainingArguments plus trainer keywords, whose defaults are then the release's defaults.
TRAINERS = {"SFTConfig": "SFTTrainer", "DPOConfig": "DPOTrainer", "ORPOConfig": "ORPOTrainer",
            "CPOConfig": "CPOTrainer", "KTOConfig": "KTOTrainer", "RewardConfig": "RewardTrainer",
            "GRPOConfig": "GRPOTrainer"}
# Config class -> the modules it lived in, newest layout first (the first importable one is used).
CLASSES = {
    "SFTConfig": ("trl", "trl.trainer.sft_config"),
    "DPOConfig": ("trl", "trl.trainer.dpo_config"),
    "ORPOConfig": ("trl", "trl.experimental.orpo", "trl.trainer.orpo_config"),
    "CPOConfig": ("trl", "trl.experimental.cpo", "trl.trainer.cpo_config"),
    "KTOConfig": ("trl", "trl.experimental.kto", "trl.trainer.kto_config"),
    "RewardConfig": ("trl", "trl.trainer.reward_config"),
    "GRPOConfig": ("trl", "trl.trainer.grpo_config"),
}
OUT = Path(__file__).resolve().parents[1] / "trlshim" / "data" / "release_defaults.json"


def _value(field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        raise ValueError("no default")
    if isinstance(value, enum.Enum):
        value = value.value
    json.dumps(value)  # raises for values JSON cannot hold
    return value


def _find(modules, name, dataclass_only=True):
    """``name`` from the first of ``modules`` that imports and has it (a dataclass, unless told otherwise)."""
    import warnings

    for module in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = getattr(importlib.import_module(module), name, None)
        except Exception:
            obj = None
        if obj is not None and (not dataclass_only or dataclasses.is_dataclass(obj)):
            return obj
    return None


def dump() -> dict:
    from importlib import metadata

    from transformers import TrainingArguments

    out = {"trl": metadata.version("trl"), "transformers": metadata.version("transformers"), "classes": {}}
    for name, modules in CLASSES.items():
        cls = _find(modules, name)
        if cls is None:
            continue
        own = set()
        for klass in cls.__mro__:
            if klass is TrainingArguments:
                break
            own |= set(vars(klass).get("__annotations__", {}))
        defaults = {}
        for f in dataclasses.fields(cls):
            try:
                defaults[f.name] = _value(f)
            except (ValueError, TypeError):
                pass
        out["classes"][name] = {"own": sorted(own), "defaults": defaults}
    out["legacy"] = {}  # no config class: TrainingArguments' defaults plus the trainer's keyword defaults
    ta = {}
    for f in dataclasses.fields(TrainingArguments):
        try:
            ta[f.name] = _value(f)
        except (ValueError, TypeError):
            pass
    for name, trainer_name in TRAINERS.items():
        if name in out["classes"]:
            continue
        trainer = _find(CLASSES[name], trainer_name, dataclass_only=False)
        if trainer is None:
            continue
        defaults = dict(ta)
        for param in inspect.signature(trainer.__init__).parameters.values():
            if param.default is not inspect.Parameter.empty:
                try:
                    json.dumps(param.default)
                    defaults[param.name] = param.default
                except TypeError:
                    pass
        out["legacy"][name] = defaults
    return out


ABSENT = "<absent>"


def merge(pythons) -> dict:
    """Change points of every field some release's TRL class declares itself (its own options and the
    TrainingArguments fields it overrides), with the effective default in every release (inherited ones
    included: SFTConfig 0.11 inherits learning_rate 5e-5 from TrainingArguments, 1.16 declares 2e-5)."""
    from packaging.version import Version

    dumps = []
    for py in pythons:
        text = subprocess.run([py, __file__, "dump"], check=True, capture_output=True, text=True).stdout
        dumps.append(json.loads(text.strip().splitlines()[-1]))
    dumps.sort(key=lambda d: Version(d["trl"]))
    table = {"releases": [d["trl"] for d in dumps], "classes": {}}
    for cls in CLASSES:
        present = [d for d in dumps if cls in d["classes"]]
        if not present:
            continue  # never a config class in the matrix: nothing to restore
        names = sorted(set().union(*(d["classes"][cls]["own"] for d in present)))
        fields = {}
        for name in names:
            points = []
            for d in dumps:
                if cls in d["classes"]:
                    value = d["classes"][cls]["defaults"].get(name, ABSENT)
                else:
                    value = d.get("legacy", {}).get(cls, {}).get(name, ABSENT)
                if not points or points[-1][1] != value:
                    points.append([d["trl"], value])
            fields[name] = points
        table["classes"][cls] = fields
    return table


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"]:
        print(json.dumps(dump()))
    elif sys.argv[1:2] == ["merge"]:
        table = merge(sys.argv[2:])
        OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {OUT} ({len(table['releases'])} releases)")
    else:
        sys.exit(__doc__)
