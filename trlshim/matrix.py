"""The tested TRL matrix as an API, for libraries that build on TRL (issue 14).

A library can run its own test matrix on the releases and pins trlshim tests with::

    import trlshim.matrix
    @nox.parametrize("trl", trlshim.matrix.releases())
    def tests(session, trl):
        session.install(*trlshim.matrix.pins(trl), "-c", trlshim.matrix.constraints_file(trl))

Everything here is read from the files packaged with trlshim (``data/matrix.txt``, the single source of
the release list, and ``data/constraints/trl-X.txt``, the full resolved pins that installed and passed
trlshim's suite); importing this module imports neither TRL nor wrapt.
"""
from __future__ import annotations

from pathlib import Path

from .versions import MATRIX, TESTED

CONSTRAINTS_DIR = Path(__file__).parent / "data" / "constraints"


def releases() -> list:
    """The tested TRL releases, oldest first (``["0.8.6", ..., "1.16.0"]``)."""
    return list(MATRIX)


def _known(release: str) -> str:
    release = str(release).removeprefix("trl-")
    if release not in MATRIX:
        raise ValueError(f"TRL {release} is not in trlshim's tested matrix; tested: {', '.join(MATRIX)}")
    return release


def pins(release: str) -> list:
    """The top-level pip specs trlshim installs for ``release`` (``["trl==1.16.0", "transformers==5.19.0", ...]``)."""
    return list(MATRIX[_known(release)])


def transformers_for(release: str) -> str:
    """The transformers version the release is tested with."""
    return TESTED[_known(release)]


def constraints_file(release: str) -> str:
    """Path of the release's full constraints file (every resolved package, for ``pip -c`` / ``UV_CONSTRAINT``).
    Its torch pin is the CPU build (``+cpu``); drop that line where that build is not available."""
    return str(CONSTRAINTS_DIR / f"trl-{_known(release)}.txt")


def constraints(release: str) -> list:
    """The release's full constraints as ``["package==version", ...]``."""
    text = Path(constraints_file(release)).read_text()
    return [line.strip() for line in text.splitlines() if "==" in line and not line.lstrip().startswith("#")]


def as_dict() -> dict:
    """Machine-readable matrix: ``{release: {"transformers": ..., "pins": [...]}}`` (``trlshim table --json``)."""
    return {r: {"transformers": TESTED[r], "pins": pins(r)} for r in MATRIX}
