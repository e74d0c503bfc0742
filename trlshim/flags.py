"""trlshim's environment switches, read in one place (no imports: the bottom of the package).

``TRLSHIM_DISABLE``, ``TRLSHIM_STRICT``, ``TRLSHIM_KERNELS``, ``TRLSHIM_KERNELS_ROPE``,
``TRLSHIM_KERNELS_ON_CPU``, ``TRLSHIM_KERNELS_HEAD``, ``TRLSHIM_KERNELS_PRECOMPILE``, ``TRLSHIM_AUTO_PADDING_FREE``,
``TRLSHIM_OFFLOAD_CHECKPOINTS``, ``TRLSHIM_OFFLOAD_MLP_CHUNKS``, ``TRLSHIM_KEEP_TAIL_ACTIVATIONS``,
``TRLSHIM_FAST_BOOKKEEPING``: ``1/true/yes/on`` and ``0/false/no/off``
(any case); unset or empty is None, and so is anything else (the caller's default applies).
``TRLSHIM_WRITTEN_FOR`` is a release (read by ``patches/common/written_for.py``).
"""
from __future__ import annotations

import os
from typing import Optional

ON = frozenset({"1", "true", "yes", "on"})
OFF = frozenset({"0", "false", "no", "off"})


# ``trlshim.patch(written_for=...)``: the release a script was written for (None: ``TRLSHIM_WRITTEN_FOR`` decides).
written_for = {"release": None}


def flag(name: str) -> Optional[bool]:
    """True / False when ``name`` is set to an on / off spelling, else None."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in ON else False if value in OFF else None
