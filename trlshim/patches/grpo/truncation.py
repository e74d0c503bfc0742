"""``max_prompt_length`` where TRL removed it (0.28+): prompts truncated as TRL 0.14-0.27 did (0.29+).

0.14-0.27 kept the last ``max_prompt_length`` tokens of each tokenized prompt (left truncation, before
generation; the default was 512 until 0.26 made it None). 0.28 removed the field ("filter your dataset").
trlshim carries the option on the config (``config.py``) and, after TRL's ``__init__``, wraps the trainer's
``_tokenize_prompts`` (0.29+: the one place prompts become token ids for generation, vLLM included) so each
prompt keeps its last ``max_prompt_length`` ids. 0.26-0.27 keep the field but no longer apply it (deprecated) and
0.28 removed it; they tokenize inside each generation path (no such single place): there the option is a
TypeError at the trainer, never a silent no-op. Prompts with images are refused when they would be cut
(0.20-0.27 protected image tokens; trlshim does not reproduce that). ``rollout_func`` tokenizes prompts
itself, so the two together are refused.
"""
from __future__ import annotations

import functools
import sys
from typing import Optional

from ... import report
from ...translate import installed_label


def _check_value(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise TypeError(f"GRPOConfig(max_prompt_length={value!r}) must be a positive int or None")


def _truncating(tokenize, limit, prompts):
    prompt_ids, images, *rest = tokenize(prompts)
    if not any(len(ids) > limit for ids in prompt_ids):
        return (prompt_ids, images, *rest)
    if images is not None and any(images):
        raise ValueError(f"max_prompt_length={limit} would cut prompts with images; trlshim does not emulate that on "
                         f"{installed_label()} (filter long prompts from the dataset instead)")
    return ([list(ids)[-limit:] for ids in prompt_ids], images, *rest)


def emulate(call) -> None:
    """Step: ``max_prompt_length`` kept by trlshim on the config -> truncate prompts after TRL's ``__init__``."""
    limit = call.shim("max_prompt_length")
    if limit is None:
        return
    _check_value(limit)
    if call.kwargs.get("rollout_func") is not None:
        raise TypeError(f"GRPOConfig(max_prompt_length=...) with rollout_func: {installed_label()} lets rollout_func "
                        "tokenize prompts itself, so trlshim cannot truncate them; truncate in rollout_func")
    report.decided("grpo.max_prompt_length", f"trlshim: prompts truncated to their last max_prompt_length tokens, "
                   f"as TRL 0.14-0.27 did ({installed_label()} removed the option)")

    def install(call):
        trainer = call.instance
        trainer._tokenize_prompts = functools.partial(_truncating, trainer._tokenize_prompts, limit)
        trainer.max_prompt_length = limit  # what 0.14-0.27 trainers exposed

    call.after(install)


def refuse(call) -> None:
    """Step (0.28): the option cannot be emulated there; refuse it rather than train on untruncated prompts."""
    if call.shim("max_prompt_length") is not None or getattr(call.args, "max_prompt_length", None) is not None:
        raise TypeError(f"GRPOConfig(max_prompt_length=...): {installed_label()} ignores or removed it and trlshim cannot truncate "
                        "prompts on this release; filter long prompts from the dataset, or use trl>=0.29 or <0.28")


def expects(init) -> Optional[str]:
    module = sys.modules.get(getattr(init, "__module__", ""), None)
    cls = getattr(module, "GRPOTrainer", None)
    if cls is not None and not callable(getattr(cls, "_tokenize_prompts", None)):
        return "GRPOTrainer has no _tokenize_prompts to truncate prompts in"
    return None
