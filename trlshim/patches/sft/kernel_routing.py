"""Route an SFT model's compute to trlshim's Triton kernels (``trlshim_kernels``) when the trainer is built.

Instance-level (the model object, never transformers' classes) and undone by ``trlshim.unpatch()``.
CUDA only: on CPU the model stays as it is. Off with ``TRLSHIM_KERNELS=0`` or
``trlshim.SFTConfig(use_trlshim_kernels=False)``.

Which kernels: the layer kernels (RMSNorm, SwiGLU/GeGLU) wherever the model type is supported.
The fused linear cross-entropy wherever the loss is the plain next-token NLL computed from the
model's own ``labels`` path, the head is a plain ``Linear`` whose weight is the whole float matrix
(not a DTensor/FSDP2 unit of its own, a ZeRO-3 partition or quantized: ``trlshim_kernels.head_refusal``,
checked at routing and again at every call, since accelerate shards after the trainer is built; a
call it refuses runs the model's own head and the reason is logged once). Under FSDP2 the head inside
the root unit is whole during the root's forward, so it is fused there (tests/reliability/test_fsdp.py);
and TRL has no fused head of its own (``fused_ce_blocker``: not on TRL
>= 1.15, not with ``loss_type='chunked_nll'`` - the 1.7-1.14 default - nor other loss types, custom
loss functions or label smoothing): one fused head, never two. It runs in training only; evaluation
keeps its logits. On TRL >= 1.15 TRL's own fused head stays, and runs our kernel inside the SFT loss
(``logprob_head``).

TRL 0.15-1.14 log ``mean_token_accuracy`` (and ``entropy`` from 0.22) from the logits. While our
head runs, ``SFTTrainer.compute_loss`` is wrapped (``METRIC_PATHS``): TRL's own "no logits" switch
(the Liger option) is set for that call, so TRL skips its logits code, and the metrics are logged
from the kernel's counters in the release's format (from 0.26 TRL reads ``outputs.token_accuracy``,
which the routed forward provides). Accuracy is exact; entropy is the mean over tokens that carry a
label, as TRL's own fused and chunked heads define it (TRL's logits path averages over every
attended position).

RoPE: transformers' attention forwards call the module-level ``apply_rotary_pos_emb`` of their
modeling module, so one row per model-type module (``ROPE_MODEL_TYPES``) wraps that function. The
wrapper sends a call to ``trlshim_kernels`` only while a routed model's attention forward runs
(``apply_to_model(rope=True)`` marks those forwards with ``trlshim_kernels.rope_scope``, a
``contextvars`` flag) and its tensors are CUDA (CPU only under ``TRITON_INTERPRET=1`` with the test
switch ``TRLSHIM_KERNELS_ON_CPU=1``); every other call - other models in the process, shapes the
kernel does not handle - reaches the original function unchanged. ``TRLSHIM_KERNELS_ROPE=0`` leaves
RoPE to transformers while routing the other kernels.

Gradient checkpointing (TRL's default from 0.20): with it on, on CUDA, in one process, each checkpointed
layer input of a routed model waits in pinned host memory until its backward (``trlshim_kernels.offload``:
side-stream copies, the next layer's input fetched during the current recompute) - the activations kept across
the step leave the GPU at no measured step time. Logged once; ``TRLSHIM_OFFLOAD_CHECKPOINTS=0`` keeps them.

Liger: when the user asked for it (``use_liger_kernel``/``use_liger``) and Liger is installed,
trlshim routes nothing. When Liger is missing, trlshim turns the option off before TRL sees it
(TRL/transformers would raise ImportError) and routes its own kernels, with one log line.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
import weakref
from collections.abc import Mapping

from ... import report
from ...flags import flag
from ...pipeline import lookup, on_unpatch
from ...registry import row
from ...translate import installed_label
from . import config as sft_config
from . import logprob_head
from .facts import FACTS

LIGER_OPTIONS = ("use_liger_kernel", "use_liger")
ROPE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")


def _enabled(args) -> bool:
    if flag("TRLSHIM_KERNELS") is False:
        return False
    return sft_config.shim_options(args).get("use_trlshim_kernels") is not False


def _liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _liger_requested(args):
    return next((name for name in LIGER_OPTIONS if getattr(args, name, False) is True), None)


def _on_cuda(model) -> bool:
    try:
        return next(model.parameters()).is_cuda
    except StopIteration:
        return False


def fused_ce_blocker(trainer):
    """Why our fused cross-entropy must not replace this trainer's loss (None: it may)."""
    own = lookup(FACTS, "own_fused_head")
    if own is not None:
        return own
    loss_type = getattr(getattr(trainer, "args", None), "loss_type", None)
    if loss_type == "chunked_nll":
        return "loss_type='chunked_nll': TRL patches the LM head itself"
    if loss_type not in (None, "nll"):
        return f"loss_type={loss_type!r}: TRL computes that loss from the logits"
    if getattr(trainer, "compute_loss_func", None) is not None or getattr(trainer, "label_smoother", None) is not None:
        return "a custom loss function or label smoothing reads the logits"
    return None


def metric_path():
    """``(switch, log accuracy, log entropy)`` for the installed release, or None where TRL logs no
    logits-based metric (< 0.15) or routes no fused head of ours (>= 1.15)."""
    return lookup(FACTS, "metric_path")


def _liger_style_forward(forward, handle):
    """TRL 0.26-1.14 pass Liger's forward options while its "no logits" switch is on: take them here
    (the model under the fused head has no such parameters) and answer ``return_token_accuracy``."""

    @functools.wraps(forward)  # transformers reads the forward's signature to pick dataset columns
    def routed_forward(*args, **kwargs):
        want_accuracy = kwargs.pop("return_token_accuracy", None)
        if kwargs.pop("use_token_scaling", None):  # only loss_type='dft' asks for it, and dft is never routed
            raise RuntimeError("trlshim: token scaling (loss_type='dft') reached the fused cross-entropy")
        kwargs.pop("skip_logits", None)  # the fused head makes no logits in training anyway
        out = forward(*args, **kwargs)
        stats = getattr(out, "kernel_stats", None)
        if want_accuracy and stats is not None:  # a key, not only an attribute: accelerate rebuilds outputs
            out["token_accuracy"] = stats.n_correct.float() / stats.n_tokens.clamp_min(1)
        return out

    return routed_forward


def _setting(cfg, name, value):
    try:
        setattr(cfg, name, value)
    except Exception:  # a frozen dataclass
        object.__setattr__(cfg, name, value)


def _log_metrics(trainer, stats, log_accuracy, log_entropy):
    acc = trainer.accelerator
    store = trainer._metrics
    flat = not isinstance(store.get("train"), dict)  # TRL 0.15: one dict for train and eval
    if flat and not acc.is_main_process:
        return
    store = store if flat else store["train"]
    n_tokens = acc.gather_for_metrics(stats.n_tokens.reshape(1)).sum()
    if log_accuracy:
        correct = acc.gather_for_metrics(stats.n_correct.reshape(1)).sum()
        store["mean_token_accuracy"].append((correct / n_tokens).item() if n_tokens > 0 else 0.0)
    if log_entropy:
        total = acc.gather_for_metrics(stats.entropy_sum.reshape(1)).sum()
        store["entropy"].append((total / n_tokens).item() if n_tokens > 0 else 0.0)


def _compute_loss(wrapped, instance, args, kwargs):
    """``SFTTrainer.compute_loss`` (TRL 0.15-1.14) while our fused head runs: TRL's metrics from its counters."""
    handle = getattr(instance, "_trlshim_kernels", None)
    path = metric_path()
    if (path is None or handle is None or not handle.active or "fused_linear_cross_entropy" not in handle.applied
            or not getattr(instance.model, "training", False)):
        return wrapped(*args, **kwargs)
    try:
        inputs = inspect.signature(wrapped).bind(*args, **kwargs).arguments.get("inputs")
    except TypeError:
        return wrapped(*args, **kwargs)  # TRL raises its own error
    if not isinstance(inputs, Mapping) or "labels" not in inputs:
        return wrapped(*args, **kwargs)
    switch, log_accuracy, log_entropy = path
    cfg = instance.args
    before = getattr(cfg, switch, None)
    handle.last_stats = None
    _setting(cfg, switch, True)
    try:
        result = wrapped(*args, **kwargs)
    finally:
        _setting(cfg, switch, before)
    if handle.last_stats is None:
        why = handle.fallbacks.get("fused_linear_cross_entropy")
        report.decided("kernels.metrics", "trlshim: this step's forward did not reach the fused head"
                       + (f" ({why})" if why else "") + "; mean_token_accuracy/entropy are not logged for it")
    else:
        _log_metrics(instance, handle.last_stats, log_accuracy, log_entropy)
    return result


def _route(trainer, liger_replaced: bool):
    model = getattr(trainer, "model", None)
    if model is None:
        return
    try:
        import trlshim_kernels
    except ImportError:
        return report.decided("kernels.missing", "trlshim: kernels not routed (trlshim_kernels not importable)")
    if not _on_cuda(model) and flag("TRLSHIM_KERNELS_ON_CPU") is not True:
        return report.decided("kernels.cpu", "trlshim: kernels not routed (the model is not on CUDA)")
    if not trlshim_kernels.HAS_TRITON:
        return report.decided("kernels.triton", "trlshim: kernels not routed (triton is not installed)")
    lm = trlshim_kernels.unwrap_model(model)
    mtype = getattr(getattr(lm, "config", None), "model_type", None)
    if mtype not in trlshim_kernels.supported_model_types():
        return report.decided(f"kernels.type.{mtype}", f"trlshim: kernels not routed (model type {mtype!r})")
    why_not_ce = fused_ce_blocker(trainer)
    rope = flag("TRLSHIM_KERNELS_ROPE") is not False
    handle = trlshim_kernels.apply_to_model(model, rope=rope, fused_linear_cross_entropy=why_not_ce is None)
    if "fused_linear_cross_entropy" in handle.applied and metric_path() is not None:
        handle.replace(lm, "forward", _liger_style_forward(lm.forward, handle))
    why_not_head = logprob_head.route(handle) if lookup(FACTS, "own_fused_head") else None
    _offload_checkpoints(trainer, lm, handle)
    _compile_ahead(trainer, handle)
    undo = weakref.WeakMethod(handle.undo)  # unpatch undoes it; a dropped trainer's model is not kept alive
    on_unpatch(lambda: undo() and undo()())
    trainer._trlshim_kernels = handle
    parts = ", ".join(f"{k} x{n}" for k, n in handle.applied.items())
    why_not_ce = why_not_ce or handle.skipped.get("fused_linear_cross_entropy")
    note = f"; fused cross-entropy left to TRL: {why_not_ce}" if why_not_ce else ""
    note += f"; TRL's fused head kept: {why_not_head}" if why_not_head else ""
    note += "".join(f"; {k} not routed: {why}" for k, why in handle.skipped.items()
                    if k not in ("fused_linear_cross_entropy", "rope"))
    via = " instead of Liger (not installed)" if liger_replaced else ""
    report.decided(f"kernels.{mtype}", f"trlshim: Triton kernels routed{via} into {mtype}: {parts}{note}")


def _compile_ahead(trainer, handle) -> None:
    """Compile the routed kernels in background threads now, while the run sets up, instead of one after
    another inside the first step (a cold Triton cache: ~7 s on an H200 host for a 1B Llama). Logged once."""
    if flag("TRLSHIM_KERNELS_PRECOMPILE") is False:
        return None
    import torch  # imported already: trlshim_kernels is

    args = getattr(trainer, "args", None)
    autocast = (torch.bfloat16 if getattr(args, "bf16", False) else torch.float16 if getattr(args, "fp16", False)
                else None)
    try:
        started = sys.modules["trlshim_kernels"].precompile(handle, autocast_dtype=autocast)
    except Exception as e:  # only ever a speed-up: each kernel then compiles at its first launch, as before
        return report.decided("kernels.precompile.failed", f"trlshim: kernels compile at first use (compiling "
                              f"ahead failed: {type(e).__name__}: {e})")
    if started:
        variants, threads = started
        report.decided("kernels.precompile", f"trlshim: compiling {variants} kernel variants on {threads} background "
                       "threads before the first step (TRLSHIM_KERNELS_PRECOMPILE=0: each compiles at first use)")


def offload_blocker(trainer, lm) -> str | None:
    """Why checkpointed layer inputs stay on the GPU (None: they go to pinned host memory during training)."""
    args = getattr(trainer, "args", None)
    if flag("TRLSHIM_OFFLOAD_CHECKPOINTS") is False:
        return "TRLSHIM_OFFLOAD_CHECKPOINTS=0"
    if not getattr(args, "gradient_checkpointing", False):
        return "gradient checkpointing is off"
    if getattr(args, "torch_compile", False):
        return "torch_compile=True (the copies and the recompute are not traced)"
    if not _on_cuda(lm):
        return "the model is not on CUDA"
    accelerator = getattr(trainer, "accelerator", None)
    if getattr(accelerator, "num_processes", 1) > 1:
        return "more than one process (the recompute runs inside the backward, outside DDP/FSDP's hooks)"
    return sys.modules["trlshim_kernels"].offload_refusal(lm)


def _offload_checkpoints(trainer, lm, handle) -> None:
    """Route gradient checkpointing through ``trlshim_kernels.offload_checkpoints`` (the layer inputs kept
    in pinned host memory, copied on a side stream: -layers x tokens x hidden bytes of GPU memory at no
    step time where the copies hide behind compute). Logged once per outcome."""
    why = offload_blocker(trainer, lm)
    if why:
        return report.decided(f"kernels.offload.kept.{why}", f"trlshim: checkpointed activations stay on the GPU: {why}")
    chunk = flag("TRLSHIM_OFFLOAD_MLP_CHUNKS") is True
    tail = flag("TRLSHIM_KEEP_TAIL_ACTIVATIONS") is True
    handle.on_undo(sys.modules["trlshim_kernels"].offload_checkpoints(lm, chunk_mlp=chunk, keep_tail=tail))
    key = "kernels.offload" + (".tail" if tail else "") + (".chunks" if chunk else "")
    report.decided(key, "trlshim: checkpointed layer inputs offloaded to pinned host memory during "
                   "training (side-stream copies; TRLSHIM_OFFLOAD_CHECKPOINTS=0 keeps them on the GPU)"
                   + ("; the last layers skip their recompute while their activations fit in the gradients not yet "
                      "allocated (TRLSHIM_KEEP_TAIL_ACTIVATIONS=1)" if tail else "")
                   + ("; MLP backward in token chunks in the recompute (TRLSHIM_OFFLOAD_MLP_CHUNKS=1)" if chunk else ""))


def route(call) -> None:
    """Step (innermost): stand in for a missing Liger before TRL sees the config; route the built
    trainer's model through trlshim's kernels after TRL's ``__init__``."""
    cfg = call.args
    enabled = cfg is None or _enabled(cfg)
    liger = _liger_requested(cfg) if cfg is not None else None
    liger_replaced = False
    if liger and not _liger_installed():
        cfg = call.writable_config()
        setattr(cfg, liger, False)
        if liger == "use_liger" and hasattr(cfg, "use_liger_kernel"):
            cfg.use_liger_kernel = False
        liger_replaced = True
        report.decided(
            "kernels.liger_missing",
            f"trlshim: {liger}=True but liger-kernel is not installed: using trlshim's kernels instead "
            f"({installed_label()})",
        )
    if enabled and (not liger or liger_replaced):
        call.after(lambda call: _route(call.instance, liger_replaced))


def _cpu_allowed(kernels) -> bool:
    return flag("TRLSHIM_KERNELS_ON_CPU") is True and kernels.interpreting()


def _rope_wrapper(wrapped, instance, args, kwargs):
    """``apply_rotary_pos_emb``: our kernel inside a routed model's attention forward, else the original."""
    kernels = sys.modules.get("trlshim_kernels")  # not imported: no model can be routed
    if kernels is None or not kernels.rope_active():
        return wrapped(*args, **kwargs)
    return kernels.route_rotary(wrapped, args, kwargs, cpu=_cpu_allowed(kernels))


for _mtype in ROPE_MODEL_TYPES:
    row(
        f"kernel_routing.rope.{_mtype}", f"transformers.models.{_mtype}.modeling_{_mtype}", "apply_rotary_pos_emb",
        ">=0.7", "RoPE of routed models through trlshim_kernels.apply_rotary (other calls unchanged)",
        wrapper=_rope_wrapper, optional=True,
    )

row(
    "kernel_routing.metrics", "trl.trainer.sft_trainer", "SFTTrainer.compute_loss", ">=0.15,<1.15",
    "log TRL's mean_token_accuracy/entropy from the fused head's counters (TRL computes them from logits)",
    wrapper=_compute_loss,
)
