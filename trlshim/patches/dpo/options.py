"""DPO options across TRL 0.7 -> 1.16: one table per kind of change (evidence: trl-rl-matrix.md section 1).

- ``DPO_OPTIONS``: options that were ``DPOTrainer`` keyword arguments up to 0.12 and/or ``DPOConfig`` fields
  from 0.9. Given to the trainer, they go to (a copy of) the config wherever the release has one.
- ``DROPPED_AT``: options a release removed (0.15 ... 0.29) whose given value means what the release does
  anyway (their old default, or a flag TRL itself calls "not needed"): dropped, with a report.
- ``EMULATED``: options removed in 0.29 that trlshim carries out itself (``patches/dpo/truncation.py``).
- ``ADVICE``: what to do instead, for a removed option whose value trlshim cannot honour (a TypeError).
"""
from __future__ import annotations

DPO_OPTIONS = (
    "beta", "label_smoothing", "loss_type", "label_pad_token_id", "padding_value", "truncation_mode", "max_length",
    "max_prompt_length", "max_target_length", "max_completion_length", "is_encoder_decoder", "disable_dropout",
    "generate_during_eval", "precompute_ref_log_probs", "precompute_ref_batch_size", "dataset_num_proc",
    "model_init_kwargs", "ref_model_init_kwargs", "model_adapter_name", "ref_adapter_name", "reference_free",
    "force_use_ref_model", "rpo_alpha", "use_weighting", "f_divergence_type", "f_alpha_divergence_coef",
    "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps", "discopop_tau", "use_logits_to_keep",
    "use_num_logits_to_keep", "padding_free", "tools", "use_liger_loss", "base_model_attribute_name", "ld_alpha",
    "loss_weights", "pad_token", "pad_to_multiple_of", "activation_offloading",
)

# option -> values that change nothing where the release no longer has the option (its old default, or
# "any value" as ``...`` where TRL's own removal notice says the option is not needed any more).
DROPPED_AT = {
    "generate_during_eval": (False,),
    "model_adapter_name": (None,),
    "ref_adapter_name": (None,),
    "force_use_ref_model": (False,),
    "label_pad_token_id": (-100,),  # the only value TRL >= 0.29 uses for its loss mask
    "reference_free": (False,),
    "ref_model_init_kwargs": (None,),
    "tools": (None,),
    "base_model_attribute_name": ("model",),
    "use_logits_to_keep": (False, True),  # memory only: the loss is the same
    "use_num_logits_to_keep": (False, True),
    "is_encoder_decoder": (None,),
    "padding_value": (None,),
    "max_target_length": (None,),
    "max_prompt_length": (None,),
    "max_completion_length": (None,),
    "rpo_alpha": (None,),
    "use_liger_loss": (False,),
}

# Options TRL >= 0.29 removed that trlshim honours itself, with their pre-0.29 meaning.
EMULATED = ("max_prompt_length", "max_completion_length")

# The older spelling of an option, where a release has only the other (same meaning).
RENAMED = {"max_target_length": "max_completion_length"}  # deprecated 0.13, removed 0.14

ADVICE = {
    "generate_during_eval": "generate samples in a TrainerCallback (TRL's advice since 0.28)",
    "model_adapter_name": "load only the adapter to train; TRL >= 0.29 manages the reference adapter itself",
    "ref_adapter_name": "load only the adapter to train; TRL >= 0.29 manages the reference adapter itself",
    "force_use_ref_model": "pass ref_model=None with a PEFT model, or a full ref_model with a full model",
    "label_pad_token_id": "TRL >= 0.29 masks padding itself (-100 is the only value it uses)",
    "reference_free": "use CPOTrainer for reference-free preference training (TRL's advice)",
    "ref_model_init_kwargs": "build the reference model yourself and pass ref_model=...",
    "tools": "put the tools in a 'tools' column of the dataset",
    "base_model_attribute_name": "leave it at 'model' (only the Liger loss read it)",
    "is_encoder_decoder": "remove it: the release detects it from the model",
    "padding_value": "pass pad_token= (the token string) on TRL >= 0.24, or set tokenizer.pad_token",
    "use_liger_loss": "use_liger_kernel=True (TRL >= 0.25)",
    "rpo_alpha": "loss_type=['sigmoid', 'sft'], loss_weights=[1.0, alpha] (TRL >= 0.20)",
    "max_completion_length": "max_length (prompt + completion) on this release",
    "loss_weights": "a single loss_type on this release (loss_weights arrived in TRL 0.20)",
    "pad_token": "padding_value=<token id> on this release (pad_token arrived in TRL 0.24)",
}

# TRL 0.7-0.8 DPOTrainer keyword defaults (read from 0.8.6's signature; tests/patches/test_dpo_trainer.py checks
# them against the installed release before 0.9): the fields of trlshim's DPOConfig there. A table, not an
# inspection of DPOTrainer at injection time: importing trl.trainer.dpo_trainer from inside trl's post-import
# hook can deadlock against another thread's import.
LEGACY_DEFAULTS = (
    ("beta", 0.1), ("label_smoothing", 0), ("loss_type", "sigmoid"), ("label_pad_token_id", -100),
    ("padding_value", None), ("truncation_mode", "keep_end"), ("max_length", None), ("max_prompt_length", None),
    ("max_target_length", None), ("is_encoder_decoder", None), ("disable_dropout", True),
    ("generate_during_eval", False), ("precompute_ref_log_probs", False), ("dataset_num_proc", None),
    ("model_init_kwargs", None), ("ref_model_init_kwargs", None), ("model_adapter_name", None),
    ("ref_adapter_name", None), ("reference_free", False), ("force_use_ref_model", False),
)
