"""Installed versions, read from package metadata (never by importing the package).

Also the table of known-good and known-bad TRL/transformers pairs that ``trlshim doctor`` reports.
"""
from __future__ import annotations

import functools
import os
from importlib import metadata
from pathlib import Path
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PACKAGES = ("trl", "transformers", "torch", "peft", "accelerate", "datasets", "wrapt", "triton", "liger-kernel")

MATRIX_FILE = "data/matrix.txt"  # the single source of the tested releases (also read by noxfile.py)


def read_matrix(text: str) -> dict:
    """``{release: [pip specs]}`` from the text of ``data/matrix.txt`` (lines ``trl-X | specs``)."""
    out = {}
    for line in text.splitlines():
        tag, sep, specs = line.partition("|")
        if sep and not line.lstrip().startswith("#"):
            out[tag.strip().removeprefix("trl-")] = specs.split()
    return out


def _pin(specs: list, package: str) -> str:
    return next(s.split("==", 1)[1] for s in specs if s.startswith(package + "=="))


# The releases the nox matrix tests, each with the transformers it is pinned to.
MATRIX = read_matrix((Path(__file__).parent / MATRIX_FILE).read_text())
TESTED = {trl: _pin(specs, "transformers") for trl, specs in MATRIX.items()}
_NEWEST = max(map(Version, TESTED))
# The releases trlshim supports: from the oldest tested to the newest tested minor's patch releases
# (pyproject's `trl` extra declares the same range; tests/test_matrix.py keeps them equal).
TESTED_RANGE = SpecifierSet(f">={min(map(Version, TESTED))},<{_NEWEST.major}.{_NEWEST.minor + 1}")


def matrix_release(value) -> str:
    """The tested release a user's release string names: ``"0.11"`` or ``"0.11.2"`` -> ``"0.11.4"`` (the tested
    release of that minor), an exact tested release as is; anything else is a clear error naming the accepted
    releases (``written_for``)."""
    text = str(value).strip().removeprefix("trl-").removeprefix("v")
    try:
        wanted = Version(text)
    except Exception:
        wanted = None
    if wanted is not None and text not in MATRIX:
        same_minor = [r for r in MATRIX if Version(r).release[:2] == wanted.release[:2]]
        text = same_minor[-1] if same_minor else text
    if text in MATRIX:
        return text
    raise ValueError(f"trlshim: {value!r} is not a TRL release trlshim knows the defaults of; give one of "
                     f"{', '.join(MATRIX)} (or its minor, e.g. '0.11')")


def outside_tested_range(trl: Optional[Version]) -> bool:
    return trl is not None and not TESTED_RANGE.contains(release(trl), prereleases=True)

# (TRL range, transformers range, why the pair fails). Checked in order by ``pair_problems``.
KNOWN_BAD = (
    ("<0.12", ">=5", "TRL <= 0.11 passes Trainer(tokenizer=), which transformers 5 removed"),
    ("==0.12.2", ">=4.47", "TRL 0.12.2 declares transformers<4.47"),
    (">=0.12,<0.12.2", "<4.46", "TRL 0.12 passes Trainer(processing_class=), added in transformers 4.46"),
    (">=0.13", "<4.46", "TRL >= 0.13 passes Trainer(processing_class=), added in transformers 4.46"),
)


@functools.cache  # reading metadata costs ~1.5 ms, and each trainer build asks
def installed(package: str) -> Optional[Version]:
    """The installed version of ``package``, or None when it is not installed (read once per process)."""
    try:
        return Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


def trl_version() -> Optional[Version]:
    """The installed TRL version. ``TRLSHIM_TRL_VERSION`` overrides it (to rehearse unknown releases)."""
    forced = os.environ.get("TRLSHIM_TRL_VERSION")
    return Version(forced) if forced else installed("trl")


def transformers_version() -> Optional[Version]:
    """The installed transformers version (registry rows may select on it: TrainingArguments drift)."""
    return installed("transformers")


def release(version: Version) -> Version:
    """The release a version belongs to, so ``1.17.0.dev0`` selects patches like ``1.17.0``."""
    return Version(version.base_version)


def trl_in(spec: str) -> bool:
    """True when the installed TRL release is in the specifier ``spec`` (pre-releases count as their release)."""
    v = trl_version()
    return v is not None and SpecifierSet(spec).contains(release(v), prereleases=True)


# (TRL range, an optional package that release needs, why, the fix). Checked by ``dependency_problems``.
NEEDS = (
    ("==1.15.*", "triton", "TRL 1.15 computes its default loss with a Triton kernel (_ChunkedLogProbFunction is None "
     "without triton: 'NoneType' object has no attribute 'apply' at the first step)",
     "pip install triton, or set SFTConfig(loss_type='nll')"),
)


def dependency_problems(trl: Optional[Version]) -> list:
    """(why, fix) for optional packages the installed TRL release needs and this environment lacks."""
    if trl is None:
        return []
    return [(why, fix) for spec, package, why, fix in NEEDS
            if SpecifierSet(spec).contains(release(trl)) and installed(package) is None]


def pair_problems(trl: Optional[Version], transformers: Optional[Version]) -> list:
    """Reasons why this TRL/transformers pair is known not to work (empty when none is known)."""
    if trl is None or transformers is None:
        return []
    out = []
    for trl_range, tf_range, why in KNOWN_BAD:
        if SpecifierSet(trl_range).contains(release(trl)) and SpecifierSet(tf_range).contains(
            release(transformers)
        ):
            out.append(why)
    return out


def known_good(trl: Optional[Version], transformers: Optional[Version]) -> bool:
    """True when this exact pair is one the matrix tests."""
    return trl is not None and transformers is not None and TESTED.get(str(trl)) == str(transformers)
