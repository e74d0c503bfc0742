"""Shared helpers: optional Triton import and the decision "Triton kernel or torch reference".

Triton is optional. A kernel runs when the tensor is on CUDA, or on CPU under Triton's
interpreter (``TRITON_INTERPRET=1``, which must be set before this package is imported);
otherwise the plain-torch reference in :mod:`trlshim_kernels.reference` is used.
"""
from __future__ import annotations

import os

import torch

from ._launch import ROWS

try:  # pragma: no cover - depends on the environment
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install
    triton = None
    tl = None
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """Whether kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` when this package was imported)."""
    return INTERPRET


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when every tensor can go through a Triton kernel."""
    if not HAS_TRITON:
        return False
    for t in tensors:
        if t is None:
            continue
        if not (t.is_cuda or (INTERPRET and t.device.type == "cpu")):
            return False
        if t.is_floating_point() and t.dtype not in _FLOAT_DTYPES:
            return False
    return True


def next_pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def jit(fn=None, *, rows=()):
    """``triton.jit`` when Triton is importable, else the function unchanged (never called).

    ``rows``: arguments that change with every batch and only bound masks or the grid (a row count): compiled
    unspecialised, so one variant serves every batch (Triton would otherwise compile again whenever the count
    turns divisible by 16 or not, in the middle of training) and :mod:`.compile_ahead` can compile it in advance."""
    if fn is None:
        return lambda f: jit(f, rows=rows)
    if not HAS_TRITON:
        return fn
    if not rows:
        return triton.jit(fn)
    kernel = triton.jit(fn, do_not_specialize=list(rows))
    ROWS[kernel] = frozenset(rows)
    return kernel
