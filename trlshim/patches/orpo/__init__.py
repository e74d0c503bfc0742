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

from ..common.pair_wing import EMULATED, moved_pair_wing
from ..common.preference import Removed

REMOVED = (
    Removed("max_prompt_length", "0.28", EMULATED, emulated=">=0.28", kind=int),
    Removed("truncation_mode", "1.0", EMULATED, emulated=">=0.28", kind=str),
    Removed("label_pad_token_id", "0.28", "labels are padded with -100 (the only value it accepts)", same=(-100,)),
)

STEPS, WING = moved_pair_wing("orpo", "ORPO", REMOVED)
PIPELINES, pipeline, config_class, trainer_class = WING.pipelines, WING.pipeline, WING.config_class, WING.trainer_class

__all__ = ["PIPELINES", "STEPS", "REMOVED", "WING", "config_class", "pipeline", "trainer_class"]
