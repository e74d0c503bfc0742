"""LoRA projections as one autograd node each, and a LoRA gated MLP as one node that keeps only its input,
gate and up for backward.

Why: PEFT's LoRA forward is five to eight small ops per projection (base matmul, dropout, two adapter
matmuls, scale, add, float32 casts of the activations), each an autograd node. A 1B model at 4x2048 tokens
under gradient checkpointing runs every projection three times per step (forward, recompute, backward), and
the step is bound by the host issuing those ops (TRL 1.16 defaults, LoRA r16 on an H200: host 252 ms per
step against 153 ms of GPU work under the profiler). One node per projection issues the same GEMMs and
nothing else. The MLP node (gate, up, activation, down and their adapters) saves x, gate and up: the
activation's output, intermediate-size like gate and up and needed by down's adapter gradient, is recomputed
in backward by the kernel that writes the gate/up gradients over the saved gate/up (Unsloth's ``LoRA_MLP``
keeps the same three), so the layer's backward holds about half the intermediate-size buffers it did.

Numbers: ``y = x W^T + s (x A^T) B^T`` in the activation dtype, the scaled add fused into the second
GEMM (``addmm_``); adapters kept in float32 (PEFT's ``autocast_adapter_dtype``) are cast to the activation
dtype, as autocast would, and their gradients return in their own dtype. Frozen base weights get no
gradient; a base weight that requires grad gets one (same formula as autograd).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Optional, Sequence, Tuple

import torch

from ._common import use_triton
from .reference import geglu_ref, swiglu_ref
from .swiglu import check_expected, glu_backward_in_place, glu_forward, once

Adapter = Tuple[torch.Tensor, torch.Tensor, float]  # (A: r x in, B: out x r, scaling)


_CASTS: contextvars.ContextVar = contextvars.ContextVar("trlshim_kernels_lora_casts", default=None)
COUNTS = {"casts_reused": 0}


@contextlib.contextmanager
def reusing_casts(store: dict):
    """Within this scope, an adapter cast to the activation dtype is kept in ``store`` and reused by a later scope
    with the same store while the adapter is the same tensor at the same version. Offloaded checkpointing opens one
    store per layer call for its forward and its recompute (``offload.py``): the recompute, in the backward of the
    same micro-batch, reuses the forward's casts instead of issuing them again (two per projection, ~220 launches
    a step for a 16-layer model) - the LoRA step is bound by the host issuing its ops. An in-place update between
    them (an optimizer step bumps the version) makes a fresh cast."""
    token = _CASTS.set(store)
    try:
        yield store
    finally:
        _CASTS.reset(token)


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, reused from the current :func:`reusing_casts` store when it holds this tensor's cast."""
    if t.dtype == dtype:
        return t
    store = _CASTS.get()
    if store is None:
        return t.to(dtype)
    key = (id(t), dtype)
    hit = store.get(key)
    if hit is not None and hit[0] is t and hit[1] == t._version:
        COUNTS["casts_reused"] += 1
        return hit[2]
    out = t.to(dtype)
    store[key] = (t, t._version, out)
    return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _project(x2, w, bias, a, b, s):
    """``x2 W^T (+ bias) + s (x2 A^T) B^T`` and ``x2 A^T`` (kept for B's gradient)."""
    out = torch.mm(x2, w.t()) if bias is None else torch.addmm(bias, x2, w.t())
    xa = torch.mm(x2, a.t())
    out.addmm_(xa, b.t(), alpha=s)
    return out, xa


def _project_back(dy2, x2, w, a, b, xa, s, need):
    """Gradients of :func:`_project`: (dx, dW, dA, dB), each None where ``need`` says so; dx is made last so
    callers may add to it."""
    nx, nw, na, nb = need
    dyb = torch.mm(dy2, b)  # tokens x r
    dw = torch.mm(dy2.t(), x2) if nw else None
    da = torch.mm(dyb.t(), x2).mul_(s) if na else None
    db = torch.mm(dy2.t(), xa).mul_(s) if nb else None
    dx = torch.mm(dy2, w).addmm_(dyb, a, alpha=s) if nx else None
    return dx, dw, da, db


class LoRALinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, a, b, s):
        x2 = _rows(x)
        ac, bc = cast(a, x2.dtype), cast(b, x2.dtype)
        out, xa = _project(x2, w, None if bias is None else bias.to(x2.dtype), ac, bc, s)
        ctx.save_for_backward(x2, w, ac, bc, xa)
        ctx.s, ctx.dtypes, ctx.has_bias = s, (a.dtype, b.dtype, None if bias is None else bias.dtype), bias is not None
        return out.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x2, w, ac, bc, xa = ctx.saved_tensors
        nx, nw, nbias, na, nb = ctx.needs_input_grad[:5]
        dy2 = _rows(dy)
        dx, dw, da, db = _project_back(dy2, x2, w, ac, bc, xa, ctx.s, (nx, nw, na, nb))
        dbias = dy2.sum(0).to(ctx.dtypes[2]) if nbias else None
        return (None if dx is None else dx.view(*dy.shape[:-1], w.shape[1]), dw, dbias,
                None if da is None else da.to(ctx.dtypes[0]), None if db is None else db.to(ctx.dtypes[1]), None)


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], a: torch.Tensor,
                b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``x W^T + bias + scaling (x A^T) B^T`` in ``x``'s dtype, one autograd node (needs ``weight.dtype ==
    x.dtype``; adapters of any float dtype)."""
    return LoRALinearFunction.apply(x, weight, bias, a, b, float(scaling))


class LoRAGLUMLPFunction(torch.autograd.Function):
    """``down(act(gate(x)) * up(x))`` where each projection is a bias-free base weight plus a LoRA adapter."""

    @staticmethod
    def forward(ctx, x, wg, wu, wd, ag, bg, au, bu, ad, bd, scalings, gelu, expect=None):
        x2 = _rows(x)
        dt = x2.dtype
        ag_, bg_, au_, bu_, ad_, bd_ = (cast(t, dt) for t in (ag, bg, au, bu, ad, bd))
        sg, su, sd = scalings
        gate, xg = _project(x2, wg, None, ag_, bg_, sg)
        up, xu = _project(x2, wu, None, au_, bu_, su)
        c = glu_forward(gate, up, gelu)
        if expect is None:
            y, xd = _project(c, wd, None, ad_, bd_, sd)
        else:  # nobody reads the output (offload.mlp_output_unread): only down's adapter input is needed
            y, xd = x2.new_zeros(x2.shape[0], wd.shape[0]), torch.mm(c, ad_.t())
        ctx.save_for_backward(x2, wg, wu, wd, ag_, bg_, au_, bu_, ad_, bd_, gate, up, xg, xu, xd)
        ctx.scalings, ctx.gelu, ctx.expect = scalings, gelu, expect
        ctx.dtypes = tuple(t.dtype for t in (ag, bg, au, bu, ad, bd))
        return y.view(*x.shape[:-1], wd.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        once(ctx)
        x2, wg, wu, wd, ag, bg, au, bu, ad, bd, gate, up, xg, xu, xd = ctx.saved_tensors
        check_expected(dy, ctx.expect)
        sg, su, sd = ctx.scalings
        need = ctx.needs_input_grad
        dy2 = _rows(dy)
        dyb = torch.mm(dy2, bd)
        dbd = torch.mm(dy2.t(), xd).mul_(sd) if need[9] else None
        dc = torch.mm(dy2, wd).addmm_(dyb, ad, alpha=sd)
        glu_backward_in_place(dc, gate, up, ctx.gelu)  # gate <- d gate, up <- d up, dc <- act(gate) * up
        dad = torch.mm(dyb.t(), dc).mul_(sd) if need[8] else None
        dwd = torch.mm(dy2.t(), dc) if need[3] else None
        del dc, dyb
        dxg, dwg, dag, dbg = _project_back(gate, x2, wg, ag, bg, xg, sg, (need[0], need[1], need[4], need[5]))
        dxu, dwu, dau, dbu = _project_back(up, x2, wu, au, bu, xu, su, (need[0], need[2], need[6], need[7]))
        dx = None if dxg is None else dxg.add_(dxu).view(*dy.shape[:-1], x2.shape[1])
        grads = [dag, dbg, dau, dbu, dad, dbd]
        grads = [None if g is None else g.to(t) for g, t in zip(grads, ctx.dtypes)]
        return (dx, dwg, dwu, dwd, *grads, None, None, None)


def lora_glu_mlp(x: torch.Tensor, weights: Sequence[torch.Tensor], adapters: Sequence[Adapter],
                 gelu: bool = False, expect: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``down(act(gate(x)) * up(x))`` with LoRA on each projection: ``weights`` = (gate, up, down) base weights
    (bias-free, ``x``'s dtype), ``adapters`` = one (A, B, scaling) per projection. Without Triton: the same
    formula through autograd (:func:`lora_linear` and the torch reference activation). ``expect``: see
    ``swiglu.GLUMLPFunction`` (ignored without Triton)."""
    (wg, wu, wd), ((ag, bg, sg), (au, bu, su), (ad, bd, sd)) = weights, adapters
    if not use_triton(x, wg):
        act = geglu_ref if gelu else swiglu_ref
        h = act(lora_linear(x, wg, None, ag, bg, sg), lora_linear(x, wu, None, au, bu, su))
        return lora_linear(h, wd, None, ad, bd, sd)
    return LoRAGLUMLPFunction.apply(x, wg, wu, wd, ag, bg, au, bu, ad, bd,
                                    (float(sg), float(su), float(sd)), bool(gelu), expect)

