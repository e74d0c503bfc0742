"""The DPO wing: ``DPOTrainer.__init__`` as one ordered pipeline of steps, plus DPO's other rows.

``STEPS`` is the order (outermost first). Other rows of this wing (``config``): DPOConfig field names
across releases, and the injected ``DPOConfig`` on TRL < 0.9.
"""
from __future__ import annotations

from ...pipeline import register, step
from . import arguments, columns, config, reference, truncation
from .facts import FACTS

STEPS = (
    step("dpo.arguments", ">=0.7", "accept every release's DPOTrainer arguments (tokenizer/processing_class, DPO "
         "options on trainer or config, beta at position 2, TrainingArguments as DPOConfig)", arguments.translate,
         expects=arguments.expects),
    step("dpo.columns", ">=0.14", "pre-tokenized data in any release's column names fed with its own token ids "
         "(prompt_input_ids/chosen_input_ids <-> prompt_ids/chosen_ids), not re-tokenized", columns.apply,
         expects=truncation.expects),
    step("dpo.columns.refused", "<0.14", "pre-tokenized data without text is a TypeError (the release tokenizes "
         "text inside __init__)", columns.refuse),
    step("dpo.truncation", ">=0.14", "max_prompt_length/max_completion_length (removed in 0.29) and TRL <= 0.11 "
         "truncation calls keep their meaning", truncation.apply, expects=truncation.expects),
    step("dpo.reference.initial_policy", ">=0.29,<1.16", "ref_model=None with precomputed reference log-probs uses "
         "the initial policy (not a model reloaded from the hub)", reference.initial_policy),
)

PIPELINE = register(arguments.DPOPipeline(
    name="dpo.pipeline", trainer="DPOTrainer", module="trl.trainer.dpo_trainer", attribute="DPOTrainer.__init__",
    reason="DPOTrainer calls of every release, with their meaning: the ordered DPO steps",
    steps=STEPS, config_class=arguments.installed_config_class, positional=arguments.LEADING, facts=FACTS,
    legacy_config=config.legacy_config_class, new_config=arguments.new_config,
    own_options=config.extras, set_own_option=config.set_extra,
))

__all__ = ["PIPELINE", "STEPS", "config"]
