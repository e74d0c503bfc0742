"""Fused gated activations: SwiGLU ``silu(gate) * up`` and GeGLU ``gelu_tanh(gate) * up``.

One elementwise pass forward (float32 math, one rounding), one pass backward that recomputes
the activation from the saved ``gate``/``up`` instead of storing ``act(gate)``.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, jit, tl, triton, use_triton
from .reference import GELU_K0, GELU_K1, geglu_ref, swiglu_ref

BLOCK = 2048

if HAS_TRITON:

    @jit
    def _tanh(x):
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)

    @jit
    def _glu_fwd(A, B, C, n, GELU: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(A + offs, mask=m, other=0.0).to(tl.float32)
        b = tl.load(B + offs, mask=m, other=0.0).to(tl.float32)
        if GELU:
            act = 0.5 * a * (1.0 + _tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))
        else:
            act = a / (1.0 + tl.exp(-a))
        tl.store(C + offs, (act * b).to(C.dtype.element_ty), mask=m)

    @jit
    def _glu_bwd(DC, A, B, DA, DB, n, GELU: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        dc = tl.load(DC + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.load(A + offs, mask=m, other=0.0).to(tl.float32)
        b = tl.load(B + offs, mask=m, other=0.0).to(tl.float32)
        if GELU:
            th = _tanh(0.7978845608028654 * (a + 0.044715 * a * a * a))
            act = 0.5 * a * (1.0 + th)
            dact = 0.5 * (1.0 + th) + 0.5 * a * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 0.134145 * a * a)
        else:
            s = 1.0 / (1.0 + tl.exp(-a))
            act = a * s
            dact = s * (1.0 + a * (1.0 - s))
        tl.store(DA + offs, (dc * b * dact).to(DA.dtype.element_ty), mask=m)
        tl.store(DB + offs, (dc * act).to(DB.dtype.element_ty), mask=m)


class GLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, gelu):
        a, b = gate.contiguous(), up.contiguous()
        c = torch.empty_like(a)
        n = a.numel()
        if n:
            _glu_fwd[(triton.cdiv(n, BLOCK),)](a, b, c, n, GELU=gelu, BLOCK=BLOCK, num_warps=8)
        ctx.save_for_backward(a, b)
        ctx.gelu = gelu
        return c

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        dc = dc.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        if n:
            _glu_bwd[(triton.cdiv(n, BLOCK),)](dc, a, b, da, db, n, GELU=ctx.gelu, BLOCK=BLOCK, num_warps=8)
        return da, db, None


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` (Llama/Mistral/Qwen MLP), fused forward and backward."""
    if not use_triton(gate, up) or gate.shape != up.shape or gate.dtype != up.dtype:
        return swiglu_ref(gate, up)
    return GLUFunction.apply(gate, up, False)


def geglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(gate) * up`` (Gemma MLP), fused forward and backward."""
    if not use_triton(gate, up) or gate.shape != up.shape or gate.dtype != up.dtype:
        return geglu_ref(gate, up)
    return GLUFunction.apply(gate, up, True)


assert abs(3 * GELU_K1 - 0.134145) < 1e-12 and abs(GELU_K0 - 0.7978845608028654) < 1e-15
