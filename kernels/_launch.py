"""The one way this package launches a Triton kernel: ``launch(kernel, grid)(*args, **constexprs)``.

Why not ``kernel[grid](...)`` directly: :mod:`.compile_ahead` compiles the kernels a routed model will call in
background threads, and the first launch of a kernel still compiling there must wait for it rather than
compile it a second time; and the tests record what each launch specialises on (``recording()``) to check
that the precompile plan covers what a training step really runs. Both cost one dict check per launch.

``warm(kernel, grid)`` is the same call compiling only (``JITFunction.warmup``: torch dtypes stand for
tensors, nothing runs on the device), then loading the binary and building its launcher.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Dict, List, Optional

import torch

_PENDING: Dict[Any, Any] = {}  # kernel -> Future of its precompile task (compile_ahead.py)
_RECORDS: Optional[List[tuple]] = None  # launches' signatures, while recording() is active (tests)
_LOCK = threading.Lock()
WAITED = {"s": 0.0}  # seconds launches spent waiting for their kernel's precompile task
ROWS: Dict[Any, frozenset] = {}  # kernel -> names of its arguments compiled unspecialised (jit(rows=...))


def wait_for(kernel) -> None:
    """Block until ``kernel``'s precompile task (if any) has finished; its errors stay with the task."""
    with _LOCK:
        fut = _PENDING.pop(kernel, None)
        if fut is None and all(f.done() for f in _PENDING.values()):
            _PENDING.clear()  # finished tasks of kernels not launched (yet): back to the one-check path
    if fut is not None:
        t = time.perf_counter()
        try:
            fut.result(timeout=600)
        except Exception:  # a failed or slow precompile: the launch compiles as it always did
            pass
        WAITED["s"] += time.perf_counter() - t


def launch(kernel, grid):
    if _PENDING:
        wait_for(kernel)
    if _RECORDS is not None:
        def record(*args, **kwargs):
            _RECORDS.append(signature(kernel, args, kwargs))
            return kernel[grid](*args, **kwargs)
        return record
    return kernel[grid]


def warm(kernel, grid):
    def compile_only(*args, **kwargs):
        compiled = kernel.warmup(*args, grid=grid, **kwargs)
        # and what Triton otherwise does at the first launch: load the binary, build the launcher (Triton <= 3.6
        # compiles a C launcher per signature with the host compiler: ~0.5 s each on a cold cache)
        init = getattr(compiled, "_init_handles", None)
        if init is not None:
            init()
        return compiled
    return compile_only


@contextlib.contextmanager
def recording():
    """Collect ``signature(...)`` of every launch in this block (single-threaded tests)."""
    global _RECORDS
    prev, _RECORDS = _RECORDS, []
    try:
        yield _RECORDS
    finally:
        _RECORDS = prev


def _arg_class(value, unspecialised: bool):
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.Tensor):
        return str(value.dtype)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        wide = not -2**31 <= value < 2**31
        # Triton specialises an int on ==1 and on divisibility by 16 (unless told not to)
        return ("i64" if wide else "i32",) + (() if unspecialised else (value == 1, value % 16 == 0))
    if isinstance(value, float):
        return "fp32"
    return repr(value)


def signature(kernel, args, kwargs) -> tuple:
    """What Triton keys a compiled variant on, as far as it can be read from the arguments: each tensor's
    dtype, each int's width and (unless unspecialised) ==1 / divisible-by-16, and the constexprs/options."""
    names = getattr(kernel, "arg_names", None) or [f"#{i}" for i in range(len(args))]
    rows = ROWS.get(kernel, frozenset())
    fn = getattr(kernel, "fn", kernel)
    cls = tuple(_arg_class(a, n in rows) for n, a in zip(names, args))
    return (getattr(fn, "__name__", repr(fn)), cls, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
