"""The KTO wing: ``KTOTrainer.__init__`` as one ordered pipeline of steps, and ``KTOConfig``'s rows.

KTO (research: trl-rl-matrix.md section 4) took its options from ``KTOConfig`` since it was created (0.8);
``tokenizer`` -> ``processing_class`` at 0.12; moved to ``trl.experimental.kto`` at 0.26 (``trl.KTOTrainer`` a
subclass shim calling it) and promoted back, rewritten, to ``trl.trainer.kto_trainer`` at 1.8 (the experimental
path now the shim). The experimental config dropped ``max_prompt_length``, ``max_completion_length``,
``truncation_mode``, ``is_encoder_decoder`` at 0.27 (the first and third emulated with the <= 0.26 rule by
``truncation.py``; ``max_completion_length`` only applied to encoder-decoder models: dropped) and
``label_pad_token_id``, ``padding_value``, ``ref_model_init_kwargs`` at 0.28, ``generate_during_eval`` at 1.2:
dropped when the value is what the release does anyway, else a TypeError saying what to do. ``bf16`` defaults to
True from 0.19. Positions after ``model, ref_model, args`` differ between releases (1.8 put ``data_collator``
before the datasets): keywords.
``learning_rate`` (5e-7 at 0.11, 1e-6 from 0.12) follows the installed release.
"""
from __future__ import annotations

from ...pipeline import step
from ...registry import row
from ..common.preference import Home, Removed, arguments, declare_moved, expects_trainer, model_init_kwargs
from . import truncation

POSITIONAL = ("model", "ref_model", "args")

_EXPERIMENTAL = ">=0.26,<1.8"
_EMULATED = ">=0.27"  # truncation.py: in front of _process_tokens (0.27-1.2) / on _prepare_dataset's output (1.3+)
_NO_PROMPT_TRUNCATION = "trlshim emulates it (patches/kto/truncation.py)"
REMOVED = (
    Removed("max_prompt_length", "0.27", _NO_PROMPT_TRUNCATION, emulated=_EMULATED, kind=int),
    Removed("max_completion_length", "0.27", "it only applied to encoder-decoder models, which this release's KTO "
            "does not support: remove it", emulated=_EMULATED, kind=int),
    Removed("truncation_mode", "0.27", _NO_PROMPT_TRUNCATION, emulated=_EMULATED, kind=str),
    Removed("is_encoder_decoder", "0.27", "encoder-decoder models are not supported by this release's KTO",
            same=(None, False)),
    Removed("label_pad_token_id", "0.28", "labels are padded with -100 (the only value it accepts)", same=(-100,)),
    Removed("padding_value", "0.28", "the tokenizer's pad token is used", same=(None,)),
    Removed("ref_model_init_kwargs", "0.28", "load the reference model yourself and pass ref_model=...",
            same=(None,)),
    Removed("generate_during_eval", "1.2", "generate samples with a callback of your own", same=(False,)),
)

STEPS = (
    step("kto.arguments", ">=0.7", "tokenizer/processing_class, KTOConfig fields given to the trainer, "
         "TrainingArguments as KTOConfig", arguments("KTOTrainer", removed=REMOVED),
         expects=expects_trainer("KTOTrainer")),
    step("kto.model_init_kwargs", ">=0.7", "model_init_kwargs/ref_model_init_kwargs keys in the spelling the "
         "release reads (torch_dtype <-> dtype); a torch.dtype as its name where TRL < 0.11 takes only that",
         model_init_kwargs("KTOTrainer", names_only_before="0.11")),
    step("kto.max_prompt_length", ">=0.27,<1.3", "max_prompt_length/truncation_mode (removed in 0.27) cut the prompt, "
         "then the completion, as TRL <= 0.26 did", truncation.emulate),
    step("kto.max_prompt_length.stable", ">=1.3", "max_prompt_length/truncation_mode (removed in 0.27) cut the prepared "
         "prompt, then the completion, as TRL <= 0.26 did", truncation.emulate_stable, expects=truncation.expects_stable),
)

row("kto.process_tokens", "trl.experimental.kto.kto_trainer", "_process_tokens", ">=0.27,<1.3",
    "the TRL <= 0.26 prompt/completion cut in front of _process_tokens when max_prompt_length is emulated",
    wrapper=truncation.process_tokens_wrapper, expects=truncation.expects_process_tokens)

WING = declare_moved(
    "kto", "KTOTrainer", "KTOConfig", steps=STEPS, positional=POSITIONAL, removed=REMOVED,
    homes=(Home("trainer", "trl.trainer.kto_trainer", "trl.trainer.kto_config", "<0.26"),
           Home("experimental", "trl.experimental.kto.kto_trainer", "trl.experimental.kto.kto_config", _EXPERIMENTAL),
           Home("stable", "trl.trainer.kto_trainer", "trl.trainer.kto_config", ">=1.8")),
    config_homes=(("trainer", "trl.trainer.kto_config", ">=0.7"),
                  ("experimental", "trl.experimental.kto.kto_config", _EXPERIMENTAL),
                  ("experimental_shim", "trl.experimental.kto", ">=1.8")),
)
PIPELINES, pipeline, config_class, trainer_class = WING.pipelines, WING.pipeline, WING.config_class, WING.trainer_class

__all__ = ["PIPELINES", "STEPS", "REMOVED", "WING", "config_class", "pipeline", "trainer_class"]
