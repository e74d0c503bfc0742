"""The version-dispatch registry: every patch trlshim applies is one row of data.

A row names its target (module + dotted attribute path), the TRL releases it applies to
(a ``packaging`` specifier, open-ended upward while the change persists), what it does
(a wrapt wrapper around the existing attribute, or an object injected where TRL lacks the
name), an optional shape check run before applying, and a one-line reason.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .versions import release, transformers_version

WRAP = "wrap"  # wrap the existing attribute in place (wrapt.FunctionWrapper)
INJECT = "inject"  # set an attribute the module lacks; removed again on unpatch
FIELDS = "fields"  # add dataclass fields (and alias properties) to a class; removed again on unpatch


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What a FIELDS row adds to a dataclass: ``fields`` (name, type, default) it lacks, so every copy
    path (``dataclasses.replace``, ``to_dict`` -> constructor, ``HfArgumentParser``) carries them; and
    ``aliases``: groups of spellings of one field, each missing spelling a property reading and writing
    the spelling the class has (late edits such as ``cfg.max_seq_length = 8`` reach the real field)."""

    fields: tuple = ()
    aliases: tuple = ()


@dataclasses.dataclass(frozen=True)
class Patch:
    name: str
    module: str
    attribute: str
    versions: SpecifierSet
    reason: str
    kind: str = WRAP
    wrapper: Optional[Callable] = None  # wrapt wrapper(wrapped, instance, args, kwargs)
    factory: Optional[Callable[[], object]] = None  # builds the injected object (FIELDS: a FieldSpec)
    expects: Optional[Callable[[object], Optional[str]]] = None  # returns why the target has the wrong shape
    optional: bool = False  # a missing target is normal (e.g. a trainer some releases lack)
    # the transformers releases it applies to (None: any); checked against the installed transformers
    transformers: Optional[SpecifierSet] = None

    def applies_to(self, trl: Optional[Version], transformers: Optional[Version] = None) -> bool:
        if trl is None or not self.versions.contains(release(trl), prereleases=True):
            return False
        if self.transformers is None:
            return True
        tf = transformers if transformers is not None else transformers_version()
        return tf is not None and self.transformers.contains(release(tf), prereleases=True)


_ROWS: dict = {}


def row(name, module, attribute, versions, reason, transformers=None, **kw) -> Patch:
    """Declare a patch row (used by the modules in ``trlshim.patches``). ``versions``: the TRL releases;
    ``transformers`` (optional): the transformers releases, for rows keyed on transformers' own changes."""
    tf = SpecifierSet(transformers) if transformers is not None else None
    p = Patch(name=name, module=module, attribute=attribute, versions=SpecifierSet(versions), reason=reason,
              transformers=tf, **kw)
    if name in _ROWS and _ROWS[name] != p:
        raise ValueError(f"duplicate patch row {name!r}")
    _ROWS[name] = p
    return p


def rows() -> list:
    """All declared rows, in declaration order (``trlshim.patches`` declares them on import)."""
    return list(_ROWS.values())


def selected(trl: Optional[Version], transformers: Optional[Version] = None) -> list:
    """The rows that apply to the given TRL version (and the given, else the installed, transformers)."""
    return [p for p in rows() if p.applies_to(trl, transformers)]
