"""RMSNorm forward/backward in Triton.

``y = x / sqrt(mean(x^2) + eps)`` in float32. Llama form (``offset == 0``): ``w * y.to(x.dtype)``,
output dtype ``promote(w, x)`` as transformers gives. Gemma form (``offset != 0``, e.g. 1.0):
``(y * (offset + w)).to(x.dtype)``. Rows are processed in 2-D tiles of ``BLOCK_M`` rows; the
weight gradient is a two-stage reduction (each program keeps a float32 partial sum over its
``TPP`` row tiles, then one small ``sum`` over programs) - no atomics. The Llama form rounds where
transformers' op-by-op autograd rounds (``g * w`` and ``g * y`` in the output dtype), so bf16
training follows stock transformers' numbers, not only its formula. Launch configs come from the
H100 sweep recorded in benchmarks/results.md.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, jit, next_pow2, tl, triton, use_triton
from ._launch import launch
from .reference import rms_norm_ref

if HAS_TRITON:

    @jit(rows=("N",))
    def _rms_fwd(X, W, Y, RSTD, N, H, sx, sy, eps, offset,
                 GEMMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_H)
        rmask = rows < N
        cmask = cols < H
        mask = rmask[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)
        x = tl.load(X + r64[:, None] * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / H + eps)
        y = x * rstd[:, None]
        if GEMMA:
            out = y * (w + offset)[None, :]
        else:
            out = y.to(X.dtype.element_ty).to(tl.float32) * w[None, :]
        tl.store(Y + r64[:, None] * sy + cols[None, :], out.to(Y.dtype.element_ty), mask=mask)
        tl.store(RSTD + rows, rstd, mask=rmask)

    @jit(rows=("N",))
    def _rms_bwd(DY, X, W, RSTD, DX, DWP, N, H, sdy, sx, sdx, offset,
                 GEMMA: tl.constexpr, TPP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
        # program pid handles the TPP consecutive row tiles starting at pid * TPP
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_H)
        cmask = cols < H
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32) + offset
        dw = tl.zeros([BLOCK_H], dtype=tl.float32)
        for i in tl.static_range(TPP):
            rows = (pid * TPP + i) * BLOCK_M + tl.arange(0, BLOCK_M)
            rmask = rows < N
            mask = rmask[:, None] & cmask[None, :]
            r64 = rows.to(tl.int64)
            x = tl.load(X + r64[:, None] * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            g = tl.load(DY + r64[:, None] * sdy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
            y = x * rstd[:, None]
            if GEMMA:  # transformers computes this form in float32 throughout
                gw = g * w[None, :]
                gy = g * y
            else:  # w * y.to(x.dtype) is one op in the output dtype: its backward rounds both products
                gw = g * w[None, :]
                gw = gw.to(DY.dtype.element_ty).to(tl.float32)
                gy = g * y.to(X.dtype.element_ty).to(tl.float32)
                gy = gy.to(DY.dtype.element_ty).to(tl.float32)
            c = tl.sum(gw * y, axis=1) / H
            dx = (gw - y * c[:, None]) * rstd[:, None]
            tl.store(DX + r64[:, None] * sdx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
            dw += tl.sum(gy, axis=0)
        tl.store(DWP + pid.to(tl.int64) * H + cols, dw, mask=cmask)


# Launch configs; benchmarks/bench_gpu.py sweeps them (TUNE overrides: {"fwd": (bm, warps), "bwd": (bm, warps, tpp)}).
TUNE = {}


def _fwd_cfg(H: int):
    if "fwd" in TUNE:
        return TUNE["fwd"]
    bh = next_pow2(H)
    bm = max(1, min(16, 4096 // bh))
    return bm, (4 if bh * bm <= 2048 else (8 if bh * bm <= 8192 else 16))


def _bwd_cfg(H: int, N: int):
    if "bwd" in TUNE:
        return TUNE["bwd"]
    bh = next_pow2(H)
    bm = max(1, min(16, 8192 // bh))  # H=2048: 4 rows x 2 tiles a program, 8 warps (best of the sweep)
    return bm, (4 if bh * bm <= 2048 else (8 if bh * bm <= 8192 else 16)), 2


def forward_launch(x2, weight, y, rstd, N, H, sx, sy, eps, offset, go=launch):
    """The forward kernel's launch (``go=_launch.warm`` compiles it only; tensors may then be dtypes)."""
    bm, warps = _fwd_cfg(H)
    go(_rms_fwd, (triton.cdiv(N, bm),))(x2, weight, y, rstd, N, H, sx, sy, eps, offset, GEMMA=offset != 0.0,
                                        BLOCK_M=bm, BLOCK_H=next_pow2(H), num_warps=warps)


def _bwd_grid(H: int, N: int) -> int:
    bm, _, tpp = _bwd_cfg(H, N)
    return max(1, triton.cdiv(N, bm * tpp))


def backward_launch(dy2, x2, weight, rstd, dx, partial, N, H, sdy, sx, sdx, offset, go=launch):
    bm, warps, tpp = _bwd_cfg(H, N)
    go(_rms_bwd, (_bwd_grid(H, N),))(dy2, x2, weight, rstd, dx, partial, N, H, sdy, sx, sdx, offset,
                                     GEMMA=offset != 0.0, TPP=tpp, BLOCK_M=bm, BLOCK_H=next_pow2(H),
                                     num_warps=warps)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, offset):
        shape = x.shape
        H = shape[-1]
        x2 = x.reshape(-1, H)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        N = x2.shape[0]
        gemma = offset != 0.0
        out_dtype = x.dtype if gemma else torch.promote_types(weight.dtype, x.dtype)
        y = torch.empty((N, H), dtype=out_dtype, device=x.device)
        rstd = torch.empty(N, dtype=torch.float32, device=x.device)
        if N > 0:
            forward_launch(x2, weight, y, rstd, N, H, x2.stride(0), y.stride(0), eps, offset)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.offset = offset
        ctx.shape = shape
        return y.view(*shape[:-1], H)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        N, H = x2.shape
        dy2 = dy.reshape(-1, H)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty_like(x2)
        partial = torch.empty((_bwd_grid(H, N), H), dtype=torch.float32, device=x2.device)
        backward_launch(dy2, x2, weight, rstd, dx, partial, N, H, dy2.stride(0), x2.stride(0), dx.stride(0),
                        ctx.offset)
        dw = partial.sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        return dx.view(ctx.shape), dw, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0) -> torch.Tensor:
    """RMSNorm over the last dim (Llama form for ``offset=0``, Gemma ``(1 + w)`` form for ``offset=1``).

    Uses the Triton kernel on CUDA (or under ``TRITON_INTERPRET=1``), else the torch reference."""
    if not use_triton(x, weight):
        return rms_norm_ref(x, weight, eps, offset)
    return RMSNormFunction.apply(x, weight, float(eps), float(offset))
