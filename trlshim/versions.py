"""Installed versions, read from package metadata (never by importing the package).

Also the table of known-good and known-bad TRL/transformers pairs that ``trlshim doctor`` reports.
"""
from __future__ import annotations

import functools
import os
from importlib import metadata
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PACKAGES = ("trl", "transformers", "torch", "peft", "accelerate", "datasets", "wrapt", "triton", "liger-kernel")

# The releases the nox matrix tests, each with the transformers it is pinned to (constraints/trl-X.txt).
TESTED = {
    "0.8.6": "4.40.2", "0.9.6": "4.42.4", "0.11.4": "4.45.2", "0.12.2": "4.46.3", "0.13.0": "4.47.0",
    "0.15.2": "4.49.0", "0.16.1": "4.50.3", "0.19.1": "4.53.1", "0.20.0": "4.54.1", "0.23.1": "4.56.2",
    "0.26.2": "4.57.3", "0.29.1": "5.3.0", "1.0.0": "5.4.0", "1.5.1": "5.9.0", "1.10.0": "5.15.0",
    "1.16.0": "5.19.0",
}

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


def release(version: Version) -> Version:
    """The release a version belongs to, so ``1.17.0.dev0`` selects patches like ``1.17.0``."""
    return Version(version.base_version)


def trl_in(spec: str) -> bool:
    """True when the installed TRL release is in the specifier ``spec`` (pre-releases count as their release)."""
    v = trl_version()
    return v is not None and SpecifierSet(spec).contains(release(v), prereleases=True)


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
