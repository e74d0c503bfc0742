"""Route a transformers causal-LM *instance* through our kernels, reversibly.

``apply_to_model(model)`` changes instance attributes only (never classes or module globals of
transformers), records every original and ``handle.undo()`` puts each one back (``is``-identical):

* RMSNorm: each ``*RMSNorm`` module gets an instance ``forward`` calling :func:`rms_norm` with the
  module's own ``weight`` Parameter (Gemma classes use the ``1 + w`` form).
* SwiGLU/GeGLU: each ``*MLP`` module with ``gate_proj/up_proj/down_proj`` gets
  ``down_proj(glu(gate_proj(x), up_proj(x)))`` as one autograd node that saves x, gate and up only
  (:func:`glu_mlp`: plain Linear projections; :func:`lora_glu_mlp`: a plain LoRA adapter on each of the
  three, with ``lora=True``), when the weights are in ``x``'s dtype and autocast, if on, is to that dtype
  (the Trainer's ``bf16=True`` runs the forward under autocast: it would cast nothing). Otherwise the
  projections are called as submodules (quantised, hooked, mixed-dtype), so they keep working.
* Fused linear cross-entropy: the causal LM's ``forward`` is wrapped. Without ``labels``, or in
  eval mode (``model.eval()``: evaluation and prediction may need the logits), it is the original
  forward, untouched. With ``labels`` it runs the original forward with ``labels=None``
  while the ``lm_head`` call is intercepted (its input is captured and a zero-width tensor is
  returned, so no full logits are made), then computes the loss with
  :func:`fused_linear_cross_entropy` from the captured hidden states and ``lm_head.weight``,
  shifting labels as HF ``ForCausalLMLoss`` does (or using a ``shift_labels`` kwarg), honouring
  ``num_items_in_batch``, ``logits_to_keep`` (applied by the original forward) and
  ``config.final_logit_softcapping``. It returns the same output class with ``logits=None``.
  Token-accuracy / entropy counters of the last such call are on ``output.kernel_stats``, on
  ``handle.last_stats`` and via ``last_stats(model)`` (a :class:`CEStats` of 0-d tensors:
  ``n_correct``, ``entropy_sum``, ``n_tokens``; mean accuracy = n_correct / n_tokens).
* LoRA (PEFT ``lora.Linear``, plain adapters only): each such module gets an instance ``forward``
  computing ``out = base(x)`` then ``out.addmm_(x @ A^T, B^T, alpha=scaling)`` in the base output's
  dtype (one autograd node, :func:`lora_linear`, when the base weight is in ``x``'s dtype): the adapter's
  scale-and-add is fused into the second GEMM's epilogue, and PEFT's float32 detour
  (``autocast_adapter_dtype`` keeps A/B in float32, so PEFT casts x to float32, saves that copy
  for backward and adds a float32 product into the bf16 output) is gone; A and B are cast to the
  output dtype (as autocast does), their gradients flow back in their own dtype. Anything else
  (dropout, DoRA/variants, several active adapters, merged/disabled adapters, extra call arguments,
  non-plain base layers) calls PEFT's own forward.
* RoPE: transformers calls the module-level ``apply_rotary_pos_emb`` from inside each attention
  forward, so this package cannot route it through the instance alone and never rebinds that global.
  ``rope=True`` wraps each attention module's ``forward`` (instance attribute) so that it runs inside
  :func:`rope_scope`; a router installed on the module global by the caller (trlshim's registry rows,
  or ``routed_rotary(orig)`` in a script) sends calls made inside that scope to :func:`apply_rotary`
  via :func:`route_rotary` and every other call - other models, unsupported shapes (partial rotary
  dims, other layouts), tensors Triton cannot take - to the original function unchanged. The scope is
  set by the attention forward itself, so gradient-checkpointing recomputation is routed too.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._common import use_triton
from .cross_entropy import _autocast_dtype, fused_linear_cross_entropy
from .lora import lora_glu_mlp, lora_linear
from .offload import mlp_backward_now, mlp_output_unread
from .reference import CEStats
from .rms_norm import rms_norm
from .rope import RotaryFunction, rotary_supported
from .swiglu import geglu, glu_mlp, swiglu

# Which one-node LoRA paths are taken (benchmarks switch them to weigh each against the composed ops).
ROUTE = {"lora_linear": True, "lora_mlp": True, "skip_unread": True}
_SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
_ATTR = "_trlshim_kernels_handle"
_MISSING = object()
_log = logging.getLogger("trlshim_kernels")


def supported_model_types() -> Tuple[str, ...]:
    """``config.model_type`` values that :func:`apply_to_model` accepts."""
    return _SUPPORTED


@dataclass
class KernelHandle:
    """What :func:`apply_to_model` did. ``applied``: counts per kernel; ``skipped``: kernel -> reason;
    ``fallbacks``: kernel -> why a call at run time went to the model's own code instead (e.g. the head
    became sharded after routing), logged once per reason on the ``trlshim_kernels`` logger."""

    model: nn.Module = field(repr=False)
    applied: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    fallbacks: Dict[str, str] = field(default_factory=dict)
    last_stats: Optional[CEStats] = None
    _saved: List[Tuple[Any, str, Any]] = field(default_factory=list, repr=False)
    _undo: List[Any] = field(default_factory=list, repr=False)

    def _set(self, obj, name, value):
        self._saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
        obj.__dict__[name] = value

    def replace(self, obj, name: str, value) -> None:
        """Set the instance attribute ``obj.name`` (e.g. a forward wrapping the routed one); ``undo()``
        restores what was there, in reverse order with everything else this handle changed."""
        self._set(obj, name, value)

    def fell_back(self, kernel: str, reason: str) -> None:
        if self.fallbacks.get(kernel) != reason:
            self.fallbacks[kernel] = reason
            _log.warning("trlshim_kernels: %s not used for this call: %s", kernel, reason)

    def on_undo(self, fn) -> None:
        """Run ``fn()`` at ``undo()`` (before the replaced attributes are restored), e.g. the undo of
        :func:`offload_checkpoints`."""
        self._undo.append(fn)

    @property
    def active(self) -> bool:
        return bool(self._saved) or bool(self._undo)

    def undo(self) -> None:
        """Restore every replaced attribute (idempotent)."""
        while self._undo:
            self._undo.pop()()
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


def _mlp_forward(mod, fn, lora: bool = True):
    gelu = fn is geglu

    def forward(x, *args, **kwargs):
        if args or kwargs:
            return compute(x)
        now = mlp_backward_now(mod, compute, x)  # inside an offloaded layer's recompute: chunked, at once (opt-in)
        if now is not None:
            return now
        return compute(x, ROUTE["skip_unread"])

    def compute(x, unread=False):
        g, u, d = mod.gate_proj, mod.up_proj, mod.down_proj

        def expect(w):  # in an offloaded recompute nobody reads our output: skip making it (offload.py)
            return mlp_output_unread(mod, x) if unread and use_triton(x, w) else None

        if _same_dtype_under_autocast(x):  # autocast (the Trainer's bf16=True) would cast nothing here
            if (_plain_linear(g) and _plain_linear(u) and _plain_linear(d)
                    and x.dtype == g.weight.dtype == u.weight.dtype == d.weight.dtype):
                # full fine-tuning: fused MLP, recomputes the activation output in backward (less memory)
                return glu_mlp(x, g.weight, u.weight, d.weight, gelu, expect(g.weight))
            parts = [_lora_parts(p, x) for p in (g, u, d)] if lora and ROUTE["lora_mlp"] else [None]
            if all(p is not None and p[0].bias is None for p in parts):
                # LoRA on all three: one node, keeps x/gate/up only (the activation output is recomputed)
                return lora_glu_mlp(x, [p[0].weight for p in parts], [p[1:] for p in parts], gelu,
                                    expect(parts[0][0].weight))
        return d(fn(g(x), u(x)))  # quantised / hooked / mixed-dtype projections: call the submodules

    return forward


def _lora_fusable(mod):
    if mod.disable_adapters or mod.merged:
        return None
    act = mod.active_adapters
    if len(act) != 1:
        return None
    name = act[0]
    if name not in mod.lora_A or name in (getattr(mod, "lora_variant", None) or {}):
        return None
    if (getattr(mod, "use_dora", None) or {}).get(name) or type(mod.lora_dropout[name]) is not nn.Identity:
        return None
    base, a, b = mod.base_layer, mod.lora_A[name], mod.lora_B[name]
    if not (_plain_linear(a) and _plain_linear(b) and type(base) is nn.Linear and "forward" not in base.__dict__
            and not base._forward_hooks and not base._forward_pre_hooks):
        return None
    if a._forward_hooks or b._forward_hooks or mod.lora_dropout[name]._forward_hooks:
        return None
    return base, a.weight, b.weight, mod.scaling[name]


def _same_dtype_under_autocast(x) -> bool:
    """No autocast, or autocast to ``x``'s own dtype (where it casts no tensor of that dtype)."""
    cdt = _autocast_dtype(x.device.type)
    return cdt is None or cdt == x.dtype


def _lora_parts(mod, x):
    """(base, A, B, scaling) when calling PEFT module ``mod`` on ``x`` may be replaced by our LoRA math: a plain
    adapter (:func:`_lora_fusable`), no hooks on the module itself, base weight in ``x``'s dtype."""
    if not (_is_lora_linear(mod) and not mod._forward_hooks and not mod._forward_pre_hooks):
        return None
    parts = _lora_fusable(mod)
    if parts is None or parts[0].weight.dtype != x.dtype:
        return None
    return parts


def _lora_forward(mod, orig):
    def forward(x, *args, **kwargs):
        parts = None if (args or kwargs) else _lora_fusable(mod)
        if parts is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return orig(x, *args, **kwargs)
        base, wa, wb, scaling = parts
        if ROUTE["lora_linear"] and base.weight.dtype == x.dtype and _same_dtype_under_autocast(x):
            return lora_linear(x, base.weight, base.bias, wa, wb, scaling)  # one autograd node
        x2 = x.reshape(-1, x.shape[-1])
        out = F.linear(x2, base.weight, base.bias)  # 2-D: the in-place add below needs no view bookkeeping
        dt = out.dtype
        a = F.linear(x2.to(dt), wa.to(dt))
        out.addmm_(a, wb.to(dt).t(), alpha=scaling)  # fused: out += scaling * (x A^T) B^T
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


def _is_lora_linear(mod) -> bool:
    return (type(mod).__name__ == "Linear" and type(mod).__module__.startswith("peft.")
            and all(hasattr(mod, n) for n in ("lora_A", "lora_B", "base_layer", "scaling", "active_adapters",
                                               "lora_dropout", "merged", "disable_adapters")))


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


_ROPE_ON = contextvars.ContextVar("trlshim_kernels_rope", default=False)
_SIGS: Dict[Any, _RotaryPlan] = {}


@contextlib.contextmanager
def rope_scope():
    """Inside this block (this thread / context), :func:`route_rotary` sends calls to our kernel."""
    token = _ROPE_ON.set(True)
    try:
        yield
    finally:
        _ROPE_ON.reset(token)


def rope_active() -> bool:
    """True inside :func:`rope_scope` (i.e. inside the attention forward of a model patched with rope=True)."""
    return _ROPE_ON.get()


def _rotary_kernel(q, k, cos, sin):
    return RotaryFunction.apply(q, k, cos, sin)


_ROPE_NAMES = frozenset(("q", "k", "cos", "sin", "position_ids", "unsqueeze_dim"))


class _RotaryPlan:
    """How ``orig``'s signature binds a call, worked out once per function: the names of its
    positional parameters in order and its defaults. ``ok`` is False when the signature has names
    other than HF's ``(q, k, cos, sin, position_ids=None, unsqueeze_dim=1)`` or takes ``*args`` /
    ``**kwargs``; such functions are never routed."""

    __slots__ = ("ok", "n", "positional", "keywords", "defaults")

    def __init__(self, sig):
        P = inspect.Parameter
        params = list(sig.parameters.values()) if sig is not None else []
        self.ok = (sig is not None and {p.name for p in params} <= _ROPE_NAMES
                   and all(p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in params)
                   and all(n in sig.parameters for n in ("q", "k", "cos", "sin")))
        self.n = len(params)
        self.positional = tuple(p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD))
        self.keywords = frozenset(p.name for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY))
        self.defaults = {p.name: p.default for p in params if p.default is not P.empty}

    def bind(self, args, kwargs):
        """The call's arguments by parameter name, or None where ``orig`` itself would reject them."""
        if len(args) > len(self.positional):
            return None
        a = dict(zip(self.positional, args))
        for name, value in kwargs.items():
            if name in a or name not in self.keywords:
                return None
            a[name] = value
        for name, value in self.defaults.items():
            a.setdefault(name, value)
        return a if len(a) == self.n else None  # else a required argument is missing


def _plan(fn) -> _RotaryPlan:
    try:
        return _SIGS[fn]
    except (KeyError, TypeError):
        pass
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    plan = _RotaryPlan(sig)
    try:
        _SIGS[fn] = plan
    except TypeError:
        pass
    return plan


def _bind_rotary(orig, args, kwargs) -> Optional[Dict[str, Any]]:
    """The arguments of a call ``orig(*args, **kwargs)`` by parameter name (``q``, ``k``, ``cos``, ``sin``,
    ...), bound through ``orig``'s own signature; None when it is not HF's signature or does not bind."""
    plan = _plan(orig)
    return plan.bind(args, kwargs) if plan.ok else None


def route_rotary(orig, args, kwargs, cpu: bool = True):
    """Call HF ``apply_rotary_pos_emb`` ``orig(*args, **kwargs)``, or our kernel in its place.

    Our kernel only inside :func:`rope_scope`, when the arguments bind to ``orig``'s signature as
    ``(q, k, cos, sin[, position_ids][, unsqueeze_dim])`` (``position_ids`` is ignored, as transformers
    ignores it) and the shapes/devices are ones :func:`apply_rotary` handles; else ``orig`` unchanged.
    The signature is read once per function (:class:`_RotaryPlan`): this runs once per layer per step.
    ``cpu=False`` keeps CPU tensors on ``orig`` even under Triton's interpreter."""
    if not _ROPE_ON.get():
        return orig(*args, **kwargs)
    a = _bind_rotary(orig, args, kwargs)
    if a is None:
        return orig(*args, **kwargs)
    q, k, cos, sin = a["q"], a["k"], a["cos"], a["sin"]
    ud = a.get("unsqueeze_dim", 1)
    if not all(hasattr(t, "dim") for t in (q, k, cos, sin)) or not (cpu or q.is_cuda):
        return orig(*args, **kwargs)
    if not rotary_supported(q, k, cos, sin, ud):
        return orig(*args, **kwargs)
    return _rotary_kernel(q, k, cos, sin)


def routed_rotary(orig):
    """A plain function around ``orig`` that calls :func:`route_rotary` (for scripts without trlshim)."""

    @functools.wraps(orig)
    def apply_rotary_pos_emb(*args, **kwargs):
        return route_rotary(orig, args, kwargs)

    return apply_rotary_pos_emb


def _scoped_forward(fn):
    def forward(*args, **kwargs):
        token = _ROPE_ON.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _ROPE_ON.reset(token)

    return forward


def _is_attention(mod) -> bool:
    return "Attention" in type(mod).__name__ and hasattr(mod, "q_proj") and hasattr(mod, "k_proj")


def _is_dtensor(t) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return False
    return isinstance(t, DTensor)


def weight_refusal(weight) -> Optional[str]:
    """Why the fused head must not read ``weight`` as the full head matrix (None: it may).

    A DTensor (an FSDP2 or tensor-parallel shard outside the unit's forward) or a DeepSpeed ZeRO-3
    partition (``ds_numel``/``ds_status``: only this rank's slice, gathered during the head's own
    forward and released after it) holds part of the matrix: reading it would crash or give wrong
    numbers. A quantized weight (bitsandbytes ``Params4bit``/``Int8Params``, integer storage) is
    not the matrix at all."""
    if weight is None:
        return "lm_head has no weight"
    if _is_dtensor(weight):
        return "lm_head.weight is a DTensor (FSDP2/tensor-parallel shard)"
    if hasattr(weight, "ds_numel") or hasattr(weight, "ds_status"):
        return "lm_head.weight is partitioned by DeepSpeed ZeRO-3"
    if (not weight.is_floating_point() or hasattr(weight, "quant_state") or hasattr(weight, "SCB")
            or type(weight).__name__ in ("Params4bit", "Int8Params")):
        return f"lm_head.weight is quantized ({type(weight).__name__}, {weight.dtype})"
    if weight.dim() != 2:
        return f"lm_head.weight has shape {tuple(weight.shape)}, not a 2-D matrix"
    return None


def head_refusal(head) -> Optional[str]:
    """Why the fused cross-entropy cannot replace ``head`` (the LM head module), or None."""
    if head is None:
        return "model has no output embeddings (lm_head)"
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        FSDPModule = ()
    if FSDPModule and isinstance(head, FSDPModule):
        return "lm_head is an FSDP2 unit of its own (its weight is resharded when its forward returns)"
    if type(head) is not nn.Linear:
        return f"lm_head is a {type(head).__name__}, not a plain Linear (a PEFT adapter, modules_to_save or quantized)"
    return weight_refusal(head.weight)


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
        if labels is None or not lm.training or "labels" not in sig.parameters:
            return orig(*args, **kwargs)  # eval/predict keeps its logits (compute_metrics may need them)
        why = head_refusal(head)  # checked per call: sharding (accelerate's prepare) may come after routing
        if why is not None:
            handle.fell_back("fused_linear_cross_entropy", why)
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
        why = "the forward did not go through lm_head" if not captured else head_refusal(head)
        if why is not None:  # e.g. the weight was swapped for a shard during the head's own forward
            handle.fell_back("fused_linear_cross_entropy", why)
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
                   fused_linear_cross_entropy: bool = True, lora: bool = True) -> KernelHandle:
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
            handle._set(mod, "forward", _mlp_forward(mod, glu, lora))
            handle.applied["swiglu"] = handle.applied.get("swiglu", 0) + 1
    if lora:
        quantized = {}
        for mod in lm.modules():
            if _is_lora_linear(mod):
                handle._set(mod, "forward", _lora_forward(mod, mod.forward))
                handle.applied["lora"] = handle.applied.get("lora", 0) + 1
            elif type(mod).__module__.startswith("peft.") and hasattr(mod, "lora_A") and hasattr(mod, "base_layer"):
                kind = type(mod.base_layer).__name__  # e.g. bitsandbytes Linear4bit under peft.tuners.lora.bnb
                quantized[kind] = quantized.get(kind, 0) + 1
        if quantized:
            kinds = ", ".join(f"{k} x{n}" for k, n in quantized.items())
            handle.skipped["lora"] = f"LoRA over non-plain base layers ({kinds}): PEFT's own forward"
    if swiglu and glu is None:
        handle.skipped["swiglu"] = f"activation {getattr(cfg, 'hidden_act', None)!r} has no fused kernel"
    if rope:
        for mod in lm.modules():
            if _is_attention(mod):
                handle._set(mod, "forward", _scoped_forward(mod.forward))
                handle.applied["rope"] = handle.applied.get("rope", 0) + 1
        if "rope" not in handle.applied:
            handle.skipped["rope"] = "no attention module with q_proj/k_proj found"
    if fused_linear_cross_entropy:
        head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
        why = head_refusal(head)
        if why is not None:
            handle.skipped["fused_linear_cross_entropy"] = why
        else:
            softcap = getattr(cfg, "final_logit_softcapping", None)
            handle._set(lm, "forward", _ce_forward(lm, lm.forward, handle, softcap))
            handle.applied["fused_linear_cross_entropy"] = 1
    handle._set(lm, _ATTR, handle)
    return handle
