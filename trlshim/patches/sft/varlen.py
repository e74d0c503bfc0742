"""Variable-length attention for padding-free rows without flash-attn (trlshim's ``trlshim_varlen``).

Why: padding-free batching (one flattened row, ``position_ids`` restarting per example) pays only with a
variable-length attention kernel. transformers has one only through the flash-attn package, which a
pip-installed stack lacks; with its default SDPA it builds a block-diagonal mask and runs slower than padding.
PyTorch itself ships FlashAttention-2's variable-length kernel as ``torch.nn.attention.varlen.varlen_attn``
(torch >= 2.10, CUDA). This module registers it with transformers' attention registries (``AttentionInterface``
and ``AttentionMaskInterface``, transformers >= 4.53) under :data:`NAME`; the auto padding-free step
(``packing.py``) switches a model to it for the length of ``train()`` only (:class:`SwitchDuringTraining`),
so generation and evaluation outside training keep the model's own attention.

Sequence boundaries come from TRL's collator where it sends them (``cu_seq_lens_q``, TRL >= 1.x, computed on
CPU: no device sync), else from ``position_ids`` (one computation per forward, shared by the layers), else from
the 2-D padding mask. Where the kernel cannot run (CPU tensors, no varlen kernel in this torch, dropout, a
KV cache) the same boundaries go through a per-sequence SDPA reference, so the numbers never depend on the path.
"""
from __future__ import annotations

import functools
import inspect
import weakref

from ..common.callbacks import Callback

NAME = "trlshim_varlen"
MIN_CAPABILITY = (8, 0)  # FlashAttention-2 kernels: Ampere and newer


def kernel():
    """torch's variable-length flash kernel, or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def registries():
    """(AttentionInterface, AttentionMaskInterface) of this transformers, or None before 4.53."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask  # noqa: F401
    except ImportError:
        return None
    return AttentionInterface, AttentionMaskInterface


def unusable_reason(model) -> str | None:
    """Why the varlen path cannot serve this model here (None: it can). Decided before training, from
    what is installed and the model's config - never by trying and catching an error."""
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return "the model has no parameters to place"
    missing = environment_reason(device)
    if missing is not None:
        return missing
    config = getattr(model, "config", None)
    if getattr(config, "attention_dropout", 0.0):
        return f"attention_dropout={config.attention_dropout} (the kernel has no dropout)"
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return f"sliding_window={config.sliding_window}"
    for name in ("attn_logit_softcapping", "attention_logit_softcapping"):
        if getattr(config, name, None):
            return f"{name}={getattr(config, name)}"
    return None


def environment_reason(device=None) -> str | None:
    """Why this torch/transformers/device has no usable variable-length kernel (None: it has one).
    ``device``: the model's; None asks about the first CUDA device (``trlshim doctor``)."""
    import torch

    if kernel() is None:
        return f"torch {torch.__version__} has no variable-length attention kernel (torch.nn.attention.varlen)"
    if not {"is_causal", "window_size"} & _params(kernel()):
        return "this torch's variable-length kernel has no causal mode"
    if registries() is None:
        return "this transformers has no AttentionInterface/AttentionMaskInterface to register one"
    if device is None:
        if not torch.cuda.is_available():
            return "no CUDA device (the variable-length kernel is CUDA's)"
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        return f"the model is on {device.type} (the variable-length kernel is CUDA's)"
    if torch.cuda.get_device_capability(device) < MIN_CAPABILITY:
        return f"GPU capability {torch.cuda.get_device_capability(device)} < {MIN_CAPABILITY} (no FlashAttention-2)"
    return None


def register() -> None:
    """Make :data:`NAME` a valid ``attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, attention_forward)
    # The flash mask: None when nothing is padded (boundaries then come from position_ids), else the 2-D mask.
    AttentionMaskInterface.register(NAME, flash_attention_mask)


def unregister() -> None:
    found = registries()
    if found is None:
        return
    for registry in found:
        registry._global_mapping.pop(NAME, None)


class SwitchDuringTraining(Callback):
    """A TrainerCallback (duck-typed: the Trainer calls its hooks by name) that sets the model's attention to
    :data:`NAME` when training begins and restores the model's own when it ends. ``train()`` may end by an
    exception (a user's callback, an interrupt) without ``on_train_end``: :meth:`around_train` restores it then."""

    def __init__(self, model):
        self.config = model.config
        self.original = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.config._attn_implementation != NAME:
            self.original = self.config._attn_implementation
            _set(self.config, NAME)

    def on_train_end(self, args=None, state=None, control=None, **kwargs):
        if self.original is not None and self.config._attn_implementation == NAME:
            _set(self.config, self.original)
        self.original = None

    def around_train(self, trainer) -> None:
        """Wrap the trainer instance's ``train`` so the model's attention is restored however it ends."""
        train = trainer.train

        @functools.wraps(train)
        def restoring_train(*args, **kwargs):
            try:
                return train(*args, **kwargs)
            finally:
                self.on_train_end()

        trainer.train = restoring_train


def _set(config, name: str) -> None:
    config._attn_implementation = name
    for sub in getattr(config, "sub_configs", {}) or {}:
        child = getattr(config, sub, None)
        if child is not None and hasattr(child, "_attn_implementation"):
            child._attn_implementation = name


# -- the attention function ------------------------------------------------------------------------------

_BOUNDARIES: dict = {"ref": None, "value": None}


def boundaries_from_positions(position_ids):
    """(cu_seqlens int32, max_len) of a flattened row: a sequence starts wherever ``position_ids`` is 0."""
    import torch

    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        starts = torch.cat([torch.zeros(1, dtype=starts.dtype, device=starts.device), starts])
    cu = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    return cu, int(cu.diff().max())


def _cached_boundaries(position_ids):
    """One computation per forward: every layer gets the same position_ids object."""
    ref = _BOUNDARIES["ref"]
    if ref is not None and ref() is position_ids:
        return _BOUNDARIES["value"]
    value = boundaries_from_positions(position_ids)
    _BOUNDARIES["ref"], _BOUNDARIES["value"] = weakref.ref(position_ids), value
    return value


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                      softcap=None, **kwargs):
    """transformers' attention signature: q ``[B, H, L, D]``, k/v ``[B, Hkv, S, D]``; returns ``[B, L, H, D]``."""
    import torch

    b, h, q_len, d = query.shape
    kv_len = key.shape[2]
    if sliding_window is not None or softcap is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError(f"{NAME}: sliding windows, soft-capping and sinks are not supported "
                                  "(trlshim does not select this path for such models)")
    if q_len != kv_len:  # a KV cache (generation): plain masked SDPA over the cached keys
        return _cached_sdpa(query, key, value, attention_mask, scaling), None
    indices = None
    if attention_mask is not None:  # padding present: unpad by the 2-D mask
        if attention_mask.dim() != 2:
            raise NotImplementedError(f"{NAME}: a {attention_mask.dim()}-D attention mask")
        mask = attention_mask.bool()
        indices = mask.reshape(-1).nonzero().flatten()
        lengths = mask.sum(-1, dtype=torch.int32)
        cu = _cumsum0(lengths)
        max_len = int(lengths.max())
    elif kwargs.get("cu_seq_lens_q") is not None and b == 1:  # TRL's collator computed them on CPU
        cu = kwargs["cu_seq_lens_q"].to(device=query.device, dtype=torch.int32, non_blocking=True)
        max_len = int(kwargs.get("max_length_q") or int(cu.diff().max()))
    elif kwargs.get("position_ids") is not None:
        cu, max_len = _cached_boundaries(kwargs["position_ids"])
        cu = cu.to(query.device)
    else:  # whole rows, each one causal sequence
        cu = torch.arange(0, (b + 1) * q_len, q_len, dtype=torch.int32, device=query.device)
        max_len = q_len
    q, k, v = (t.transpose(1, 2).reshape(-1, t.shape[1], d) for t in (query, key, value))  # [B*L, heads, D]
    if indices is not None:
        q, k, v = q[indices], k[indices], v[indices]
    out = _varlen(q, k, v, cu, max_len, scaling, dropout if module.training else 0.0)
    if indices is not None:
        full = out.new_zeros(b * q_len, h, d)
        full[indices] = out
        out = full
    return out.reshape(b, q_len, h, d), None


def _cumsum0(lengths):
    import torch

    return torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


_PARAMS: dict = {}


def _params(fn) -> frozenset:
    """The kernel's keyword parameters: they changed between torch releases (2.10: ``is_causal``; 2.12+:
    ``window_size=(-1, 0)`` for causal, ``scale``, ``enable_gqa``)."""
    if fn not in _PARAMS:
        _PARAMS[fn] = frozenset(inspect.signature(fn).parameters)
    return _PARAMS[fn]


def _varlen(q, k, v, cu, max_len, scale, dropout):
    """Packed ``[T, H, D]`` attention, causal within each ``cu`` segment."""
    fn = kernel()
    if fn is None or not q.is_cuda or dropout:
        return reference(q, k, v, cu, scale, dropout)
    params, extra = _params(fn), {}
    if "is_causal" in params:
        extra["is_causal"] = True
    else:
        extra["window_size"] = (-1, 0)
    if scale is not None:
        if "scale" in params:
            extra["scale"] = scale
        else:  # the kernel's own scale is 1/sqrt(D)
            q = q * (scale * q.shape[-1] ** 0.5)
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    return fn(q, k, v, cu, cu, max_len, max_len, **extra)


def reference(q, k, v, cu, scale, dropout=0.0):
    """The same attention, one SDPA call per sequence (CPU, or no varlen kernel)."""
    import torch
    import torch.nn.functional as F

    out = torch.empty_like(q)
    groups = q.shape[1] // k.shape[1]
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))  # [heads, n, D]
        if groups > 1:
            ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
        out[s:e] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale,
                                                  dropout_p=dropout).transpose(0, 1)
    return out


def _cached_sdpa(query, key, value, attention_mask, scale):
    """Queries are the last ``L`` of ``S`` positions; a 2-D mask marks the real keys."""
    import torch
    import torch.nn.functional as F

    q_len, kv_len = query.shape[2], key.shape[2]
    i = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
    allowed = torch.arange(kv_len, device=query.device)[None, :] <= i  # [L, S]
    if attention_mask is not None and attention_mask.dim() == 2:
        allowed = allowed[None, None] & attention_mask.bool()[:, None, None, -kv_len:]
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scale).transpose(1, 2)
