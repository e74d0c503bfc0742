"""The SFT wing: ``SFTTrainer.__init__`` as one ordered pipeline of steps, plus SFT's other rows.

``STEPS`` is the order (outermost first): argument translation sees the user's call, kernel
routing sees the final arguments and the built trainer. Moving an import line changes nothing.
Other rows of this wing: ``SFTConfig`` field names (``config``), the injected legacy ``SFTConfig``
and ``DataCollatorForCompletionOnlyLM``, the optimizer groups of ``embedding_learning_rate``, the
RoPE router and TRL's metrics under the fused head (``kernel_routing``), TRL >= 1.15's own fused head
through our kernel (``logprob_head``).
"""
from __future__ import annotations

from ...pipeline import Pipeline, register, step
from ..common import eval_without_dataset
from . import (
    arguments,
    collators,
    config,
    dataset_checks,
    embedding_lr,
    formatting,
    kernel_routing,
    legacy_datasets,
    loss_masks,
    model_init,
    packing,
    vision,
)
from .facts import FACTS

STEPS = (
    step("sft.arguments", ">=0.7", "accept every release's SFTTrainer arguments (tokenizer/processing_class, SFT "
         "options on trainer or config, TrainingArguments as SFTConfig)", arguments.translate,
         expects=arguments.expects),
    step("sft.eval_without_dataset", ">=0.7", "eval_strategy without an eval_dataset fails at the first evaluation "
         "step, as before transformers 4.46 (which refuses it when the trainer is built)",
         eval_without_dataset.defer_error),
    step("sft.model_init_kwargs", ">=0.7", "model_init_kwargs keys in the spelling the release reads (torch_dtype "
         "<-> dtype: TRL >= 0.23 would load float32)", model_init.translate),
    step("sft.text_field_default", "<0.12", "dataset_text_field='text' where the release has no default and would "
         "refuse the call", arguments.text_field_default),
    step("sft.constant_length_dataset", ">=0.19", "a ConstantLengthDataset as train/eval dataset: its seq_length rows "
         "fed as they are (0.19 re-cuts them; 0.20 deleted the class)", legacy_datasets.constant_length_dataset),
    step("sft.dataset_kwargs", ">=0.15", "dataset_kwargs add_special_tokens/append_concat_token with their TRL <= 0.14 "
         "meaning (TRL >= 0.15 ignores them); unknown keys are an error", legacy_datasets.dataset_kwargs),
    step("sft.packing.eos_between", ">=0.15,<0.16", "packed plain-text examples separated by EOS as in every other "
         "release (0.15's packing concatenates them with nothing between)", legacy_datasets.packing_separator),
    step("sft.dataset_checks", ">=0.7", "an empty dataset, or one without the text column, is a clear error naming "
         "its columns", dataset_checks.check),
    step("sft.loss_masks", "<0.19", "completion_only_loss (TRL 0.17) and assistant_only_loss (TRL 0.19) on releases "
         "that predate them", loss_masks.emulate),
    step("sft.formatting.legacy", "<0.15", "formatting_func in both shapes, any dataset_text_field, chat datasets "
         "rendered with the chat template", formatting.legacy),
    step("sft.formatting.text_column", ">=0.15", "formatting_func in both shapes, any dataset_text_field, ShareGPT "
         "turns as messages", formatting.text_column),
    step("sft.vision_packing", "<0.22", "packing/padding-free with a vision-language model or image data is an "
         "error (image tokens and features would misalign)", vision.refuse_packing),
    step("sft.packing.strategy", "<0.19", "packing_strategy accepted and checked where the release has one packing",
         packing.strategy),
    step("sft.auto_padding_free", ">=0.7", "trlshim's automatic padding-free where it is safe and faster",
         packing.auto_padding_free),
    step("sft.padding_free.emulated", "<0.16", "padding_free=True through trlshim's flattening collator",
         packing.padding_free_emulated),
    step("sft.padding_free.cap", ">=1.0", "padding_free without packing keeps its max_length (TRL refuses the "
         "combination)", packing.padding_free_cap),
    step("sft.padding_free.position_ids", ">=0.19,<0.23", "packed rows keep per-example position_ids without flash "
         "attention", packing.position_ids),
    step("sft.collators.completion_only", ">=0.20", "the injected DataCollatorForCompletionOnlyLM refuses packing as "
         "TRL <= 0.14 did", collators.refuse_packing),
    step("sft.skip_prepare.image_columns", ">=0.24", "skip_prepare_dataset with image columns and a tokenizer: the "
         "dataset kept as it is, as TRL <= 0.23 did (0.24 refuses it as vision data)", vision.keep_image_columns),
    step("sft.kernels", ">=0.7", "route the model's compute to trlshim's Triton kernels (CUDA); stand in for a "
         "missing Liger", kernel_routing.route),
)

PIPELINE = register(Pipeline(
    name="sft.pipeline", trainer="SFTTrainer", module="trl.trainer.sft_trainer", attribute="SFTTrainer.__init__",
    reason="SFTTrainer calls of every release, with their meaning: the ordered SFT steps",
    steps=STEPS, config_class=arguments.installed_config_class, positional=arguments.LEADING, facts=FACTS,
    legacy_config=config.legacy_config_class, new_config=arguments.new_config, own_options=config.shim_options,
    set_own_option=config.set_own_option,
))

__all__ = ["PIPELINE", "STEPS", "config", "embedding_lr"]
