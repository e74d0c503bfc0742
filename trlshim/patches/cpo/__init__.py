"""The CPO wing: ``CPOTrainer.__init__`` as one ordered pipeline of steps, and ``CPOConfig``'s rows.

CPO (research: trl-rl-matrix.md section 4) took its options from ``CPOConfig`` since it was created (0.8.2);
``max_target_length`` removed at 0.11; ``tokenizer`` -> ``processing_class`` at 0.12; moved to
``trl.experimental.cpo`` at 0.26 (the old path a subclass shim until 0.29, then gone: ``common/moved_trainers.py``
keeps the old imports working); the experimental config dropped ``max_prompt_length``, ``label_pad_token_id``
and ``padding_value`` at 0.28 and ``truncation_mode`` at 1.0 (no prompt truncation there: trlshim keeps
``max_prompt_length``/``truncation_mode`` on the config and ``common/pair_truncation.py`` cuts as TRL <= 0.27
did; the others only at values that mean what the release does anyway, else a TypeError); ``bf16`` defaults to
True from 0.19.
``learning_rate`` (1e-6 from 0.12) follows the installed release.
"""
from __future__ import annotations

from ..common.pair_wing import EMULATED, moved_pair_wing
from ..common.preference import Removed

REMOVED = (
    Removed("max_target_length", "0.11", "it only applied to encoder-decoder models: use max_completion_length"),
    Removed("max_prompt_length", "0.28", EMULATED, emulated=">=0.28", kind=int),
    Removed("truncation_mode", "1.0", EMULATED, emulated=">=0.28", kind=str),
    Removed("label_pad_token_id", "0.28", "labels are padded with -100 (the only value it accepts)", same=(-100,)),
    Removed("padding_value", "0.28", "the tokenizer's pad token is used", same=(None,)),
)

STEPS, WING = moved_pair_wing("cpo", "CPO", REMOVED)
PIPELINES, pipeline, config_class, trainer_class = WING.pipelines, WING.pipeline, WING.config_class, WING.trainer_class

__all__ = ["PIPELINES", "STEPS", "REMOVED", "WING", "config_class", "pipeline", "trainer_class"]
