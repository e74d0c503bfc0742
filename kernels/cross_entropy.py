"""Fused LM-head + cross-entropy without full-vocabulary logits.

For each chunk of tokens: ``logits = h_c @ W^T`` (cuBLAS, input dtype with float32 accumulate,
into one reused buffer), then a Triton kernel does a two-pass online softmax per row (loss,
argmax hit, entropy) and overwrites the logits with ``(softmax - onehot) * scale`` (times the
soft-cap derivative), then ``grad_h_c = G @ W`` and ``grad_W += G^T @ h_c``. All gradients are
made during the forward; backward only multiplies them by ``grad_output`` (in place, so the
graph may be backpropagated once; a grad_output of exactly 1 skips the multiply). Peak extra memory: one logits chunk (default <= 256 MiB) +
the gradient buffers. The per-row kernel also gives the argmax-hit count and entropy sum so a
trainer can log token accuracy and entropy without logits.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import HAS_TRITON, jit, next_pow2, tl, use_triton
from ._launch import launch
from .reference import CEStats, linear_cross_entropy_ref

CHUNK_BYTES = 256 * 2**20  # bound on one chunk of logits; benchmarks/results.md has the sweep
TUNE = {}  # {"block_v": int, "warps": int} overrides, for benchmarks/bench_gpu.py

if HAS_TRITON:

    @jit
    def _softcap(x, cap):
        return cap * (1.0 - 2.0 / (tl.exp(tl.minimum(2.0 * x / cap, 80.0)) + 1.0))

    @jit
    def _ce_rows(L, sl, LAB, SCALE, LOSS, HIT, ENT, V, ignore_index, cap, EG,
                 SOFTCAP: tl.constexpr, GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
                 PER_ROW: tl.constexpr = False, ENT_GRAD: tl.constexpr = False):
        # GRAD overwrites the row with coef * (softmax - onehot) [+ the entropy's gradient times EG[row]];
        # coef is SCALE[0], or SCALE[row] with PER_ROW (per-token weights: logprobs.py's exact backward)
        row = tl.program_id(0).to(tl.int64)
        base = L + row * sl
        label = tl.load(LAB + row).to(tl.int64)
        valid = label != ignore_index
        cols = tl.arange(0, BLOCK_V)
        m = float("-inf")
        s = 0.0
        t = 0.0
        best = float("-inf")
        best_i = -1
        for off in range(0, V, BLOCK_V):
            idx = off + cols
            mk = idx < V
            z = tl.load(base + idx, mask=mk, other=float("-inf")).to(tl.float32)
            if SOFTCAP:
                z = tl.where(mk, _softcap(z, cap), float("-inf"))
            bm = tl.max(z, axis=0)
            bi = tl.argmax(z, axis=0)
            new_m = tl.maximum(m, bm)
            e = tl.exp(z - new_m)
            alpha = tl.exp(m - new_m)
            s = s * alpha + tl.sum(e, axis=0)
            t = t * alpha + tl.sum(e * tl.where(mk, z, 0.0), axis=0)
            best_i = tl.where(bm > best, off + bi, best_i)
            best = tl.maximum(best, bm)
            m = new_m
        lse = m + tl.log(s)
        zl = tl.load(base + tl.where(valid, label, 0)).to(tl.float32)
        if SOFTCAP:
            zl = _softcap(zl, cap)
        tl.store(LOSS + row, tl.where(valid, lse - zl, 0.0))
        tl.store(ENT + row, tl.where(valid, lse - t / s, 0.0))
        tl.store(HIT + row, (valid & (best_i == label)).to(tl.int32))
        if GRAD:
            if PER_ROW:
                coef = tl.where(valid, tl.load(SCALE + row).to(tl.float32), 0.0)
            else:
                coef = tl.where(valid, tl.load(SCALE).to(tl.float32), 0.0)
            if ENT_GRAD:
                ge = tl.where(valid, tl.load(EG + row).to(tl.float32), 0.0)
                ent = lse - t / s
            for off in range(0, V, BLOCK_V):
                idx = off + cols
                mk = idx < V
                z = tl.load(base + idx, mask=mk, other=0.0).to(tl.float32)
                if SOFTCAP:
                    z = _softcap(z, cap)
                p = tl.exp(z - lse)
                g = (p - (idx == label).to(tl.float32)) * coef
                if ENT_GRAD:  # d entropy / dz_j = -p_j (log p_j + entropy)
                    g = g - ge * p * (z - lse + ent)
                if SOFTCAP:
                    th = z / cap
                    g = g * (1.0 - th * th)
                tl.store(base + idx, g.to(L.dtype.element_ty), mask=mk)


def _row_kernel(logits, labels, scale, loss, hit, ent, ignore_index, softcap, grad, per_row=False, ent_grad=None):
    n, V = logits.shape
    row_launch(n, V, logits.is_cuda, logits, logits.stride(0), labels, scale, loss, hit, ent, ignore_index, softcap,
               grad, per_row, ent_grad)


def row_launch(n, V, cuda, logits, sl, labels, scale, loss, hit, ent, ignore_index, softcap, grad, per_row=False,
               ent_grad=None, go=launch):
    """The row kernel's launch (``go=_launch.warm`` compiles only; tensors may then be dtypes)."""
    bv = min(next_pow2(V), TUNE.get("block_v", 4096 if cuda else 1024))
    go(_ce_rows, (n,))(logits, sl, labels, scale, loss, hit, ent, V, ignore_index,
                       float(softcap or 1.0), scale if ent_grad is None else ent_grad, SOFTCAP=bool(softcap), GRAD=grad,
                       BLOCK_V=bv, PER_ROW=per_row, ENT_GRAD=ent_grad is not None,
                       num_warps=TUNE.get("warps", 8 if bv >= 4096 else 4))


def logit_chunks(h, W, bias, buf):
    """``(start, end, rows of h, their logits)`` for each chunk of ``buf``'s height: ``h_c @ W^T (+ bias)`` into
    the one reused buffer (cuBLAS, the inputs' dtype with float32 accumulation)."""
    chunk = max(1, buf.shape[0])  # no rows: no chunk
    for s in range(0, h.shape[0], chunk):
        e = min(h.shape[0], s + chunk)
        hc, lg = h[s:e], buf[: e - s]
        if bias is None:
            torch.mm(hc, W.t(), out=lg)
        else:
            torch.addmm(bias, hc, W.t(), out=lg)
        yield s, e, hc, lg


class FusedLinearCEFunction(torch.autograd.Function):
    """Inputs: h (N, H) contiguous, W (V, H), bias (V,) or None, labels (N,), scale (0-d float32:
    1/denominator, or 0). Returns loss (float32) and three non-differentiable stats tensors."""

    @staticmethod
    def forward(ctx, h, W, bias, labels, scale, ignore_index, softcap, chunk):
        N, H = h.shape
        V = W.shape[0]
        dev = h.device
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad = need_h or need_w or need_b
        loss_rows = torch.empty(N, dtype=torch.float32, device=dev)
        ent = torch.empty(N, dtype=torch.float32, device=dev)
        hit = torch.empty(N, dtype=torch.int32, device=dev)
        gh = torch.empty_like(h) if need_h else None
        gw = (torch.empty_like(W) if N else torch.zeros_like(W)) if need_w else None
        gb = torch.zeros(V, dtype=torch.float32, device=dev) if need_b else None
        buf = torch.empty((min(chunk, N), V), dtype=h.dtype, device=dev)
        for s, e, hc, lg in logit_chunks(h, W, bias, buf):
            _row_kernel(lg, labels[s:e], scale, loss_rows[s:e], hit[s:e], ent[s:e], ignore_index, softcap, grad)
            if need_h:
                torch.mm(lg, W, out=gh[s:e])
            if need_w:
                if s == 0:
                    torch.mm(lg.t(), hc, out=gw)
                else:
                    gw.addmm_(lg.t(), hc)
            if need_b:
                gb += lg.sum(0, dtype=torch.float32)
        del buf
        loss = loss_rows.sum() * scale
        stats = (hit.sum(), ent.sum(), (labels != ignore_index).sum())
        ctx.mark_non_differentiable(*stats)
        ctx.save_for_backward(gh, gw, gb)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return (loss, *stats)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dloss, *_):
        gh, gw, gb = ctx.saved_tensors
        # the usual grad_output is exactly 1: skip two full passes over grad_W/grad_h (costs one sync)
        if not bool((dloss == 1).all()):
            if gh is not None:
                gh.mul_(dloss)
            if gw is not None:
                gw.mul_(dloss)
        if gb is not None:
            gb = (gb * dloss).to(ctx.bias_dtype)
        return gh, gw, gb, None, None, None, None, None


def _autocast_dtype(device_type: str):
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # older torch: no device argument
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


def default_chunk(n_tokens: int, vocab: int, elem_size: int, budget: int = CHUNK_BYTES) -> int:
    """Tokens per chunk: the fewest equal chunks whose logits stay within ``budget`` bytes (rounded up
    to a multiple of 64 rows). Fewer chunks = fewer read-modify-writes of the bf16 grad_W buffer."""
    row = max(1, vocab * elem_size)
    n_chunks = max(1, -(-n_tokens * row // budget))
    c = -(-n_tokens // n_chunks)
    if c >= 64:
        c = -(-c // 64) * 64
    return max(1, min(n_tokens, c))


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
    return_stats: bool = False,
):
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels`` (already aligned: no shift).

    ``hidden`` (..., H), ``labels`` (...) with the same leading shape. The loss is
    ``sum(CE over non-ignored) / d`` where ``d`` is ``num_items_in_batch`` if given (int or tensor,
    as transformers passes it for gradient accumulation), else the non-ignored count for
    ``reduction="mean"`` (0 items -> loss 0) or 1 for ``"sum"``. ``softcap`` applies
    ``softcap * tanh(logits / softcap)``. With ``return_stats=True`` returns ``(loss, CEStats)``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    H = hidden.shape[-1]
    h = hidden.reshape(-1, H)
    lab = labels.reshape(-1).to(h.device)
    if lab.shape[0] != h.shape[0]:
        raise ValueError(f"{h.shape[0]} hidden rows but {lab.shape[0]} labels")
    if not use_triton(h, weight, bias):
        loss, stats = linear_cross_entropy_ref(h, weight, lab, bias, ignore_index=ignore_index, reduction=reduction,
                                               num_items_in_batch=num_items_in_batch, softcap=softcap)
        return (loss, stats) if return_stats else loss
    cdt = _autocast_dtype(h.device.type) or weight.dtype
    h = h.to(cdt)
    w = weight.to(cdt)
    b = bias.to(cdt) if bias is not None else None
    if h.stride(-1) != 1 or h.stride(0) != H:
        h = h.contiguous()
    with torch.no_grad():
        if num_items_in_batch is not None:
            d = torch.as_tensor(num_items_in_batch, device=h.device).to(torch.float32)
        elif reduction == "mean":
            d = (lab != ignore_index).sum().to(torch.float32)
        else:
            d = torch.ones((), dtype=torch.float32, device=h.device)
        scale = torch.where(d > 0, 1.0 / d, torch.zeros_like(d)).reshape(())
    chunk = chunk_size or default_chunk(h.shape[0], w.shape[0], h.element_size())
    with torch.autocast(h.device.type, enabled=False):
        loss, n_correct, ent_sum, n_tok = FusedLinearCEFunction.apply(
            h, w, b, lab, scale, int(ignore_index), float(softcap) if softcap else 0.0, int(chunk))
    return (loss, CEStats(n_correct, ent_sum, n_tok)) if return_stats else loss
