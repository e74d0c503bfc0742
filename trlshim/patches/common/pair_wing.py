"""The wing of a pair-preference trainer that TRL moved to ``trl.experimental`` at 0.26 (the old path a subclass
shim until 0.29) and whose experimental config stopped truncating the prompt at 0.28 (``truncation_mode`` gone
at 1.0): CPO and ORPO. Their steps and homes differ only by the trainer's name and the options each removed, so
a wing is its name plus its ``REMOVED`` table (``cpo/__init__.py``, ``orpo/__init__.py``)."""
from __future__ import annotations

from ...pipeline import step
from . import pair_truncation
from .preference import LEADING, Home, arguments, declare_moved, expects_trainer, model_init_kwargs

EMULATED = "trlshim emulates it (patches/common/pair_truncation.py)"


def moved_pair_wing(wing: str, prefix: str, removed: tuple):
    """Declare ``{prefix}Trainer``/``{prefix}Config`` (module names ``wing``): three steps, two homes. Returns
    ``(steps, Wing)``."""
    trainer, config = f"{prefix}Trainer", f"{prefix}Config"
    steps = (
        step(f"{wing}.arguments", ">=0.7", f"tokenizer/processing_class, {config} fields given to the trainer, "
             f"TrainingArguments as {config}", arguments(trainer, removed=removed), expects=expects_trainer(trainer)),
        step(f"{wing}.model_init_kwargs", ">=0.7", "model_init_kwargs keys in the spelling the release reads "
             "(torch_dtype <-> dtype); a torch.dtype as its name where TRL < 0.11 takes only that",
             model_init_kwargs(trainer, names_only_before="0.11")),
        step(f"{wing}.max_prompt_length", ">=0.28", "max_prompt_length (removed in 0.28; truncation_mode from the "
             "config at 1.0) cuts the prompt, then the responses, as TRL <= 0.27 did", pair_truncation.emulate(trainer),
             expects=pair_truncation.expects),
    )
    old, new = f"trl.trainer.{wing}", f"trl.experimental.{wing}.{wing}"
    return steps, declare_moved(
        wing, trainer, config, steps=steps, positional=LEADING, removed=removed,
        homes=(Home("trainer", f"{old}_trainer", f"{old}_config", "<0.26"),
               Home("experimental", f"{new}_trainer", f"{new}_config", ">=0.26")),
        config_homes=(("trainer", f"{old}_config", "<0.29"), ("experimental", f"{new}_config", ">=0.26")),
    )
