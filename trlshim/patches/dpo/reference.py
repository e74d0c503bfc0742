"""``ref_model=None`` with ``precompute_ref_log_probs=True`` and a full (non-PEFT) model.

TRL 0.8-0.28 (and 1.16) compute the reference log-probs once with the policy's own initial weights.
TRL 0.29-1.x (seen on 1.0: ``dpo_trainer.py`` "Reference model") instead *reloads* the reference from the
model's hub id, which fails for a model built in memory and, for a fine-tuned checkpoint, is a different
reference. trlshim passes a copy of the initial policy as ``ref_model`` there: the same reference as the
script's release, used once for the precomputation.
"""
from __future__ import annotations

import copy

from ... import report
from ...translate import installed_label


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def initial_policy(call) -> None:
    """Step: the initial policy as the reference (see module docstring)."""
    model = call.kwargs.get("model")
    if call.kwargs.get("ref_model") is not None or isinstance(model, str) or model is None or _is_peft(model):
        return
    if call.kwargs.get("peft_config") is not None or not call.get("precompute_ref_log_probs", False):
        return
    report.translated("DPOTrainer.ref_model=None", f"trlshim: DPOTrainer(ref_model=None, precompute_ref_log_probs="
                      f"True): the initial policy is the reference, as before TRL 0.29 ({installed_label()} would "
                      "reload the model from its hub id)")
    call.kwargs["ref_model"] = copy.deepcopy(model)
