"""The Reward wing: ``RewardTrainer.__init__`` as one ordered pipeline of steps, and ``RewardConfig``'s row.

What changed (research: trl-rl-matrix.md section 3): ``tokenizer`` -> ``processing_class`` (0.12); the
trainer kwarg ``max_length`` removed (0.14; ``RewardConfig.max_length`` since 0.7.11); the 0.24 rewrite
(``model`` may be a string, ``model_init`` removed, pre-tokenized columns renamed, again at 0.29); ``bf16``
defaults to True from 0.19 (unrunnable on CPU). Defaults that change training silently are left as the
installed release has them (``learning_rate`` 1e-4 from 0.24; ``max_length`` 1024 from 0.14) - the
README lists them.
"""
from __future__ import annotations

from ...pipeline import register, step
from ..common.preference import (
    LEADING,
    RangedPipeline,
    arguments,
    config_row,
    expects_trainer,
    import_first,
    model_init_kwargs,
    new_config,
)
from . import data

STEPS = (
    step("reward.model_init", ">=0.24", "model_init (removed at 0.24) is a TypeError with advice", data.model_init_removed),
    step("reward.arguments", ">=0.7", "tokenizer/processing_class, max_length and other RewardConfig fields as trainer "
         "kwargs, TrainingArguments as RewardConfig", arguments("RewardTrainer"), expects=expects_trainer("RewardTrainer")),
    step("reward.model_init_kwargs", ">=0.24", "model_init_kwargs keys in the spelling the release reads (torch_dtype "
         "<-> dtype)", model_init_kwargs("RewardTrainer")),
    step("reward.model_str", "<0.24", "model given as a name/path is loaded as TRL >= 0.24 loads it", data.model_string),
    step("reward.columns", ">=0.7", "pre-tokenized chosen/rejected columns in the installed release's spelling",
         data.columns),
)

config_class = import_first(("trl.trainer.reward_config", "RewardConfig"))
trainer_class = import_first(("trl.trainer.reward_trainer", "RewardTrainer"))

PIPELINE = register(RangedPipeline(
    name="reward.pipeline", trainer="RewardTrainer", module="trl.trainer.reward_trainer",
    attribute="RewardTrainer.__init__", reason="RewardTrainer calls of every release, with their meaning",
    steps=STEPS, config_class=config_class, positional=LEADING, new_config=new_config("Reward", "0.24"),
))

REMOVED = ()
config_row("reward_config.fields", "trl.trainer.reward_config", "RewardConfig", ">=0.7",
           "RewardConfig in every release's TrainingArguments spelling; bf16 runnable where TRL >= 0.19 defaults it on",
           REMOVED)

__all__ = ["PIPELINE", "STEPS", "REMOVED", "config_class", "trainer_class"]
