"""Gradient checkpointing whose saved layer inputs wait in pinned host memory, copied off and back on a
side stream so the copies overlap compute.

Why: under gradient checkpointing the only activations kept between forward and backward are each
checkpointed layer's input (``layers x tokens x hidden`` values: 0.5 GiB for a 16-layer, 2048-wide model
at 4x2048 tokens). For LoRA that is a large part of what sits on the GPU beside the frozen weights.
transformers >= 5.x has ``gradient_checkpointing_enable(offload=True)`` (``save_on_cpu``), which copies on
the compute stream and makes each step slower; Unsloth's offloaded checkpointing does the same. Here the
device-to-host copy of a layer's input runs on a copy stream while the next layer computes, and in the
backward the input of the layer *before* the one being recomputed is fetched back while that one runs
(layers are backwarded in the reverse order of their forwards), so only about one layer input is on the
GPU at a time and the copies hide behind compute.

The recompute is reentrant-style (a ``torch.autograd.Function`` runs the layer again under
``enable_grad`` in its backward): the CPU and CUDA RNG states and the autocast state of the forward are
restored for it, as ``torch.utils.checkpoint`` does. A call the offload cannot take - the first argument
is not a tensor that requires grad, another argument requires grad, grad mode is off, a selective
checkpointing ``context_fn`` - goes to the checkpoint function it wraps, unchanged.

Public: :func:`offloaded_checkpoint_function` (wrap one checkpoint function), :func:`offload_checkpoints`
(a transformers model: every layer's ``_gradient_checkpointing_func``, now and at each later
``gradient_checkpointing_enable``), :func:`offload_refusal` (why a model's checkpointing cannot be
offloaded). This module never imports trl or trlshim.
"""
from __future__ import annotations

import contextvars
import functools
import threading
import weakref
from typing import Callable, List, Optional

import torch

from .lora import reusing_casts

_ATTR = "_gradient_checkpointing_func"
# Decoder layers whose output is ``residual + mlp(norm(residual))`` (nothing reads the MLP's output but that add):
# while such a layer is recomputed in its backward, the output's gradient is the MLP output's gradient, so the
# MLP can skip making its output (:func:`mlp_output_unread`, the default) or run forward and backward at once, a
# token chunk at a time (:func:`mlp_backward_now`, opt-in).
RESIDUAL_MLP_LAYERS = frozenset({"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"})
MLP_CHUNK_TOKENS = 2048  # tokens per chunk of that MLP backward (about a quarter of a 4x2048 batch)
COUNTS = {"mlp_backward_now": 0, "mlp_output_unread": 0}  # recompute shortcuts taken (tests, benchmarks)
_MLP_SCOPE: contextvars.ContextVar = contextvars.ContextVar("trlshim_kernels_mlp_scope", default=None)


class _Pool:
    """Pinned host buffers, reused by (shape, dtype). Every copy into or out of them runs on the one copy
    stream of their device, so stream order alone keeps a buffer's reuse after its last copy."""

    def __init__(self):
        self._free = {}
        self._lock = threading.Lock()

    def get(self, like: torch.Tensor) -> torch.Tensor:
        key = (tuple(like.shape), like.dtype)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return torch.empty(like.shape, dtype=like.dtype, device="cpu", pin_memory=like.is_cuda)

    def put(self, buf: torch.Tensor) -> None:
        with self._lock:
            self._free.setdefault((tuple(buf.shape), buf.dtype), []).append(buf)


class _Entry:
    __slots__ = ("host", "device", "on_device", "ready", "__weakref__")

    def __init__(self, host, device):
        self.host, self.device, self.on_device, self.ready = host, device, None, None


class _Offloader:
    """The copy stream, buffer pool and the stack of layer inputs waiting for their backward."""

    def __init__(self):
        self.pool = _Pool()
        self.streams = {}
        self.stack: List[weakref.ref] = []
        self.prune_at = 64  # dead references (graphs dropped without a backward) are pruned past this length
        self.copies = 0  # device->host copies made (tests and benchmarks read it)

    def _stream(self, device):
        if device.type != "cuda":
            return None
        if device not in self.streams:
            self.streams[device] = torch.cuda.Stream(device=device)
        return self.streams[device]

    def save(self, x: torch.Tensor) -> _Entry:
        host = self.pool.get(x)
        stream = self._stream(x.device)
        if stream is None:
            host.copy_(x)
        else:
            stream.wait_stream(torch.cuda.current_stream(x.device))  # x is computed
            with torch.cuda.stream(stream):
                host.copy_(x, non_blocking=True)
            x.record_stream(stream)  # x's memory is not reused before the copy has read it
        entry = _Entry(host, x.device)
        weakref.finalize(entry, self.pool.put, host)  # back to the pool once its backward (or graph) is gone
        self.stack.append(weakref.ref(entry))
        if len(self.stack) > self.prune_at:  # forwards under grad whose graph never reached a backward
            self.stack = [r for r in self.stack if r() is not None]
            self.prune_at = max(64, 2 * len(self.stack))
        self.copies += 1
        return entry

    def _fetch(self, entry: _Entry) -> None:
        stream = self._stream(entry.device)
        if stream is None:
            entry.on_device = entry.host.clone()
            return
        with torch.cuda.stream(stream):
            entry.on_device = entry.host.to(entry.device, non_blocking=True)
        entry.ready = stream.record_event()

    def load(self, entry: _Entry) -> torch.Tensor:
        """The entry's tensor on its device, ready on the current stream; starts fetching the input of the
        layer whose backward comes next."""
        self.stack = [r for r in self.stack if r() is not None and r() is not entry]
        if entry.on_device is None:
            self._fetch(entry)
        if self.stack:
            nxt = self.stack[-1]()
            if nxt is not None and nxt.on_device is None:
                self._fetch(nxt)
        x = entry.on_device
        entry.on_device = None
        if entry.ready is not None:
            current = torch.cuda.current_stream(entry.device)
            current.wait_event(entry.ready)
            x.record_stream(current)
        return x


_OFFLOADER = _Offloader()


def _autocast_state():
    out = {}
    for kind in ("cuda", "cpu"):
        try:
            out[kind] = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        except (TypeError, AttributeError, RuntimeError):  # older torch: no per-device query
            pass
    return out, torch.is_autocast_cache_enabled()


class _OffloadedLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, chunk_mlp, x, *rest):
        ctx.fn, ctx.rest, ctx.chunk_mlp = fn, rest, chunk_mlp
        ctx.input_requires_grad = x.requires_grad
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
        ctx.autocast = _autocast_state()
        ctx.casts = {}
        with reusing_casts(ctx.casts):  # the recompute reuses this forward's adapter casts (lora.py)
            out = fn(x, *rest)
        ctx.entry = _OFFLOADER.save(x.detach())
        return out

    @staticmethod
    def backward(ctx, *grads):
        x = _OFFLOADER.load(ctx.entry).detach().requires_grad_(ctx.input_requires_grad)
        ctx.entry = None
        devices = [x.device] if x.is_cuda else []
        (states, cache) = ctx.autocast
        scope = _mlp_scope(ctx.fn, grads, ctx.chunk_mlp)
        token = _MLP_SCOPE.set(scope)
        try:
            with torch.random.fork_rng(devices=devices, enabled=True):
                torch.set_rng_state(ctx.cpu_rng)
                if ctx.cuda_rng is not None:
                    torch.cuda.set_rng_state(ctx.cuda_rng, x.device)
                with torch.enable_grad(), _autocast(states, cache), reusing_casts(ctx.casts):
                    out = ctx.fn(x, *ctx.rest)
        finally:
            _MLP_SCOPE.reset(token)
            ctx.casts = None
        outs = out if isinstance(out, tuple) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if isinstance(o, torch.Tensor) and o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, x.grad) + (None,) * len(ctx.rest)


class _MLPScope:
    __slots__ = ("mlp", "grad_out", "used", "chunk")

    def __init__(self, mlp, grad_out, chunk):
        self.mlp, self.grad_out, self.used, self.chunk = mlp, grad_out, False, chunk


def _mlp_scope(fn, grads, chunk):
    """The scope for a layer recompute whose MLP output only feeds the residual add (None: not known to)."""
    layer = getattr(getattr(fn, "func", None), "__self__", None)
    if type(layer).__name__ not in RESIDUAL_MLP_LAYERS or not grads or grads[0] is None:
        return None
    if any(g is not None for g in grads[1:]):
        return None
    mlp = getattr(layer, "mlp", None)
    if mlp is None:
        return None
    if not chunk and (layer._forward_hooks or mlp._forward_hooks or _global_forward_hooks()):
        return None  # a hook could read the MLP output, which the recompute leaves unmade (mlp_output_unread)
    return _MLPScope(mlp, grads[0], chunk)


def _global_forward_hooks() -> bool:
    from torch.nn.modules import module

    return bool(getattr(module, "_global_forward_hooks", None))


def mlp_output_unread(mlp, x) -> Optional[torch.Tensor]:
    """Called by a routed MLP forward: inside the offloaded recompute of a ``RESIDUAL_MLP_LAYERS`` layer (this
    MLP's own, no forward hooks on it, its layer or globally), the MLP output's value is read by nobody - the
    layer adds it to the residual, and the recompute's output only carries the graph to the gradient it already
    has - so the MLP may skip its last projection (a GEMM as large as each of the others, ~1/9 of the MLP's
    recompute + backward work) and return zeros. Returns the gradient the MLP's backward must then receive (its
    backward checks it, so a layer that does read the output fails loudly, never trains on zeros); None
    otherwise."""
    scope = _MLP_SCOPE.get()
    if (scope is None or scope.chunk or scope.used or scope.mlp is not mlp or not torch.is_grad_enabled()
            or scope.grad_out.shape != x.shape):
        return None
    scope.used = True
    COUNTS["mlp_output_unread"] += 1
    return scope.grad_out


class _GradientKnown(torch.autograd.Function):
    """Stands for an MLP whose backward already ran: its input gradient is known; the output's value is never read
    (the layer adds it to the residual and the recompute's output only carries the graph)."""

    @staticmethod
    def forward(ctx, x, grad_x, grad_out):
        ctx.save_for_backward(grad_x, grad_out)
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_out = ctx.saved_tensors
        # the gradient that arrives must be the one the MLP's backward used; a layer shaped otherwise fails loudly
        torch._assert_async((grad == grad_out).all())
        return grad_x, None, None


def mlp_backward_now(mlp, forward, x):
    """Called by a routed MLP forward: inside the offloaded recompute of a ``RESIDUAL_MLP_LAYERS`` layer (this MLP's
    own), run the MLP forward + backward now, ``MLP_CHUNK_TOKENS`` tokens at a time (its intermediates never exist
    for the whole batch at once), and return a stand-in output carrying the input gradient. None otherwise."""
    scope = _MLP_SCOPE.get()
    if (scope is None or not scope.chunk or scope.used or scope.mlp is not mlp or not torch.is_grad_enabled()
            or not x.requires_grad):
        return None
    grad_out = scope.grad_out
    if grad_out.shape != x.shape or any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training
                                        for m in mlp.modules()):
        return None  # chunks would draw other dropout masks than the forward did
    scope.used = True
    COUNTS["mlp_backward_now"] += 1
    width = x.shape[-1]
    flat, gflat = x.detach().reshape(-1, width), grad_out.reshape(-1, width)
    grad_x = torch.empty_like(flat)
    for start in range(0, flat.shape[0], MLP_CHUNK_TOKENS):
        part = flat[start:start + MLP_CHUNK_TOKENS].detach().requires_grad_()
        out = forward(part)
        torch.autograd.backward(out, gflat[start:start + MLP_CHUNK_TOKENS])
        grad_x[start:start + MLP_CHUNK_TOKENS] = part.grad
    return _GradientKnown.apply(x, grad_x.reshape(x.shape), grad_out)


class _autocast:
    def __init__(self, states, cache):
        self.ctxs = [torch.autocast(kind, enabled=on, dtype=dtype, cache_enabled=cache)
                     for kind, (on, dtype) in states.items()]

    def __enter__(self):
        for c in self.ctxs:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.ctxs):
            c.__exit__(*exc)


class TailPlan:
    """Which of a model's checkpointed layers run without checkpointing: the last ones, while their activations fit
    in the gradients the backward has yet to allocate.

    Why: the backward visits the last layers first, while the weight gradients of every layer before them are not
    allocated yet (``zero_grad(set_to_none=True)``, the Trainer's default), and the step's peak comes later, once
    they are (end of the backward, the optimizer step). A layer whose activations are kept skips its recompute (a
    second forward: ~1/4 of its matmuls) at no cost in peak memory as long as ``kept layers x activations`` stays
    under those not-yet-allocated gradient bytes - a full fine-tune has room for a few layers, LoRA (a few MiB of
    adapter gradients) for none. The numbers are the same either way: the recompute replays the forward. What the
    plan cannot see is the LM head's backward, which runs first, beside the kept activations: where it allocates
    more than the peak's slack (TRL >= 1.15's chunked head: an fp32 weight gradient), keeping raises the peak -
    hence opt-in (``offload_checkpoints(keep_tail=True)``).

    Decided per call from what is known then: the budget is taken when a forward starts (trainable parameters of
    the wrapped layers whose ``.grad`` is None: with gradient accumulation, or ``set_to_none=False``, the gradients
    already exist and nothing is kept), the activations per token are bounded from the layer's linear shapes until
    a kept call on CUDA has measured them (allocated bytes before and after, plus its input). ``force``: keep
    exactly that many last layers (benchmarks), 0 keeps none."""

    def __init__(self, layers, force: Optional[int] = None):
        self.n = len(layers)
        self.force = force
        self.params = [p for layer in layers for p in layer.parameters()]
        self.bound = [_bytes_per_token_bound(layer) for layer in layers]
        self.measured = 0.0  # bytes per token a kept call held on CUDA (largest seen)
        self.budget = 0
        self.last = self.n
        self.kept_calls = 0

    def keeps(self, index: int, x: torch.Tensor) -> bool:
        if self.force is not None:
            return index >= self.n - self.force
        if index <= self.last:  # a new forward: the gradient bytes not allocated yet
            self.budget = sum(p.numel() * p.element_size() for p in self.params if p.requires_grad and p.grad is None)
        self.last = index
        per_token = self.measured or max(bound(x) for bound in self.bound[index:])
        return (self.n - index) * per_token * _tokens(x) <= self.budget

    def run(self, fn, args):
        """The layer without checkpointing (its activations stay for the backward), measured on CUDA."""
        self.kept_calls += 1
        x = args[0]
        if not x.is_cuda:
            return fn(*args)
        before = torch.cuda.memory_allocated(x.device)
        out = fn(*args)
        held = torch.cuda.memory_allocated(x.device) - before + x.numel() * x.element_size()
        self.measured = max(self.measured, held / _tokens(x))
        return out


def _tokens(x: torch.Tensor) -> int:
    """Tokens in a layer input (every dimension but the last, the hidden size)."""
    return max(1, x.numel() // max(1, x.shape[-1]))


def _bytes_per_token_bound(layer) -> Callable[[torch.Tensor], float]:
    """An upper bound of what one token's activations take when ``layer`` runs without checkpointing on input ``x``:
    the input and output of every linear map, plus eight input-sized vectors (norms, residual adds, attention
    output), at the widest element size of the weights and the input."""
    size, width = 1, 0
    for m in layer.modules():
        if isinstance(m, torch.nn.Linear):
            width += m.in_features + m.out_features
            size = max(size, m.weight.element_size())
    return lambda x: float(max(size, x.element_size()) * (width + 8 * x.shape[-1]))


class OffloadingCheckpoint:
    """A drop-in for a layer's checkpoint function (``func(fn, *args, **kwargs)``): offloads where it can,
    otherwise calls ``inner`` (the function it replaced, kept for undo). With a :class:`TailPlan`, the layers it
    keeps run without checkpointing."""

    def __init__(self, inner: Callable, allow_cpu: bool = False, chunk_mlp: bool = False):
        self.inner = inner
        self.allow_cpu = allow_cpu
        self.chunk_mlp = chunk_mlp
        keywords = getattr(inner, "keywords", None) or {}
        self.blocked = "context_fn" in keywords  # selective checkpointing decides what to keep: leave it be
        self.offloaded_calls = 0
        self.plan: Optional[TailPlan] = None
        self.index = 0
        self.owner = None  # weak reference to the module holding this function (set with the plan)

    def _runs_its_own_layer(self, fn) -> bool:
        """The call runs the module that holds this function (per-layer checkpointing: GradientCheckpointingLayer),
        not one of several layers through a function on the model (older releases: no plan there)."""
        target = getattr(getattr(fn, "func", fn), "__self__", None)
        return target is not None and self.owner is not None and target is self.owner()

    def __call__(self, fn, *args, **kwargs):
        x = args[0] if args else None
        if (self.blocked or kwargs or not torch.is_grad_enabled() or not isinstance(x, torch.Tensor)
                or not x.requires_grad or not (x.is_cuda or self.allow_cpu)
                or any(isinstance(a, torch.Tensor) and a.requires_grad for a in args[1:])):
            return self.inner(fn, *args, **kwargs)
        if self.plan is not None and self._runs_its_own_layer(fn) and self.plan.keeps(self.index, x):
            return self.plan.run(fn, args)
        self.offloaded_calls += 1
        return _OffloadedLayer.apply(fn, self.chunk_mlp, *args)


def offloaded_checkpoint_function(inner: Callable = None, *, allow_cpu: bool = False,
                                  chunk_mlp: bool = False) -> OffloadingCheckpoint:
    """Wrap a checkpoint function (default ``torch.utils.checkpoint.checkpoint``, non-reentrant)."""
    if inner is None:
        from torch.utils.checkpoint import checkpoint

        inner = functools.partial(checkpoint, use_reentrant=False)
    return inner if isinstance(inner, OffloadingCheckpoint) else OffloadingCheckpoint(inner, allow_cpu, chunk_mlp)


def offload_refusal(model) -> Optional[str]:
    """Why this model's gradient checkpointing cannot be offloaded by :func:`offload_checkpoints` (None: it can)."""
    if not callable(getattr(model, "gradient_checkpointing_enable", None)):
        return "the model has no gradient_checkpointing_enable"
    if not any(hasattr(m, "gradient_checkpointing") for m in model.modules()):
        return "no module of the model takes a checkpoint function (old transformers checkpointing format)"
    return None


def _wrap_layers(model, allow_cpu: bool, chunk_mlp: bool, keep_tail) -> int:
    n, wrapped = 0, []
    for m in model.modules():
        func = m.__dict__.get(_ATTR)
        if func is not None and not isinstance(func, OffloadingCheckpoint):
            m.__dict__[_ATTR] = func = OffloadingCheckpoint(func, allow_cpu, chunk_mlp)
            n += 1
        if isinstance(func, OffloadingCheckpoint):
            func.plan = None
            wrapped.append((m, func))
    # the layers: wrapped modules holding no other (transformers also sets the function on the model around them)
    layers = [(m, f) for m, f in wrapped if not any(c is not m and _ATTR in c.__dict__ for c in m.modules())]
    if keep_tail:  # True: the budget rule; a positive count: exactly that many
        plan = TailPlan([m for m, _ in layers], None if keep_tail is True else int(keep_tail))
        for i, (m, func) in enumerate(layers):  # module order: the order of the forward
            func.plan, func.index, func.owner = plan, i, weakref.ref(m)
    return n


def _unwrap_layers(model) -> None:
    for m in model.modules():
        func = m.__dict__.get(_ATTR)
        if isinstance(func, OffloadingCheckpoint):
            m.__dict__[_ATTR] = func.inner


def offload_checkpoints(model, *, allow_cpu: bool = False, chunk_mlp: bool = False,
                        keep_tail=False) -> Callable[[], None]:
    """Offload every checkpointed layer input of a transformers model (``unwrap``-ed: the PreTrainedModel),
    now if checkpointing is on and after every later ``gradient_checkpointing_enable`` (the Trainer enables
    it when training starts). Returns ``undo``: restores the instance's method and every layer's function.

    ``chunk_mlp``: in the recompute of a ``RESIDUAL_MLP_LAYERS`` layer, its routed MLP runs forward + backward at
    once in token chunks (:func:`mlp_backward_now`): less memory (LoRA r16, 1B, 4x2048 on an H200, measured before
    the one-node LoRA MLP of ``lora.py``, which brought the default to 3.24 GiB: 3.49 -> 3.03 GiB) for twice the
    MLP's launches - 0.6x the step where the step is bound by the host (LoRA), 0.95x for a full fine-tune. Off by
    default.

    ``keep_tail``: True runs the last layers without checkpointing while their activations fit in the gradients not
    yet allocated (:class:`TailPlan`); False (default) never; an int keeps exactly that many. Opt-in because the
    layers' activations also coexist with the LM head's backward, which the plan cannot see: on a 1B full
    fine-tune behind TRL 1.16's chunked head (an fp32 weight gradient, 1.5 GiB at its backward) the rule kept 3
    layers and raised the step's peak by 0.34 GiB for +2-5%; 2 layers left it unchanged (benchmarks/results.md)."""
    why = offload_refusal(model)
    if why:
        raise ValueError(why)
    had = "gradient_checkpointing_enable" in model.__dict__
    original = model.__dict__.get("gradient_checkpointing_enable")
    enable = model.gradient_checkpointing_enable

    @functools.wraps(enable)
    def gradient_checkpointing_enable(*args, **kwargs):
        out = enable(*args, **kwargs)
        _wrap_layers(model, allow_cpu, chunk_mlp, keep_tail)
        return out

    model.__dict__["gradient_checkpointing_enable"] = gradient_checkpointing_enable
    _wrap_layers(model, allow_cpu, chunk_mlp, keep_tail)

    def undo():
        if had:
            model.__dict__["gradient_checkpointing_enable"] = original
        else:
            model.__dict__.pop("gradient_checkpointing_enable", None)
        _unwrap_layers(model)

    return undo


def offloaded_calls(model) -> int:
    """How many layer calls went through the offload so far (0 when none was wrapped)."""
    return sum(f.offloaded_calls for m in model.modules()
               if isinstance(f := m.__dict__.get(_ATTR), OffloadingCheckpoint))


def kept_calls(model) -> int:
    """How many layer calls ran without checkpointing under a :class:`TailPlan` (activations kept, no recompute)."""
    plans = {id(f.plan): f.plan for m in model.modules()
             if isinstance(f := m.__dict__.get(_ATTR), OffloadingCheckpoint) and f.plan is not None}
    return sum(p.kept_calls for p in plans.values())
