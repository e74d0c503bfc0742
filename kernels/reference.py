"""Plain-torch reference implementations (the fallback path and the test oracle).

They follow the transformers formulas: RMSNorm in float32 then cast (Llama form rounds the
normalised value to the input dtype before the weight multiply; the Gemma form, ``offset=1``,
multiplies by ``offset + w`` in float32), rotary embedding via ``rotate_half``, SwiGLU/GeGLU,
and causal-LM cross-entropy with ``ignore_index`` and ``num_items_in_batch``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class CEStats(NamedTuple):
    """Per-call counters of the fused cross-entropy (0-d tensors, no host sync).

    ``n_correct``: non-ignored tokens whose argmax equals the label;
    ``entropy_sum``: sum of the predictive entropy over non-ignored tokens;
    ``n_tokens``: number of non-ignored tokens.
    """

    n_correct: torch.Tensor
    entropy_sum: torch.Tensor
    n_tokens: torch.Tensor


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0) -> torch.Tensor:
    xf = x.float() if x.dtype != torch.float64 else x
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if offset == 0.0:  # Llama / Qwen / Mistral
        return weight * y.to(x.dtype)
    w = weight.float() if weight.dtype != torch.float64 else weight  # Gemma
    return (y * (offset + w)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_ref(q, k, cos, sin, unsqueeze_dim: int = 1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def swiglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def geglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.gelu(gate, approximate="tanh") * up


def _denominator(labels, ignore_index, reduction, num_items_in_batch, like):
    if num_items_in_batch is not None:
        d = torch.as_tensor(num_items_in_batch, device=like.device, dtype=torch.float32)
    elif reduction == "mean":
        d = (labels != ignore_index).sum().to(torch.float32)
    elif reduction == "sum":
        d = torch.ones((), device=like.device, dtype=torch.float32)
    else:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return d


def linear_cross_entropy_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    softcap: Optional[float] = None,
):
    """Full-logits reference: returns ``(loss, CEStats)``. Loss = sum / denominator, where the
    denominator is ``num_items_in_batch`` if given, else the non-ignored count ("mean", 0 -> loss 0)
    or 1 ("sum")."""
    h = hidden.reshape(-1, hidden.shape[-1])
    logits = h @ weight.t()
    if bias is not None:
        logits = logits + bias
    logits = logits.float() if logits.dtype != torch.float64 else logits
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    lab = labels.reshape(-1)
    valid = lab != ignore_index
    ce = F.cross_entropy(logits, lab, ignore_index=ignore_index, reduction="sum")
    d = _denominator(lab, ignore_index, reduction, num_items_in_batch, logits).to(ce.dtype)
    loss = torch.where(d > 0, ce / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(ce))
    with torch.no_grad():
        logp = torch.log_softmax(logits, -1)
        ent = -(logp.exp() * logp).sum(-1)
        hit = (logits.argmax(-1) == lab) & valid
        stats = CEStats(hit.sum(), torch.where(valid, ent, torch.zeros_like(ent)).sum().float(), valid.sum())
    return loss, stats


GELU_K0 = math.sqrt(2.0 / math.pi)
GELU_K1 = 0.044715
