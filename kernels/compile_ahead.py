"""Compile the kernels a routed model will launch before its first step, in background threads.

Why: on a machine whose Triton cache is empty (a fresh container, a new Triton) every kernel compiles at its
first launch, one after another inside the first training step - ~7 s on an H200 host for a routed Llama, more
than the rest of a short run's start. Everything a launch specialises on is known once a model is routed: the
dtypes, the hidden/intermediate/head sizes, the vocabulary, which kernels were applied. Row counts (which change
with every batch) are compiled unspecialised (``jit(rows=...)``), so one variant serves every batch.

``precompile(handle)`` builds that plan (:func:`plan`: each entry is a kernel's own launch function called with
``go=_launch.warm``, so the plan and the real launch pass the same arguments by construction) and compiles it
on a few threads, one kernel per task (Triton's per-kernel caches are filled by one thread each). The first real
launch of a kernel still compiling waits for its task (:func:`._launch.launch`) instead of compiling it twice;
a task that fails leaves the launch to compile as before. Nothing runs on the device, nothing changes a result.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import _launch
from ._common import HAS_TRITON, INTERPRET
from .cross_entropy import row_launch
from .rms_norm import backward_launch as rms_backward
from .rms_norm import forward_launch as rms_forward
from .rope import kernel_launch as rope_launch
from .swiglu import backward_launch as glu_backward
from .swiglu import forward_launch as glu_forward

STAND_IN_ROWS = 4096  # any row count: the kernels compile row counts unspecialised (jit(rows=...))
STATS = {"planned": 0, "compiled": 0, "failed": 0, "error": None}
_STATS_LOCK = threading.Lock()

FIRST_USE = ("_rms_fwd", "_rope_kernel", "_glu_fwd", "_ce_rows", "_glu_bwd", "_rms_bwd")  # a step's launch order
Entry = Tuple[str, object, tuple, dict]  # (kernel's name, launch function, args, kwargs)


def _dtypes(handle, autocast_dtype) -> Tuple[List[torch.dtype], List[torch.dtype]]:
    """(dtypes the residual stream / norms may see, dtypes the projections' outputs may have)."""
    lm = handle.model
    sizes: Dict[torch.dtype, int] = {}
    for p in lm.parameters():  # by elements: PEFT's float32 adapters outnumber the base weights as tensors
        if p.is_floating_point():
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel()
    param = max(sizes, key=sizes.get) if sizes else torch.float32
    compute = autocast_dtype if autocast_dtype is not None and param == torch.float32 else param
    return sorted({param, compute}, key=str), [compute]


def _norms(lm):
    seen = set()
    for mod in lm.modules():
        name = type(mod).__name__
        w = getattr(mod, "weight", None)
        if name.endswith("RMSNorm") and "forward" in mod.__dict__ and isinstance(w, torch.nn.Parameter):
            seen.add((int(w.shape[-1]), w.dtype, 1.0 if name.startswith("Gemma") else 0.0))
    return sorted(seen, key=str)


def plan(handle, autocast_dtype: Optional[torch.dtype] = None) -> List[Entry]:
    """The kernel launches a training step of the routed model makes, as ``(name, launch, args, kwargs)``:
    ``launch(*args, go=_launch.warm, **kwargs)`` compiles one (tensors given as their dtypes)."""
    from .models import _glu_for, geglu

    lm = handle.model  # apply_to_model's handle holds the transformers model itself (PEFT unwrapped)
    cfg = getattr(lm, "config", None)
    applied = handle.applied
    stream, compute = _dtypes(handle, autocast_dtype)
    acts = sorted(set(stream) | set(compute), key=str)
    f32, i64, i32 = torch.float32, torch.int64, torch.int32
    N = STAND_IN_ROWS
    out: List[Entry] = []
    if "rms_norm" in applied:
        for H, wdt, offset in _norms(lm):
            for x in stream:
                y = x if offset else torch.promote_types(wdt, x)
                out.append(("_rms_fwd", rms_forward, (x, wdt, y, f32, N, H, H, H, 1e-6, offset), {}))
                out.append(("_rms_bwd", rms_backward, (y, x, wdt, f32, x, f32, N, H, H, H, H, offset), {}))
    if "rope" in applied and cfg is not None:
        hq = int(cfg.num_attention_heads)
        hk = int(getattr(cfg, "num_key_value_heads", None) or hq)
        d = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // hq)
        strides = (N * hq * d, d, hq * d, N * hk * d, d, hk * d, N * hq * d, d, hq * d, N * hk * d, d, hk * d, N * d, d)
        for q in compute:
            for c in acts:
                for backward in (False, True):
                    out.append(("_rope_kernel", rope_launch, (q, q, q, q, c, c, 1, N, hq, hk, d, strides, backward), {}))
    if "swiglu" in applied and cfg is not None and _glu_for(cfg) is not None:
        gelu = _glu_for(cfg) is geglu
        inter = int(cfg.intermediate_size)
        for n in ((N * inter,) if inter % 16 == 0 else (N * inter, (N + 1) * inter)):  # n = rows x inter
            for a in compute:
                out.append(("_glu_fwd", glu_forward, (a, a, a, n, gelu), {}))
                for store_c in (False, True):  # the node's backward / the offloaded recompute's
                    out.append(("_glu_bwd", glu_backward, (a, a, a, a, a, a, n, gelu, store_c), {}))
    if "fused_linear_cross_entropy" in applied or "logprob_head" in applied:
        head = lm.get_output_embeddings()
        V = int(head.weight.shape[0])
        softcap = getattr(cfg, "final_logit_softcapping", None)
        for lg in compute:
            for grad in (True, False):
                out.append(("_ce_rows", row_launch,
                            (N, V, True, lg, V, i64, f32, f32, i32, f32, -100, softcap, grad), {}))
    return sorted(out, key=lambda e: FIRST_USE.index(e[0]))  # stable: a forward kernel's task starts first


def _compile(device, entries: Sequence[Entry], ready=None) -> int:
    if device is not None:
        torch.cuda.set_device(device)  # Triton keys its per-kernel caches on the thread's current device
    if ready is not None:
        try:
            ready.result()
        except Exception:
            pass
    done = 0
    for _, fn, args, kwargs in entries:
        try:
            fn(*args, go=_launch.warm, **kwargs)
            done += 1
        except Exception as e:  # this variant compiles at its first launch instead
            with _STATS_LOCK:
                STATS["failed"] += 1
                STATS["error"] = STATS["error"] or f"{type(e).__name__}: {e}"
    with _STATS_LOCK:
        STATS["compiled"] += done
    return done


def start(groups: Dict[object, List[Entry]], device=None, threads: Optional[int] = None,
          setup=None) -> Tuple[int, int]:
    """Compile each kernel's entries on a pool of threads; a kernel's first launch waits for its task.
    ``setup()`` runs first, once, before any task goes on (the Triton driver's lazily built helpers).
    Returns ``(variants, threads)``."""
    if not groups:
        return 0, 0
    n = threads or max(1, min(len(groups) + (setup is not None), 8, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="trlshim-precompile")
    ready = pool.submit(setup) if setup is not None else None
    with _launch._LOCK:
        for kernel, entries in groups.items():
            _launch._PENDING[kernel] = pool.submit(_compile, device, entries, ready)
    pool.shutdown(wait=False)
    variants = sum(len(e) for e in groups.values())
    with _STATS_LOCK:
        STATS["planned"] += variants
    return variants, n


def grouped(handle, autocast_dtype: Optional[torch.dtype] = None) -> Dict[object, List[Entry]]:
    """:func:`plan` by kernel (one compile task each)."""
    from .cross_entropy import _ce_rows
    from .rms_norm import _rms_bwd, _rms_fwd
    from .rope import _rope_kernel
    from .swiglu import _glu_bwd, _glu_fwd

    kernels = {"_rms_fwd": _rms_fwd, "_rms_bwd": _rms_bwd, "_rope_kernel": _rope_kernel, "_glu_fwd": _glu_fwd,
               "_glu_bwd": _glu_bwd, "_ce_rows": _ce_rows}
    groups: Dict[object, List[Entry]] = {}
    for entry in plan(handle, autocast_dtype):
        groups.setdefault(kernels[entry[0]], []).append(entry)
    return groups


def precompile(handle, *, autocast_dtype: Optional[torch.dtype] = None, threads: Optional[int] = None):
    """Start compiling :func:`plan` for a routed model on CUDA; returns ``(variants, threads)``, or None when
    there is nothing to do (no Triton, the interpreter, a model not on CUDA, nothing routed)."""
    if not HAS_TRITON or INTERPRET:
        return None
    device = next((p.device for p in handle.model.parameters()), None)
    if device is None or device.type != "cuda":
        return None
    groups = grouped(handle, autocast_dtype)
    if not groups:
        return None
    import triton

    driver = triton.runtime.driver.active
    driver.get_current_target()  # the driver's lazy set-up, once, before the threads
    # its host helpers (compiled with the host compiler on a cold cache) are built once, by the first task
    return start(groups, device, threads, setup=lambda: getattr(driver, "utils", None))
