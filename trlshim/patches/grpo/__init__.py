"""The GRPO wing (TRL >= 0.14): ``GRPOTrainer.__init__`` as one ordered pipeline of steps, plus the
``GRPOConfig.__init__`` row (``config``).

``STEPS`` is the order: arguments are named and placed first, reward functions are adapted to what the
release passes, then ``max_prompt_length`` is emulated where the release no longer applies it (0.26+). On releases
without GRPO (< 0.14) the target module does not exist and nothing fires.
"""
from __future__ import annotations

from ...pipeline import Pipeline, register, step
from . import arguments, batch, config, rewards, truncation

STEPS = (
    step("grpo.arguments", ">=0.14", "tokenizer/processing_class, positionals by name, unknown arguments named, "
         "TrainingArguments as GRPOConfig", arguments.translate, expects=arguments.expects),
    step("grpo.batch_meaning", ">=0.14", "with written_for: per_device_*_batch_size in the installed release's unit "
         "(0.14 counted prompts, 0.15+ completions; x or / num_generations, same prompts per step)", batch.translate),
    step("grpo.reward_kwargs", ">=0.14", "reward functions without **kwargs get only the keyword arguments they "
         "accept (TRL adds completion_ids 0.18, trainer_state 0.20, log_extra/log_metric 1.0)", rewards.wrap),
    step("grpo.max_prompt_length", ">=0.29", "max_prompt_length (removed in 0.28) keeps each prompt's last N tokens, "
         "as TRL 0.14-0.23 did: on _tokenize_prompts' ids", truncation.emulate, expects=truncation.expects),
    step("grpo.max_prompt_length.generation", ">=0.26,<0.29", "max_prompt_length (0.26-0.27: deprecated, unused; "
         "0.28: removed) keeps each prompt's last N tokens, as TRL 0.14-0.23 did: the left-padded batch of "
         "transformers' generation path cut to its last N columns (vLLM, paged generation, tools: TypeError)",
         truncation.emulate_generation, expects=truncation.expects_generation),
)

PIPELINE = register(Pipeline(
    name="grpo.pipeline", trainer="GRPOTrainer", module="trl.trainer.grpo_trainer", attribute="GRPOTrainer.__init__",
    reason="GRPOTrainer calls of every release (0.14+), with their meaning: the ordered GRPO steps",
    steps=STEPS, config_class=config.installed_config_class, positional=arguments.LEADING,
    new_config=arguments.new_config, own_options=config.own_options, set_own_option=config.set_own_option,
))

__all__ = ["PIPELINE", "STEPS", "config", "rewards"]
