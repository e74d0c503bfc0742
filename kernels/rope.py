"""Rotary position embedding applied to q and k in one launch (HF ``apply_rotary_pos_emb``).

``out = x * cos + rotate_half(x) * sin`` with q ``(B, Hq, T, D)``, k ``(B, Hkv, T, D)`` (any
strides on B/H/T, unit stride on D) and cos/sin ``(B or 1, T, D)`` as transformers' rotary
module returns them from ``position_ids`` - so packed rows with per-example positions work.
Products are rounded to the tensor dtype before they are added, as transformers' op-by-op
formula (and its autograd backward) rounds them.
One program per (batch, position) handles every q and k head. Backward is the transposed
rotation (same kernel, sin halves swapped and negated). cos/sin get no gradient.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, jit, next_pow2, tl, use_triton
from ._launch import launch
from .reference import rope_ref

if HAS_TRITON:

    @jit
    def _rnd(x, OUT):
        return x.to(OUT.dtype.element_ty).to(tl.float32)

    @jit
    def _rot_heads(X, OUT, base_x, base_o, sxh, soh, nh, c1, c2, s1, s2, d, dm,
                   HALF: tl.constexpr, BLOCK_H: tl.constexpr):
        h = tl.arange(0, BLOCK_H)
        m = (h < nh)[:, None] & dm[None, :]
        px = X + base_x + h[:, None].to(tl.int64) * sxh + d[None, :]
        po = OUT + base_o + h[:, None].to(tl.int64) * soh + d[None, :]
        x1 = tl.load(px, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(px + HALF, mask=m, other=0.0).to(tl.float32)
        # transformers: q * cos + rotate_half(q) * sin, each op rounded to q's dtype; rounding each
        # (exact in float32) product the same way gives its numbers, not only its formula
        o1 = _rnd(x1 * c1[None, :], OUT) + _rnd(-(x2 * s1[None, :]), OUT)
        o2 = _rnd(x2 * c2[None, :], OUT) + _rnd(x1 * s2[None, :], OUT)
        tl.store(po, o1.to(OUT.dtype.element_ty), mask=m)
        tl.store(po + HALF, o2.to(OUT.dtype.element_ty), mask=m)

    @jit(rows=("T",))
    def _rope_kernel(Q, K, QO, KO, C, S, T, Hq, Hk,
                     sqb, sqh, sqt, skb, skh, skt, sob, soh, sot, sko_b, sko_h, sko_t, scb, sct,
                     BACKWARD: tl.constexpr, HALF: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        b = pid // T
        t = pid % T
        d = tl.arange(0, BLOCK_D)
        dm = d < HALF
        cb = C + b * scb + t * sct
        sb = S + b * scb + t * sct
        c1 = tl.load(cb + d, mask=dm, other=0.0).to(tl.float32)
        c2 = tl.load(cb + HALF + d, mask=dm, other=0.0).to(tl.float32)
        s1 = tl.load(sb + d, mask=dm, other=0.0).to(tl.float32)
        s2 = tl.load(sb + HALF + d, mask=dm, other=0.0).to(tl.float32)
        if BACKWARD:  # transpose of the rotation
            tmp = s1
            s1 = -s2
            s2 = -tmp
        _rot_heads(Q, QO, b * sqb + t * sqt, b * sob + t * sot, sqh, soh, Hq, c1, c2, s1, s2, d, dm,
                   HALF, BLOCK_HQ)
        _rot_heads(K, KO, b * skb + t * skt, b * sko_b + t * sko_t, skh, sko_h, Hk, c1, c2, s1, s2, d, dm,
                   HALF, BLOCK_HK)


def _launch(q, k, cos, sin, backward):
    B, Hq, T, D = q.shape
    Hk = k.shape[1]
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    if q.numel() == 0:
        return qo, ko
    scb = 0 if cos.shape[0] == 1 else cos.stride(0)
    kernel_launch(q, k, qo, ko, cos, sin, B, T, Hq, Hk, D,
                  (*q.stride()[:3], *k.stride()[:3], *qo.stride()[:3], *ko.stride()[:3], scb, cos.stride(1)), backward)
    return qo, ko


def kernel_launch(q, k, qo, ko, cos, sin, B, T, Hq, Hk, D, strides, backward, go=launch):
    """The kernel's launch (``go=_launch.warm`` compiles only; tensors may then be dtypes)."""
    half = D // 2
    bh = max(next_pow2(Hq), next_pow2(Hk))
    warps = 4 if bh * next_pow2(half) <= 2048 else 8
    go(_rope_kernel, (B * T,))(q, k, qo, ko, cos, sin, T, Hq, Hk, *strides,
                               BACKWARD=backward, HALF=half, BLOCK_D=next_pow2(half),
                               BLOCK_HQ=next_pow2(Hq), BLOCK_HK=next_pow2(Hk), num_warps=warps,
                               enable_fp_fusion=False)  # else LLVM fuses a product into the add (one rounding, not two)


def _unit_d(x):
    return x if x.stride(-1) == 1 else x.contiguous()


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        cos, sin = _unit_d(cos.contiguous()), _unit_d(sin.contiguous())
        ctx.save_for_backward(cos, sin)
        ctx.hq, ctx.hk = q.shape[1], k.shape[1]
        return _launch(_unit_d(q), _unit_d(k), cos, sin, False)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq = _unit_d(dq) if dq is not None else None
        dk = _unit_d(dk) if dk is not None else None
        if dq is None or dk is None:  # one output unused: feed zeros
            ref = dq if dq is not None else dk
            B, _, T, D = ref.shape
            dq = dq if dq is not None else ref.new_zeros((B, ctx.hq, T, D))
            dk = dk if dk is not None else ref.new_zeros((B, ctx.hk, T, D))
        gq, gk = _launch(dq, dk, cos, sin, True)
        return gq, gk, None, None


def rotary_supported(q, k, cos, sin, unsqueeze_dim: int = 1) -> bool:
    """True when :func:`apply_rotary` runs our kernel for these arguments (else it uses the reference)."""
    return (unsqueeze_dim == 1 and q.dim() == 4 and k.dim() == 4 and cos.dim() == 3 and q.shape[-1] % 2 == 0
            and cos.shape == sin.shape and cos.shape[-1] == q.shape[-1] and k.shape[-1] == q.shape[-1]
            and cos.shape[1] == q.shape[2] and k.shape[2] == q.shape[2] and k.shape[0] == q.shape[0]
            and cos.shape[0] in (1, q.shape[0]) and q.dtype == k.dtype and use_triton(q, k, cos, sin))


def apply_rotary(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Drop-in for HF ``apply_rotary_pos_emb(q, k, cos, sin)`` for the (B, H, T, D) layout."""
    if not rotary_supported(q, k, cos, sin, unsqueeze_dim):
        return rope_ref(q, k, cos, sin, unsqueeze_dim)
    return RotaryFunction.apply(q, k, cos, sin)
