"""``written_for``: a script declares the TRL release it was written for and gets that release's defaults
for every config field it did not set (issue 12).

TRL changed defaults that change what is trained without an error (DPO/ORPO/CPO ``learning_rate`` 5e-5 ->
1e-6 in 0.12, GRPO ``beta`` 0.04 -> 0.0 in 0.19, SFT's ``gradient_checkpointing``, ``max_length``, ...).
``TRLSHIM_WRITTEN_FOR=0.11`` or ``trlshim.patch(written_for="0.11")`` (the later wins; ``unpatch()`` clears
it) makes each TRL config construction take the named release's default for every field the user left
unset, from ``data/release_defaults.json`` - generated from the matrix releases by
``scripts/release_defaults.py``, never typed by hand. Fields the user set are never touched; each restored
default is logged once; a default the installed release cannot take (the field is gone) is reported, not
dropped silently. Without ``written_for`` nothing changes. Config wrappers call ``restore_defaults``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Optional

from packaging.version import Version

from ... import report
from ...flags import written_for
from ...translate import installed_label, spellings
from ...versions import matrix_release

ENV = "TRLSHIM_WRITTEN_FOR"
ABSENT = "<absent>"
TABLE = Path(__file__).resolve().parents[2] / "data" / "release_defaults.json"
# Where a run writes and reports to is not what it trains: never restored.
NOT_MEANING = {"output_dir", "logging_dir", "run_name", "report_to", "push_to_hub", "hub_model_id", "hub_strategy",
               "hub_token", "hub_private_repo", "hub_always_push", "overwrite_output_dir"}


@functools.lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(TABLE.read_text())


def release() -> Optional[str]:
    """The tested release named by ``trlshim.patch(written_for=...)`` (validated there), else by
    ``TRLSHIM_WRITTEN_FOR``, else None."""
    if written_for["release"] is not None:
        return written_for["release"]
    value = os.environ.get(ENV, "").strip()
    return matrix_release(value) if value else None


def value_at(points: list, release_: str):
    """The default in ``release_`` from a field's change points ``[[first_release, value], ...]``."""
    found = ABSENT
    for first, value in points:
        if Version(first) <= Version(release_):
            found = value
    return found


def _same(a, b) -> bool:
    if isinstance(a, list) and len(a) == 1 and not isinstance(b, list):
        a = a[0]
    if isinstance(b, list) and len(b) == 1 and not isinstance(a, list):
        b = b[0]
    return a == b and type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _installed_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def differences(name: str, cls, release_: str) -> list:
    """``[(field, written_for_default, installed_default_or_ABSENT)]`` where the two releases differ."""
    fields = table()["classes"].get(name, {})
    installed = _installed_defaults(cls)
    out = []
    for field, points in fields.items():
        old = value_at(points, release_)
        if old == ABSENT or field in NOT_MEANING:
            continue
        if field not in installed and any(s in installed for s in spellings(field)):
            other = next(s for s in spellings(field) if s in installed)
            if other in fields and value_at(fields[other], release_) != ABSENT:
                continue  # the release had both spellings: the installed one's own row decides
            new = installed[other]  # renamed: given under the old name, the translation tables place it
        else:
            new = installed.get(field, ABSENT)
        if new is ABSENT or not _same(old, getattr(new, "value", new)):
            out.append((field, old, new))
    return out


def _cannot(field: str, value, kwargs: dict) -> Optional[str]:
    """Why the old default cannot be restored as a value (hardware, or a value TRL resolved at run time), or None."""
    if value is None:  # e.g. 0.11's max_seq_length=None meant min(1024, the tokenizer's limit), decided by TRL 0.11
        return "None was resolved at run time by that release; set the field to choose"
    if field in ("bf16", "fp16") and value is True and not kwargs.get("use_cpu"):
        try:
            import torch

            ok = torch.cuda.is_available() and (field == "fp16" or torch.cuda.is_bf16_supported())
        except Exception:
            ok = False
        if not ok:
            return f"this machine has no {field} GPU"
    return None


def restore_defaults(name: str, cls, kwargs: dict, cannot: Optional[dict] = None) -> dict:
    """``kwargs`` of a ``name`` (e.g. ``"DPOConfig"``) construction plus the written-for release's defaults of
    the fields not given (by any spelling). Unchanged without ``written_for``. ``cannot``: fields the wing
    knows the installed release cannot honour, with the reason (reported as not restored)."""
    release_ = release()
    if release_ is None:
        return kwargs
    given = {s for key in kwargs for s in spellings(key)}
    out = dict(kwargs)
    for field, old, new in differences(name, cls, release_):
        if field in given:
            continue
        why = (cannot or {}).get(field) or _cannot(field, old, kwargs)
        if why:
            report.decided(f"written_for.{name}.{field}", f"trlshim: written_for={release_}: {name}.{field} default "
                           f"{old!r} not restored: {why}")
            continue
        if new == ABSENT:
            report.decided(f"written_for.{name}.{field}", f"trlshim: written_for={release_}: {name}.{field} default "
                           f"{old!r} not restored: {installed_label()} has no such field")
            continue
        out[field] = old
        report.decided(f"written_for.{name}.{field}",
                       f"trlshim: written_for={release_}: {name}.{field} {getattr(new, 'value', new)!r} -> {old!r}")
    return out
