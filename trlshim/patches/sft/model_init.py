"""SFT step: ``model_init_kwargs`` keys in the spelling the installed release reads (every release).

Where the option lives differs (an SFTTrainer keyword up to 0.12, an SFTConfig field from 0.9); the
step reads and writes it through ``call.get``/``call.set`` after the arguments step placed it, so the
caller's dict and config are never mutated. The key table is ``patches/common/model_init_kwargs.py``.
"""
from __future__ import annotations

from ..common.model_init_kwargs import translate_model_init_kwargs


def translate(call) -> None:
    """Step: rename keys of ``model_init_kwargs`` (``torch_dtype`` <-> ``dtype``) for the installed release."""
    value = call.get("model_init_kwargs")
    if not isinstance(value, dict):
        return
    new = translate_model_init_kwargs(value, "model_init_kwargs")
    if list(new) != list(value):  # only keys are renamed
        call.set("model_init_kwargs", new)
