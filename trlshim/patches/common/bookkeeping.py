"""The Trainer's per-step bookkeeping that walks every module of the model while the GPU waits: the same results,
without the walks where nothing changed. Every TRL release (every trainer is a transformers ``Trainer``).

Why: each step ``Trainer.training_step`` calls ``model.train()`` and the loop adds ``floating_point_ops(inputs)``
to ``total_flos``, which counts the model's parameters (``PreTrainedModel.num_parameters(exclude_embeddings=True)``
walks every module and every parameter). A PEFT LoRA model of a 16-layer Llama has 1337 modules: on an H200 host
the two walks leave the GPU idle ~6.5 ms before a step's first kernel and take ~half of a ~10 ms idle gap after its
backward (benchmarks/results.md, sixth session), in a LoRA step of ~200 ms that is bound by the host.

- ``PreTrainedModel.train(mode)`` (transformers releases that define it; older ones use ``nn.Module.train``):
  when every module below is already in ``mode`` and every one's class takes ``train`` and ``__setattr__`` from
  ``nn.Module`` or ``PreTrainedModel`` (which do nothing else when the mode does not change), there is nothing to
  do: return the model, as ``train`` does. Anything else - one module in the other mode, a class with its own
  ``train`` - runs the original.
- ``PreTrainedModel.num_parameters``: the count of all parameters (``only_trainable=False``) is kept per model
  and recounted after a module, parameter or buffer is registered into any module of a counted model (torch's
  global registration hooks; ``del`` of a submodule and writes into ``_parameters`` / ``_modules`` bypass them:
  the count feeds the ``total_flos`` statistic only, never training). Registrations into other modules do not
  count: Llama-family forwards build ``self.layers[:n]``, a new ``ModuleList`` that registers every layer again
  each step, and counting those kept nothing on those models. ``only_trainable=True`` depends on
  ``requires_grad`` and is never cached.

``TRLSHIM_FAST_BOOKKEEPING=0`` turns both off (read at each call).
"""
from __future__ import annotations

import weakref

from ...flags import flag
from ...hooks import at_undo
from ...registry import row

MODULE = "transformers.modeling_utils"
_STATE = {"generation": 0, "hooks": []}
_COUNTED: weakref.WeakSet = weakref.WeakSet()  # every module of every model whose count is kept
_PLAIN: dict = {}  # class -> whether its train / eval / __setattr__ are nn.Module's or PreTrainedModel's


def _on() -> bool:
    return flag("TRLSHIM_FAST_BOOKKEEPING") is not False


def _bump(parent, *_args):
    """A registration into a counted model's module changes what it counts; elsewhere (a fresh container) not."""
    if parent in _COUNTED:
        _STATE["generation"] += 1


def _watch_registrations() -> None:
    """Count registrations of modules, parameters and buffers anywhere (installed once, on first use)."""
    if _STATE["hooks"]:
        return
    from torch.nn.modules import module

    for register in ("register_module_module_registration_hook", "register_module_parameter_registration_hook",
                     "register_module_buffer_registration_hook"):
        _STATE["hooks"].append(getattr(module, register)(_bump))
    at_undo(_unwatch)


def _unwatch() -> None:
    """``trlshim.unpatch()``: remove the registration hooks and every kept count."""
    while _STATE["hooks"]:
        _STATE["hooks"].pop().remove()
    _STATE["generation"] += 1  # counts kept so far are never read again
    _COUNTED.clear()


def _bind_num_parameters(only_trainable=False, exclude_embeddings=False):
    return only_trainable, exclude_embeddings


def _num_parameters_wrapper(wrapped, instance, args, kwargs):
    if instance is None or not _on():
        return wrapped(*args, **kwargs)
    try:
        only_trainable, exclude_embeddings = _bind_num_parameters(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    if only_trainable:
        return wrapped(*args, **kwargs)
    _watch_registrations()
    key = (bool(exclude_embeddings), bool(getattr(instance, "is_loaded_in_4bit", False)))
    cache = instance.__dict__.setdefault("_trlshim_num_parameters", {})
    hit = cache.get(key)
    if hit is not None and hit[0] == _STATE["generation"]:
        return hit[1]
    generation = _STATE["generation"]
    count = wrapped(*args, **kwargs)
    _COUNTED.update(instance.modules())
    cache[key] = (generation, count)
    return count


def _owner(cls, name):
    return next((k for k in cls.__mro__ if name in k.__dict__), None)


def _plain(cls, pretrained) -> bool:
    known = _PLAIN.get(cls)
    if known is None:
        from torch import nn

        known = (_owner(cls, "train") in (nn.Module, pretrained) and _owner(cls, "eval") in (nn.Module, pretrained)
                 and _owner(cls, "__setattr__") is nn.Module)
        _PLAIN[cls] = known
    return known


def _already_in(root, mode: bool, pretrained) -> bool:
    """Every module under ``root`` is in ``mode`` and trains/evals the plain way (nothing ``train`` would change)."""
    stack, seen = [root], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if m.training is not mode or not _plain(type(m), pretrained):
            return False
        stack.extend(c for c in m._modules.values() if c is not None)
    return True


def _bind_train(mode=True):
    return mode


def _train_wrapper(wrapped, instance, args, kwargs):
    if instance is None or not _on():
        return wrapped(*args, **kwargs)
    try:
        mode = _bind_train(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    from transformers.modeling_utils import PreTrainedModel

    if isinstance(mode, bool) and _already_in(instance, mode, PreTrainedModel):
        return instance
    return wrapped(*args, **kwargs)


def _expects_method(target) -> str | None:
    return None if callable(target) else f"not callable: {target!r}"


row("bookkeeping.num_parameters", MODULE, "PreTrainedModel.num_parameters", ">=0.7",
    "the Trainer counts every parameter each step (total_flos): counted again only after a registration",
    wrapper=_num_parameters_wrapper, expects=_expects_method)
row("bookkeeping.train", MODULE, "PreTrainedModel.train", ">=0.7",
    "the Trainer calls model.train() each step, walking every module: nothing to do when all are in training mode",
    wrapper=_train_wrapper, expects=_expects_method, optional=True)
