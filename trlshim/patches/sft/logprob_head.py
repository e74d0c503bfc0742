"""TRL >= 1.15's fused LM head (``model(..., fused_lm_head=True)``) through ``trlshim_kernels.linear_logprobs``
while a routed SFT trainer computes its loss.

TRL's ``ChunkedLogProbFunction`` recomputes the logits in its backward: four vocabulary-wide GEMMs a step with a
trained head, three with a frozen one. ``linear_logprobs`` makes the gradients in the forward (three, and two),
for an upstream gradient that is the same for every token - SFT's NLL, the log-probabilities summed over a
token count. Its backward checks that (one sync) and recomputes exactly for anything else (per-token weights, a
gradient through the entropy), so a loss the guess does not fit costs time, never the numbers. Same float32
accumulation of both gradients as TRL's; measured side by side in ``benchmarks/results.md`` ("TRL's fused head").

Routed only inside ``SFTTrainer.compute_loss`` of a trainer whose kernels are routed (``kernel_routing``), in
training, with ``loss_type='nll'`` (read at each call: a late edit to ``'dft'`` - per-token weights - keeps TRL's
head), and only for calls the kernel computes the same way: temperature and logit scale 1, the outputs SFT asks
for (log-probs, entropy, top-1), a plain weight (``weight_refusal``), gradients wanted. Every other call is TRL's,
unchanged. ``TRLSHIM_KERNELS_HEAD=0`` keeps TRL's head.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import sys

from ... import report
from ...flags import flag
from ...registry import row

KERNEL_OUTPUTS = frozenset({"log_probs", "entropy", "is_top1"})
PARAMETERS = ("ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping",
              "logit_scale", "outputs")

_in_sft_loss = contextvars.ContextVar("trlshim_sft_loss", default=None)  # the routed handle, inside compute_loss


def _sft_loss(wrapped, instance, args, kwargs):
    """``SFTTrainer.compute_loss``: mark the call when this trainer's head may go through our kernel."""
    handle = getattr(instance, "_trlshim_kernels", None)
    if (handle is None or not handle.active or "logprob_head" not in handle.applied
            or not getattr(getattr(instance, "model", None), "training", False)
            or getattr(getattr(instance, "args", None), "loss_type", "nll") != "nll"):
        return wrapped(*args, **kwargs)
    token = _in_sft_loss.set(handle)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _in_sft_loss.reset(token)


@functools.lru_cache(maxsize=8)
def _signature(forward):
    return inspect.signature(forward)


def _wants_gradients(a) -> bool:
    import torch

    return torch.is_grad_enabled() and any(
        isinstance(a.get(k), torch.Tensor) and a[k].requires_grad for k in ("hidden", "weight", "bias"))


def refusal(kernels, a) -> str | None:
    """Why this call of TRL's head stays TRL's (None: ``linear_logprobs`` computes the same thing)."""
    hidden, weight, targets = a["hidden"], a["weight"], a["targets"]
    if a.get("temperature", 1.0) != 1.0 or a.get("logit_scale", 1.0) != 1.0:
        return "a temperature or logit scale"
    if not set(a.get("outputs", ())) <= KERNEL_OUTPUTS:
        return f"outputs {sorted(set(a.get('outputs', ())) - KERNEL_OUTPUTS)}"
    if hidden.dim() != 2 or targets.dim() != 1 or hidden.shape[0] == 0:
        return "not (tokens, hidden) rows"
    why = kernels.weight_refusal(weight)
    if why:
        return why
    on_cpu = hidden.device.type == "cpu" and flag("TRLSHIM_KERNELS_ON_CPU") is True and kernels.interpreting()
    if not kernels.HAS_TRITON or not (hidden.is_cuda or on_cpu) or weight.device != hidden.device:
        return "not on a device the kernel runs on"
    return None


def _logprob_apply(wrapped, instance, args, kwargs):
    """``ChunkedLogProbFunction.apply``: ``linear_logprobs`` inside a routed SFT loss where it is the same
    computation; TRL's function otherwise."""
    handle = _in_sft_loss.get()
    kernels = sys.modules.get("trlshim_kernels")
    if handle is None or kernels is None or not handle.active:
        return wrapped(*args, **kwargs)
    try:
        a = _signature(instance.forward).bind(None, *args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)  # TRL raises its own error
    a.apply_defaults()
    a = a.arguments
    if not _wants_gradients(a):  # metrics under no_grad (a custom loss, label smoothing): TRL's cheaper forward
        return wrapped(*args, **kwargs)
    why = refusal(kernels, a)
    if why:
        handle.fell_back("logprob_head", why)
        return wrapped(*args, **kwargs)
    log_probs, entropy, is_top1 = kernels.linear_logprobs(a["hidden"], a["weight"], a["targets"], a.get("bias"),
                                                  softcap=a.get("final_logit_softcapping"))
    outputs = set(a["outputs"])
    return (log_probs, entropy if "entropy" in outputs else None, None, None,
            is_top1 if "is_top1" in outputs else None)


def _expects(apply):
    """The head's ``forward`` takes the arguments this route binds (TRL 1.15-1.16's ``ChunkedLogProbFunction``)."""
    owner = getattr(apply, "__self__", None)
    forward = getattr(owner, "forward", None)
    if forward is None:
        return "not an autograd Function's apply"
    have = tuple(_signature(forward).parameters)
    if have != PARAMETERS:
        return f"ChunkedLogProbFunction.forward takes {have}, expected {PARAMETERS}"
    return None


def route(handle) -> str | None:
    """At routing time (``kernel_routing._route``): mark the handle so the SFT loss may use the kernel head;
    returns why not (None: routed)."""
    if flag("TRLSHIM_KERNELS_HEAD") is False:
        return "TRLSHIM_KERNELS_HEAD=0"
    from ...hooks import applied

    if "kernel_routing.logprob_head" not in applied():
        return "TRL's head has another shape in this release"
    handle.applied["logprob_head"] = 1
    report.decided("kernels.logprob_head", "trlshim: TRL's fused LM head runs trlshim_kernels.linear_logprobs in "
                   "the SFT loss (gradients made in the forward: one vocabulary-wide GEMM fewer; exact recompute "
                   "for any non-uniform loss; TRLSHIM_KERNELS_HEAD=0 keeps TRL's head)")
    return None


row(
    "kernel_routing.logprob_head", "trl.trainer.utils", "_ChunkedLogProbFunction.apply", ">=1.15",
    "TRL's fused LM head through trlshim_kernels.linear_logprobs in a routed SFT loss (one GEMM fewer)",
    wrapper=_logprob_apply, expects=_expects, optional=True,
)
row(
    "kernel_routing.logprob_head.loss", "trl.trainer.sft_trainer", "SFTTrainer.compute_loss", ">=1.15",
    "mark a routed SFT loss so TRL's fused head may run trlshim_kernels.linear_logprobs",
    wrapper=_sft_loss,
)
