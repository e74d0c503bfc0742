"""``model_init_kwargs`` (and other dicts handed to ``from_pretrained``) key by key, for the installed release.

Why: the keys of this dict are read by TRL and transformers, not by a signature, so a renamed key is
not an error - it is silently ignored. The case that bites: TRL >= 0.23 reads ``dtype`` and fills
``dtype="float32"`` when it is missing, so a script's ``{"torch_dtype": torch.bfloat16}`` loses and the
model loads in float32 (with transformers 5 nothing even warns). TRL <= 0.22 reads ``torch_dtype``
(0.12-0.22 convert its string form themselves), and transformers < 4.56 do not know ``dtype``.

One table (``KEY_RENAMES``): the spellings of one key, oldest first, and from which TRL release on the
newer spelling is the one read. Each rename is reported once; both spellings with different values is
a TypeError (which one did the script mean?).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from packaging.specifiers import SpecifierSet

from ... import report
from ...translate import installed_label, same_value
from ...versions import release, trl_version


@dataclasses.dataclass(frozen=True)
class KeyRename:
    old: str
    new: str
    new_from: SpecifierSet  # the TRL releases that read ``new`` (the others read ``old``)
    why: str


KEY_RENAMES = (
    KeyRename("torch_dtype", "dtype", SpecifierSet(">=0.23"),
              "TRL 0.23 reads model_init_kwargs['dtype'] (default float32) and ignores 'torch_dtype'; "
              "transformers < 4.56 and TRL <= 0.22 read 'torch_dtype'"),
)


def _reads_new(rename: KeyRename, trl) -> bool:
    return trl is not None and rename.new_from.contains(release(trl), prereleases=True)


def read_spelling(old: str, trl=None) -> Optional[str]:
    """The spelling of key ``old`` (either spelling) the installed (or given) release reads; None if unknown."""
    trl = trl_version() if trl is None else trl
    for r in KEY_RENAMES:
        if old in (r.old, r.new):
            return r.new if _reads_new(r, trl) else r.old
    return None


def _same(a, b) -> bool:
    if same_value(a, b):
        return True
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - tensors and the like: not comparable, so not the same
        return False


def translate_model_init_kwargs(value: Any, option: str) -> Any:
    """A new dict with every key in the spelling the installed release reads (``option`` names the dict
    in messages, e.g. ``"SFTConfig.model_init_kwargs"``). Anything but a dict is returned unchanged."""
    if not isinstance(value, dict):
        return value
    trl = trl_version()
    out = dict(value)
    for r in KEY_RENAMES:
        target, other = (r.new, r.old) if _reads_new(r, trl) else (r.old, r.new)
        if other not in out:
            continue
        if target in out and not _same(out[target], out[other]):
            raise TypeError(
                f"{option} has both {other!r}={out[other]!r} and {target!r}={out[target]!r}: they are one option "
                f"and {installed_label()} reads {target!r}; keep one"
            )
        moved = out.pop(other)
        out.setdefault(target, moved)
        report.translated(
            f"{option}.{other}",
            f"trlshim: {option}[{other!r}] -> [{target!r}] ({installed_label()}; {r.why})",
        )
    return out


__all__ = ["KEY_RENAMES", "KeyRename", "read_spelling", "translate_model_init_kwargs"]
