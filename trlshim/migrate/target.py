"""What the target release of ``trlshim migrate`` accepts, read from the runtime shim's own tables.

The runtime shim inspects the installed classes; the codemod writes for a release that may not be
installed, so it reads the same facts from the tables instead: config fields per release
(``data/release_defaults.json``, generated from the matrix), where trlshim provides a config class
TRL lacks (the ``*_config.legacy`` registry rows), trainer keyword spellings
(``translate.TRAINER_SPELLING_SINCE``), the trainers' facts tables (default output dirs, DPO truncation),
moved trainers (``moved_trainers.TABLE``), moved/removed names (``removed_names.NAMES``), names trlshim
injects (the registry's INJECT rows), where an SFT pipeline step changes the meaning (``patches.sft.STEPS``)
and dict keys (``model_init_kwargs.KEY_RENAMES``). No table of its own.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ..versions import matrix_release, release, trl_version


@dataclasses.dataclass(frozen=True)
class Target:
    version: Version

    @property
    def label(self) -> str:
        return f"TRL {self.version}"

    def contains(self, spec: str) -> bool:
        return SpecifierSet(spec).contains(release(self.version), prereleases=True)

    @functools.cached_property
    def _rows(self) -> dict:
        from .. import patches  # noqa: F401 - declares the rows
        from ..registry import rows

        return {p.name: p for p in rows()}

    def native_config(self, cls_name: str) -> bool:
        """False where TRL has no ``cls_name`` and trlshim injects one (``sft_config.legacy[trl]`` ...)."""
        key = {"SFTConfig": "sft_config", "DPOConfig": "dpo_config"}[cls_name]
        legacy = self._rows.get(f"{key}.legacy[trl]")
        return legacy is None or not legacy.applies_to(self.version)

    def config_fields(self, cls_name: str) -> frozenset:
        """The TRL-specific fields ``cls_name`` has in the target (trlshim's legacy class where TRL has none:
        its fields are the trainer's keyword arguments there)."""
        from ..patches.common.written_for import ABSENT, table, value_at

        fields = table()["classes"].get(cls_name, {})
        return frozenset(n for n, points in fields.items() if value_at(points, str(self.version)) != ABSENT)

    def known_config_fields(self, cls_name: str) -> frozenset:
        """The TRL-specific fields ``cls_name`` has in any release of the table."""
        from ..patches.common.written_for import table

        return frozenset(table()["classes"].get(cls_name, {}))

    def provided(self, module: str, name: str) -> bool:
        """True where the target lacks ``module.name`` and trlshim injects its own (an INJECT row applies)."""
        from ..registry import INJECT

        return any(p.kind == INJECT and p.module == module and p.attribute == name and p.applies_to(self.version)
                   for p in self._rows.values())

    def step(self, name: str) -> bool:
        """True where the SFT pipeline step ``name`` runs on the target (trlshim changes the meaning there)."""
        from ..patches.sft import STEPS

        return any(s.name == name and self.contains(str(s.versions)) for s in STEPS)

    def trainer_spelling(self, name: str) -> str:
        """The keyword the target's trainers take for ``tokenizer``/``processing_class``."""
        from ..translate import TRAINER_SPELLING_SINCE, spellings

        group = spellings(name)
        for new, since in TRAINER_SPELLING_SINCE.items():
            if new in group:
                return new if self.version >= Version(since) else group[-1]
        return name

    def fact(self, trainer: str, name: str, default=None):
        from ..pipeline import lookup

        if trainer == "sft":
            from ..patches.sft.facts import FACTS
        else:
            from ..patches.dpo.facts import FACTS
        return lookup(FACTS, name, default, trl=self.version)


def resolve(text: Optional[str]) -> Target:
    """``--target 1.16`` -> the tested release of that minor (exact versions as given); None -> installed."""
    if text is None:
        v = trl_version()
        if v is None:
            raise SystemExit("trlshim migrate: TRL is not installed; name the release to write for with --target")
        return Target(release(v))
    try:
        return Target(Version(matrix_release(text)))
    except ValueError:
        try:
            return Target(release(Version(text)))
        except Exception:  # noqa: BLE001 - packaging's InvalidVersion
            raise SystemExit(f"trlshim migrate: --target {text!r} is not a TRL release") from None
