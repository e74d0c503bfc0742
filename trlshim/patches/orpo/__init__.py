"""The ORPO wing: ``ORPOTrainer.__init__`` as one ordered pipeline of steps, and ``ORPOConfig``'s rows.

ORPO (research: trl-rl-matrix.md section 4) took its options from ``ORPOConfig`` since it was created (0.8.2);
``tokenizer`` -> ``processing_class`` at 0.12; the class moved to ``trl.experimental.orpo`` at 0.26 (the
old path a subclass shim until 0.29, then gone: ``common/moved_trainers.py`` keeps the old imports working);
the experimental config dropped ``max_prompt_length`` and ``label_pad_token_id`` at 0.28 and
``truncation_mode`` at 1.0 (those releases no longer truncate the prompt: trlshim keeps both options on the
config and ``common/pair_truncation.py`` cuts as TRL <= 0.27 did; ``label_pad_token_id`` only at -100, what the
release uses anyway, else a TypeError);
``bf16`` defaults to True from 0.19. ``learning_rate`` (1e-6 from 0.12) follows the installed release.

The pipeline row sits on the class whose ``__init__`` runs: ``trl.trainer.orpo_trainer`` before 0.26,
``trl.experimental.orpo.orpo_trainer`` from 0.26 (TRL's 0.26-0.28 shim calls it): one row per release.
"""
from __future__ import annotations

from ...pipeline import step
from ..common import pair_truncation
from ..common.preference import (
    LEADING,
    Home,
    Removed,
    arguments,
    declare_moved,
    expects_trainer,
    model_init_kwargs,
)

_EMULATED = "trlshim emulates it (patches/common/pair_truncation.py)"
REMOVED = (
    Removed("max_prompt_length", "0.28", _EMULATED, emulated=">=0.28", kind=int),
    Removed("truncation_mode", "1.0", _EMULATED, emulated=">=0.28", kind=str),
    Removed("label_pad_token_id", "0.28", "labels are padded with -100 (the only value it accepts)", same=(-100,)),
)

STEPS = (
    step("orpo.arguments", ">=0.7", "tokenizer/processing_class, ORPOConfig fields given to the trainer, "
         "TrainingArguments as ORPOConfig", arguments("ORPOTrainer", removed=REMOVED),
         expects=expects_trainer("ORPOTrainer")),
    step("orpo.model_init_kwargs", ">=0.7", "model_init_kwargs keys in the spelling the release reads "
         "(torch_dtype <-> dtype); a torch.dtype as its name where TRL < 0.11 takes only that",
         model_init_kwargs("ORPOTrainer", names_only_before="0.11")),
    step("orpo.max_prompt_length", ">=0.28", "max_prompt_length (removed in 0.28; truncation_mode from the config "
         "at 1.0) cuts the prompt, then the responses, as TRL <= 0.27 did", pair_truncation.emulate("ORPOTrainer"),
         expects=pair_truncation.expects),
)

WING = declare_moved(
    "orpo", "ORPOTrainer", "ORPOConfig", steps=STEPS, positional=LEADING, removed=REMOVED,
    homes=(Home("trainer", "trl.trainer.orpo_trainer", "trl.trainer.orpo_config", "<0.26"),
           Home("experimental", "trl.experimental.orpo.orpo_trainer", "trl.experimental.orpo.orpo_config", ">=0.26")),
    config_homes=(("trainer", "trl.trainer.orpo_config", "<0.29"),
                  ("experimental", "trl.experimental.orpo.orpo_config", ">=0.26")),
)
PIPELINES, pipeline, config_class, trainer_class = WING.pipelines, WING.pipeline, WING.config_class, WING.trainer_class

__all__ = ["PIPELINES", "STEPS", "REMOVED", "WING", "config_class", "pipeline", "trainer_class"]
