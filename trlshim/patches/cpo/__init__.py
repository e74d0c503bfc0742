"""The CPO wing: ``CPOTrainer.__init__`` as one ordered pipeline of steps, and ``CPOConfig``'s rows.

CPO (research: trl-rl-matrix.md section 4) took its options from ``CPOConfig`` since it was created (0.8.2);
``max_target_length`` removed at 0.11; ``tokenizer`` -> ``processing_class`` at 0.12; moved to
``trl.experimental.cpo`` at 0.26 (the old path a subclass shim until 0.29, then gone: ``common/moved_trainers.py``
keeps the old imports working); the experimental config dropped ``max_prompt_length``, ``label_pad_token_id``
and ``padding_value`` at 0.28 and ``truncation_mode`` at 1.0 (no prompt truncation there: a TypeError saying
so, except values that mean what the release does anyway); ``bf16`` defaults to True from 0.19.
``learning_rate`` (1e-6 from 0.12) follows the installed release.
"""
from __future__ import annotations

from ...pipeline import register, step
from ...versions import trl_in
from ..reward.common import (
    LEADING,
    RangedPipeline,
    Removed,
    arguments,
    config_row,
    expects_trainer,
    import_first,
    new_config,
)

STEPS = (
    step("cpo.arguments", ">=0.7", "tokenizer/processing_class, CPOConfig fields given to the trainer, "
         "TrainingArguments as CPOConfig", arguments("CPOTrainer"), expects=expects_trainer("CPOTrainer")),
)

config_class = import_first(("trl.experimental.cpo.cpo_config", "CPOConfig"), ("trl.trainer.cpo_config", "CPOConfig"))
trainer_class = import_first(("trl.experimental.cpo.cpo_trainer", "CPOTrainer"),
                             ("trl.trainer.cpo_trainer", "CPOTrainer"))

PIPELINES = tuple(register(RangedPipeline(
    name=f"cpo.pipeline[{where}]", trainer="CPOTrainer", module=module, attribute="CPOTrainer.__init__",
    reason="CPOTrainer calls of every release, with their meaning", steps=STEPS, config_class=config_class,
    positional=LEADING, new_config=new_config("CPO", "0.13"), versions=versions,
)) for where, module, versions in (("trainer", "trl.trainer.cpo_trainer", "<0.26"),
                                   ("experimental", "trl.experimental.cpo.cpo_trainer", ">=0.26")))


def pipeline():
    """The pipeline whose row applies to the installed release (for ``trlshim.CPOTrainer``)."""
    return PIPELINES[0] if trl_in("<0.26") else PIPELINES[1]


_NO_PROMPT_TRUNCATION = ("this release never truncates the prompt (only the responses, to max_length): truncate "
                         "prompts in your dataset, or pin trl<0.28")
REMOVED = (
    Removed("max_target_length", "0.11", "it only applied to encoder-decoder models: use max_completion_length"),
    Removed("max_prompt_length", "0.28", _NO_PROMPT_TRUNCATION),
    Removed("truncation_mode", "1.0", _NO_PROMPT_TRUNCATION),
    Removed("label_pad_token_id", "0.28", "labels are padded with -100 (the only value it accepts)", same=(-100,)),
    Removed("padding_value", "0.28", "the tokenizer's pad token is used", same=(None,)),
)
for _where, _module, _versions in (("trainer", "trl.trainer.cpo_config", "<0.29"),
                                   ("experimental", "trl.experimental.cpo.cpo_config", ">=0.26")):
    config_row(f"cpo_config.fields[{_where}]", _module, "CPOConfig", _versions,
               "CPOConfig in every release's spelling: removed fields explained, bf16 runnable where TRL >= 0.19 "
               "defaults it on", REMOVED)

__all__ = ["PIPELINES", "STEPS", "REMOVED", "config_class", "pipeline", "trainer_class"]
