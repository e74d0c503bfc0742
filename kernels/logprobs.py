"""Per-token log-probabilities of an LM head, with their gradients made in the forward.

``linear_logprobs(h, W, targets)`` returns ``log p(target)`` for each row of ``h @ W.T (+ b)``, the entropy and
whether the target is the (first) argmax, without full-vocabulary logits: for each chunk of rows the logits go
into one buffer (cuBLAS), the row kernel of :mod:`.cross_entropy` folds them and overwrites them with
``softmax - onehot``, and the two gradient GEMMs run at once, accumulating in float32 (``grad_h``, and
``grad_W`` across chunks). A head that recomputes its logits in the backward runs four vocabulary-wide GEMMs;
this runs three.

Those gradients hold for an upstream gradient that is the same for every token (a sum or mean of the
log-probabilities: the usual SFT loss). The backward checks that (one device sync) and then only scales and
casts them. Any other upstream gradient - per-token weights, or a gradient through the entropy - gets the exact
gradient by recomputing the logits chunk by chunk with per-row weights, so the answer never depends on the guess.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import use_triton
from .cross_entropy import CHUNK_BYTES, _autocast_dtype, _row_kernel, default_chunk, logit_chunks

COUNTS = {"scaled": 0, "recomputed": 0}  # backward calls that used the forward's gradients / recomputed them
_MM_OUT_FP32 = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 8)


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` into a float32 ``acc`` without rounding the product to the inputs' dtype first."""
    if _MM_OUT_FP32 and acc.is_cuda and a.dtype in (torch.float16, torch.bfloat16):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a.float(), b.float())


def _scaled_cast(src: torch.Tensor, coef: torch.Tensor, dtype: torch.dtype, rows: int = 8192) -> torch.Tensor:
    """``(src * coef).to(dtype)`` a block of rows at a time: no float32 temporary the size of ``src``."""
    out = torch.empty(src.shape, dtype=dtype, device=src.device)
    for s in range(0, src.shape[0], rows):
        out[s:s + rows].copy_(src[s:s + rows] * coef)
    return out


def _chunks(h, W, bias, labels, chunk, softcap, scale, need, per_row=False, ent_grad=None):
    """One pass over the rows in chunks: logits, the row kernel, and (``need``) the gradient GEMMs in float32."""
    N, H = h.shape
    V = W.shape[0]
    need_h, need_w, need_b = need
    dev = h.device
    grad = need_h or need_w or need_b
    nll, ent = torch.empty(N, dtype=torch.float32, device=dev), torch.empty(N, dtype=torch.float32, device=dev)
    hit = torch.empty(N, dtype=torch.int32, device=dev)
    gh = torch.zeros((N, H), dtype=torch.float32, device=dev) if need_h else None
    gw = torch.zeros(W.shape, dtype=torch.float32, device=dev) if need_w else None
    gb = torch.zeros(V, dtype=torch.float32, device=dev) if need_b else None
    buf = torch.empty((min(chunk, N), V), dtype=h.dtype, device=dev)
    for s, e, hc, lg in logit_chunks(h, W, bias, buf):
        _row_kernel(lg, labels[s:e], scale[s:e] if per_row else scale, nll[s:e], hit[s:e], ent[s:e], -100,
                    softcap, grad, per_row=per_row, ent_grad=None if ent_grad is None else ent_grad[s:e])
        if need_h:
            _addmm_fp32(gh[s:e], lg, W)
        if need_w:
            _addmm_fp32(gw, lg.t(), hc)
        if need_b:
            gb += lg.sum(0, dtype=torch.float32)
    return (nll, hit, ent), (gh, gw, gb)


class LinearLogProbsFunction(torch.autograd.Function):
    """Inputs: h (N, H) contiguous, W (V, H), bias (V,) or None, targets (N,) in [0, V). Returns log-probs and
    entropy (float32, differentiable) and the top-1 hit (bool)."""

    @staticmethod
    def forward(ctx, h, W, bias, targets, softcap, chunk, cdt, grad_mode):
        need = tuple(n and grad_mode for n in ctx.needs_input_grad[:3])  # under no_grad: outputs only
        ctx.set_materialize_grads(False)
        # the gradients come back in the inputs' own dtypes, from float32 (float32 weights under bf16 autocast
        # get an unrounded gradient, as from TRL's head); the GEMMs run in the compute dtype
        ctx.dtypes = (h.dtype, W.dtype, None if bias is None else bias.dtype)
        h, W = h.to(cdt), W.to(cdt)
        bias = bias.to(cdt) if bias is not None else None
        if h.stride(-1) != 1 or h.stride(0) != h.shape[1]:
            h = h.contiguous()
        one = torch.ones((), dtype=torch.float32, device=h.device)
        (nll, hit, ent), grads = _chunks(h, W, bias, targets, chunk, softcap, one, need)
        ctx.save_for_backward(h, W, bias, targets, *(g for g in grads if g is not None))
        ctx.has = tuple(g is not None for g in grads)
        ctx.softcap, ctx.chunk = softcap, chunk
        is_top1 = hit.bool()
        ctx.mark_non_differentiable(is_top1)
        return nll.neg(), ent, is_top1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lp, g_ent, _):
        h, W, bias, targets, *made = ctx.saved_tensors
        it = iter(made)
        gh, gw, gb = (next(it) if has else None for has in ctx.has)
        if g_lp is None and g_ent is None:
            return None, None, None, None, None, None, None, None
        if g_lp is not None and g_lp.numel() == 0:
            coef = torch.zeros((), dtype=torch.float32, device=h.device)
        elif g_ent is None and bool((g_lp == g_lp[:1]).all()):  # one sync: the common, uniform case
            coef = -g_lp[:1].float().reshape(())  # d log p / dz = onehot - softmax = -(what the forward made)
            COUNTS["scaled"] += 1
        else:
            COUNTS["recomputed"] += 1  # per-token weights or an entropy gradient: recompute the logits with them, exactly
            coef = torch.ones((), dtype=torch.float32, device=h.device)
            per_row = (-g_lp.float() if g_lp is not None else torch.zeros(h.shape[0], device=h.device)).contiguous()
            _, (gh, gw, gb) = _chunks(h, W, bias, targets, ctx.chunk, ctx.softcap, per_row, ctx.has, per_row=True,
                                      ent_grad=None if g_ent is None else g_ent.float().contiguous())
        dh, dw, db = ctx.dtypes
        return (None if gh is None else _scaled_cast(gh, coef, dh),
                None if gw is None else _scaled_cast(gw, coef, dw),
                None if gb is None else _scaled_cast(gb, coef, db), None, None, None, None, None)


def linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    softcap: Optional[float] = None,
    chunk_size: Optional[int] = None,
):
    """``(log_probs, entropy, is_top1)`` per row of ``hidden @ weight.T (+ bias)`` (``softcap``: ``cap *
    tanh(logits / cap)``). ``hidden`` (N, H), ``targets`` (N,) all valid (no ignore index: select rows first).
    The gradients are made in the forward for a uniform upstream gradient; see the module docstring."""
    h = hidden
    if not use_triton(h, weight, bias) or h.dim() != 2 or targets.shape != h.shape[:1]:
        raise ValueError("linear_logprobs needs (N, H) rows on a device the Triton kernel runs on and (N,) targets")
    cdt = _autocast_dtype(h.device.type) or weight.dtype
    size = torch.finfo(cdt).bits // 8
    chunk = chunk_size or default_chunk(h.shape[0], weight.shape[0], size, budget=_tile_budget(weight, size))
    with torch.autocast(h.device.type, enabled=False):
        return LinearLogProbsFunction.apply(h, weight, bias, targets.to(h.device).long(), float(softcap or 0.0),
                                            int(chunk), cdt, torch.is_grad_enabled())


def _tile_budget(weight: torch.Tensor, size: int) -> int:
    """Bytes of one logits chunk: ``CHUNK_BYTES``, or, for a trained head, the size of its gradient in the
    compute dtype - the backward's cast allocates that much beside the float32 sum anyway, so a tile of that size
    leaves the head's peak where it was and halves the read-modify-writes of the float32 sum (H200: 2048 rows
    of a 128k vocabulary, 23 vs 25 ms; benchmarks/results.md)."""
    if not weight.requires_grad or not torch.is_grad_enabled():
        return CHUNK_BYTES
    return max(CHUNK_BYTES, weight.numel() * size)
