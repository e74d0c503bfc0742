"""Route a transformers causal-LM *instance* through our kernels, reversibly.

``apply_to_model(model)`` changes instance attributes only (never classes or module globals of
transformers), records every original and ``handle.undo()`` puts each one back (``is``-identical):

* RMSNorm: each ``*RMSNorm`` module gets an instance ``forward`` calling :func:`rms_norm` with the
  module's own ``weight`` Parameter (Gemma classes use the ``1 + w`` form).
* SwiGLU/GeGLU: each ``*MLP`` module with ``gate_proj/up_proj/down_proj`` gets
  ``down_proj(glu(gate_proj(x), up_proj(x)))``; the projections are called as submodules, so
  LoRA-wrapped projections keep working.
* Fused linear cross-entropy: the causal LM's ``forward`` is wrapped. Without ``labels`` it is the
  original forward, untouched. With ``labels`` it runs the original forward with ``labels=None``
  while the ``lm_head`` call is intercepted (its input is captured and a zero-width tensor is
  returned, so no full logits are made), then computes the loss with
  :func:`fused_linear_cross_entropy` from the captured hidden states and ``lm_head.weight``,
  shifting labels as HF ``ForCausalLMLoss`` does (or using a ``shift_labels`` kwarg), honouring
  ``num_items_in_batch``, ``logits_to_keep`` (applied by the original forward) and
  ``config.final_logit_softcapping``. It returns the same output class with ``logits=None``.
  Token-accuracy / entropy counters of the last such call are on ``output.kernel_stats``, on
  ``handle.last_stats`` and via ``last_stats(model)`` (a :class:`CEStats` of 0-d tensors:
  ``n_correct``, ``entropy_sum``, ``n_tokens``; mean accuracy = n_correct / n_tokens).
* RoPE: not routed (``rope=True`` only records a reason in ``handle.skipped``). Transformers calls
  ``apply_rotary_pos_emb`` as a module-level function from inside each attention forward; an
  instance-level route needs either rebinding that module global (forbidden here) or re-implementing
  every attention forward, whose signature and cache/mask handling changed across 4.46 -> 5.x.
  :func:`apply_rotary` is available for direct use.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch.nn.functional as F
from torch import nn

from .cross_entropy import _autocast_dtype, fused_linear_cross_entropy
from .reference import CEStats
from .rms_norm import rms_norm
from .swiglu import geglu, glu_mlp, swiglu

_SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
_ATTR = "_trlshim_kernels_handle"
_MISSING = object()


def supported_model_types() -> Tuple[str, ...]:
    """``config.model_type`` values that :func:`apply_to_model` accepts."""
    return _SUPPORTED


@dataclass
class KernelHandle:
    """What :func:`apply_to_model` did. ``applied``: counts per kernel; ``skipped``: kernel -> reason."""

    model: nn.Module = field(repr=False)
    applied: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    last_stats: Optional[CEStats] = None
    _saved: List[Tuple[Any, str, Any]] = field(default_factory=list, repr=False)

    def _set(self, obj, name, value):
        self._saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
        obj.__dict__[name] = value

    @property
    def active(self) -> bool:
        return bool(self._saved)

    def undo(self) -> None:
        """Restore every replaced attribute (idempotent)."""
        while self._saved:
            obj, name, old = self._saved.pop()
            if old is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                obj.__dict__[name] = old


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model inside PEFT (``PeftModel.get_base_model()``) or other thin wrappers."""
    m = model
    for _ in range(4):
        inner = m.get_base_model() if hasattr(m, "get_base_model") else getattr(m, "module", None)
        if not isinstance(inner, nn.Module) or inner is m:
            break
        m = inner
    return m


def last_stats(model: nn.Module) -> Optional[CEStats]:
    """Counters of the last fused-CE forward of ``model`` (or its PEFT wrapper), else None."""
    h = unwrap_model(model).__dict__.get(_ATTR)
    return h.last_stats if h is not None else None


def _norm_forward(mod, offset):
    eps = getattr(mod, "variance_epsilon", None)
    if eps is None:
        eps = getattr(mod, "eps", 1e-6)

    def forward(hidden_states, *args, **kwargs):
        return rms_norm(hidden_states, mod.weight, eps, offset)

    return forward


def _plain_linear(m) -> bool:
    return (type(m) is nn.Linear and m.bias is None and "forward" not in m.__dict__
            and not m._forward_hooks and not m._forward_pre_hooks)


def _mlp_forward(mod, fn):
    gelu = fn is geglu

    def forward(x, *args, **kwargs):
        g, u, d = mod.gate_proj, mod.up_proj, mod.down_proj
        if (_plain_linear(g) and _plain_linear(u) and _plain_linear(d) and x.dtype == g.weight.dtype
                and _autocast_dtype(x.device.type) is None):
            # full fine-tuning: fused MLP, recomputes the activation output in backward (less memory)
            return glu_mlp(x, g.weight, u.weight, d.weight, gelu)
        return d(fn(g(x), u(x)))  # LoRA / quantised / hooked projections: call the submodules

    return forward


def _glu_for(config):
    act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    if act in ("silu", "swish"):
        return swiglu
    if act in ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new", "gelu_fast"):
        return geglu
    return None


def _find(arguments, sig, name):
    if name in arguments and name in sig.parameters and sig.parameters[name].kind != inspect.Parameter.VAR_KEYWORD:
        return arguments[name]
    for p in sig.parameters.values():
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            return arguments.get(p.name, {}).get(name)
    return None


def _ce_forward(lm, orig, handle, softcap):
    sig = inspect.signature(orig)
    head = lm.get_output_embeddings()

    @functools.wraps(orig)
    def forward(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return orig(*args, **kwargs)
        labels = bound.arguments.get("labels")
        if labels is None or type(head) is not nn.Linear or "labels" not in sig.parameters:
            return orig(*args, **kwargs)
        num_items = _find(bound.arguments, sig, "num_items_in_batch")
        shift_labels = _find(bound.arguments, sig, "shift_labels")
        ignore_index = _find(bound.arguments, sig, "ignore_index")
        bound.arguments["labels"] = None
        captured = []

        def capture(x, *a, **k):
            captured.append(x)
            return x.new_empty(*x.shape[:-1], 0)

        old = head.__dict__.get("forward", _MISSING)
        head.__dict__["forward"] = capture
        try:
            out = orig(*bound.args, **bound.kwargs)
        finally:
            if old is _MISSING:
                head.__dict__.pop("forward", None)
            else:
                head.__dict__["forward"] = old
        if not captured:  # the forward did not go through lm_head: cannot fuse
            bound.arguments["labels"] = labels
            return orig(*bound.args, **bound.kwargs)
        hidden = captured[-1]
        ii = -100 if ignore_index is None else int(ignore_index)
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=ii)[..., 1:]
        loss, stats = fused_linear_cross_entropy(
            hidden, head.weight, shift_labels.to(hidden.device), head.bias, ignore_index=ii,
            reduction="mean", num_items_in_batch=num_items, softcap=softcap, return_stats=True)
        handle.last_stats = stats
        if isinstance(out, tuple):
            return (loss,) + tuple(out[1:])
        fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
        new = type(out)(loss=loss, logits=None, **fields)
        new.kernel_stats = stats
        return new

    return forward


def apply_to_model(model: nn.Module, *, rms_norm: bool = True, rope: bool = False, swiglu: bool = True,
                   fused_linear_cross_entropy: bool = True) -> KernelHandle:
    """Patch a transformers causal-LM instance (optionally PEFT-wrapped) in place; see module doc.

    Raises ``ValueError`` for unsupported ``config.model_type`` and ``RuntimeError`` if the model is
    already patched (call ``handle.undo()`` first)."""
    lm = unwrap_model(model)
    cfg = getattr(lm, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in _SUPPORTED:
        raise ValueError(f"model_type {mtype!r} not supported; supported: {_SUPPORTED}")
    prev = lm.__dict__.get(_ATTR)
    if prev is not None and prev.active:
        raise RuntimeError("trlshim_kernels already applied to this model; call handle.undo() first")
    handle = KernelHandle(model=lm)
    flags = {"rms_norm": rms_norm, "swiglu": swiglu}
    glu = _glu_for(cfg)
    for mod in lm.modules():
        name = type(mod).__name__
        if flags["rms_norm"] and name.endswith("RMSNorm") and isinstance(getattr(mod, "weight", None), nn.Parameter):
            handle._set(mod, "forward", _norm_forward(mod, 1.0 if name.startswith("Gemma") else 0.0))
            handle.applied["rms_norm"] = handle.applied.get("rms_norm", 0) + 1
        elif (flags["swiglu"] and name.endswith("MLP") and glu is not None
              and all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj"))
              and getattr(cfg, "pretraining_tp", 1) <= 1):
            handle._set(mod, "forward", _mlp_forward(mod, glu))
            handle.applied["swiglu"] = handle.applied.get("swiglu", 0) + 1
    if swiglu and glu is None:
        handle.skipped["swiglu"] = f"activation {getattr(cfg, 'hidden_act', None)!r} has no fused kernel"
    if rope:
        handle.skipped["rope"] = ("not routed at instance level: transformers calls the module-level "
                                  "apply_rotary_pos_emb inside attention forward (see trlshim_kernels.models doc)")
    if fused_linear_cross_entropy:
        head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
        if head is None:
            handle.skipped["fused_linear_cross_entropy"] = "model has no output embeddings (lm_head)"
        else:
            softcap = getattr(cfg, "final_logit_softcapping", None)
            handle._set(lm, "forward", _ce_forward(lm, lm.forward, handle, softcap))
            handle.applied["fused_linear_cross_entropy"] = 1
    handle._set(lm, _ATTR, handle)
    return handle
