"""Route an SFT model's compute to trlshim's Triton kernels (``trlshim_kernels``) when the trainer is built.

Instance-level (the model object, never transformers' classes) and undone by ``trlshim.unpatch()``.
CUDA only: on CPU the model stays as it is. Off with ``TRLSHIM_KERNELS=0`` or
``trlshim.SFTConfig(use_trlshim_kernels=False)``.

Which kernels: the layer kernels (RMSNorm, SwiGLU/GeGLU) wherever the model type is supported.
The fused linear cross-entropy only where the release computes its loss from the model's own
``labels`` path and needs no logits (``OWN_LOSS_PATHS``): one fused head, never two, and TRL's
logged ``mean_token_accuracy``/``entropy`` stay correct.

RoPE: transformers' attention forwards call the module-level ``apply_rotary_pos_emb`` of their
modeling module, so one row per model-type module (``ROPE_MODEL_TYPES``) wraps that function. The
wrapper sends a call to ``trlshim_kernels`` only while a routed model's attention forward runs
(``apply_to_model(rope=True)`` marks those forwards with ``trlshim_kernels.rope_scope``, a
``contextvars`` flag) and its tensors are CUDA (CPU only under ``TRITON_INTERPRET=1`` with the test
switch ``TRLSHIM_KERNELS_ON_CPU=1``); every other call - other models in the process, shapes the
kernel does not handle - reaches the original function unchanged. ``TRLSHIM_KERNELS_ROPE=0`` leaves
RoPE to transformers while routing the other kernels.

Liger: when the user asked for it (``use_liger_kernel``/``use_liger``) and Liger is installed,
trlshim routes nothing. When Liger is missing, trlshim turns the option off before TRL sees it
(TRL/transformers would raise ImportError) and routes its own kernels, with one log line.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import sys
import weakref

from packaging.specifiers import SpecifierSet

from .. import hooks, report
from ..registry import row
from ..translate import installed_label
from ..versions import release, trl_version
from . import sft_config

# TRL's own loss paths that need the logits or fuse the LM head themselves: ours then routes only
# the layer kernels. (TRL range, why.)
OWN_LOSS_PATHS = (
    (">=1.15", "TRL >= 1.15 computes the loss with its own fused LM head"),
    (">=1.4,<1.15", "TRL 1.4-1.14 may patch the LM head itself (loss_type='chunked_nll')"),
    (">=0.15,<1.4", "TRL 0.15-1.3 compute mean_token_accuracy from the logits"),
)
LIGER_OPTIONS = ("use_liger_kernel", "use_liger")
ROPE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
_OFF = {"0", "false", "no", "off"}


def _enabled(args) -> bool:
    if os.environ.get("TRLSHIM_KERNELS", "").strip().lower() in _OFF:
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


def own_loss_path():
    """Why the installed release's loss path excludes our fused cross-entropy (None: it does not)."""
    v = trl_version()
    for spec, why in OWN_LOSS_PATHS:
        if v is not None and SpecifierSet(spec).contains(release(v), prereleases=True):
            return why
    return None


def _route(trainer, liger_replaced: bool):
    model = getattr(trainer, "model", None)
    if model is None:
        return
    try:
        import trlshim_kernels
    except ImportError:
        return report.decided("kernels.missing", "trlshim: kernels not routed (trlshim_kernels not importable)")
    if not _on_cuda(model) and not os.environ.get("TRLSHIM_KERNELS_ON_CPU"):
        return report.decided("kernels.cpu", "trlshim: kernels not routed (the model is not on CUDA)")
    if not trlshim_kernels.HAS_TRITON:
        return report.decided("kernels.triton", "trlshim: kernels not routed (triton is not installed)")
    lm = trlshim_kernels.models.unwrap_model(model)
    mtype = getattr(getattr(lm, "config", None), "model_type", None)
    if mtype not in trlshim_kernels.supported_model_types():
        return report.decided(f"kernels.type.{mtype}", f"trlshim: kernels not routed (model type {mtype!r})")
    why_not_ce = own_loss_path()
    rope = os.environ.get("TRLSHIM_KERNELS_ROPE", "").strip().lower() not in _OFF
    handle = trlshim_kernels.apply_to_model(model, rope=rope, fused_linear_cross_entropy=why_not_ce is None)
    undo = weakref.WeakMethod(handle.undo)  # unpatch undoes it; a dropped trainer's model is not kept alive
    hooks.at_undo(lambda: undo() and undo()())
    trainer._trlshim_kernels = handle
    parts = ", ".join(f"{k} x{n}" for k, n in handle.applied.items())
    note = f"; fused cross-entropy left to TRL: {why_not_ce}" if why_not_ce else ""
    via = " instead of Liger (not installed)" if liger_replaced else ""
    report.decided(f"kernels.{mtype}", f"trlshim: Triton kernels routed{via} into {mtype}: {parts}{note}")


def _sft_trainer_init(wrapped, instance, args, kwargs):
    cfg = kwargs.get("args")
    enabled = cfg is None or _enabled(cfg)
    liger = _liger_requested(cfg) if cfg is not None else None
    liger_replaced = False
    if liger and not _liger_installed():
        cfg = copy.copy(cfg)
        setattr(cfg, liger, False)
        if liger == "use_liger" and hasattr(cfg, "use_liger_kernel"):
            cfg.use_liger_kernel = False
        kwargs = dict(kwargs, args=cfg)
        liger_replaced = True
        report.decided(
            "kernels.liger_missing",
            f"trlshim: {liger}=True but liger-kernel is not installed: using trlshim's kernels instead "
            f"({installed_label()})",
        )
    result = wrapped(*args, **kwargs)
    if enabled and (not liger or liger_replaced):
        _route(instance, liger_replaced)
    return result


def _cpu_allowed(kernels) -> bool:
    return (os.environ.get("TRLSHIM_KERNELS_ON_CPU", "").strip().lower() not in _OFF | {""}
            and kernels._common.INTERPRET)


def _rope_wrapper(wrapped, instance, args, kwargs):
    """``apply_rotary_pos_emb``: our kernel inside a routed model's attention forward, else the original."""
    kernels = sys.modules.get("trlshim_kernels")  # not imported: no model can be routed
    if kernels is None or not kernels.rope_active():
        return wrapped(*args, **kwargs)
    q = args[0] if args else kwargs.get("q")
    if not (getattr(q, "is_cuda", False) or (getattr(q, "device", None) is not None and _cpu_allowed(kernels))):
        return wrapped(*args, **kwargs)
    return kernels.route_rotary(wrapped, args, kwargs)


for _mtype in ROPE_MODEL_TYPES:
    row(
        f"kernel_routing.rope.{_mtype}", f"transformers.models.{_mtype}.modeling_{_mtype}", "apply_rotary_pos_emb",
        ">=0.7", "RoPE of routed models through trlshim_kernels.apply_rotary (other calls unchanged)",
        wrapper=_rope_wrapper, optional=True,
    )

row(
    "kernel_routing.sft_trainer", "trl.trainer.sft_trainer", "SFTTrainer.__init__", ">=0.7",
    "route the model's compute to trlshim's Triton kernels (CUDA); stand in for a missing Liger",
    wrapper=_sft_trainer_init,
)
