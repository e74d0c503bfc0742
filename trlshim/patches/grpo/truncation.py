"""GRPO ``max_prompt_length`` where TRL stopped applying it (0.26+): prompts cut as TRL 0.14-0.23 did.

TRL 0.14-0.23 tokenized the prompts left-padded and, before generation, kept the last ``max_prompt_length``
columns: ``prompt_ids[:, -max_prompt_length:]`` (and the mask), i.e. each prompt its last N ids
(``0.15.2:trl/trainer/grpo_trainer.py:L530-L532``; 0.20-0.23 kept image tokens, ``truncate_with_protected_tokens``).
0.24-0.25 passed ``max_length``/``truncation=True`` to the tokenizer instead: the same cut with the left-truncating
tokenizer TRL loads itself, the first N ids with a user's right-truncating one. The default was 512 until 0.26,
which made it None, deprecated and no longer read; 0.28 removed it ("filter your dataset"). trlshim carries it on
the config from 0.28 (``config.py``) and applies it after TRL's ``__init__``:

- 0.29+: wraps the trainer's ``_tokenize_prompts`` (the one place prompts become ids for generation, vLLM
  included) so each prompt keeps its last ``max_prompt_length`` ids.
- 0.26-0.28: prompts are tokenized inside each generation path. In the transformers (regular) path
  ``_generate_single_turn`` tokenizes them left-padded (``processing_class(text=..., padding=True,
  padding_side="left", return_tensors="pt")`` or ``apply_chat_template(..., tokenize=True, ...)`` alike); during that
  call the trainer's ``processing_class`` is a thin proxy slicing what it returns to the last N columns - the old
  slice exactly (per-token tensors alike: ``token_type_ids``; a batch transformers 4.x padded on the right, its
  ``apply_chat_template`` ignoring ``padding_side``, is first moved to the left, as the old releases padded it); the
  prompt ids that reach the loss are the generation's, so they are cut too. vLLM and paged generation tokenize
  elsewhere, and the tool loop re-tokenizes the whole prompt and checks it against the generated one: with
  ``use_vllm``, ``use_transformers_paged`` or ``tools`` the option is a TypeError at the trainer, never a silent
  no-op; a generation call that tokenizes in another form (an unknown path) is a TypeError too.

Everywhere: ``rollout_func`` tokenizes prompts itself (refused with the option); prompts with images are a
ValueError when they would be cut (0.20-0.23 protected image tokens; trlshim does not reproduce that).
"""
from __future__ import annotations

import functools
import sys
from typing import Optional

from ... import report
from ...translate import installed_label

# Settings of GRPOTrainer 0.26-0.28 under which the prompts never pass the regular generation path, with what to do.
NOT_REGULAR = (
    ("use_vllm", "vLLM tokenizes the prompt text itself; generate with transformers (use_vllm=False)"),
    ("use_transformers_paged", "paged generation tokenizes the prompts unpadded; use use_transformers_paged=False"),
)


def _check_value(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise TypeError(f"GRPOConfig(max_prompt_length={value!r}) must be a positive int or None")


def _images_refused(limit) -> ValueError:
    return ValueError(f"max_prompt_length={limit} would cut prompts with images; trlshim does not emulate that on "
                      f"{installed_label()} (TRL 0.20-0.23 kept image tokens): filter long prompts from the dataset")


def _limit(call) -> Optional[int]:
    """The option, checked (the release's own deprecated field on 0.26-0.27, trlshim's carried one from 0.28)."""
    limit = call.get("max_prompt_length")
    _check_value(limit)
    if limit is not None and call.kwargs.get("rollout_func") is not None:
        raise TypeError(f"GRPOConfig(max_prompt_length={limit}) with rollout_func: {installed_label()} lets "
                        "rollout_func tokenize prompts itself, so trlshim cannot truncate them; truncate in "
                        "rollout_func")
    return limit


# -- TRL >= 0.29: one place ---------------------------------------------------------------------------------------
def _truncating(tokenize, limit, prompts):
    prompt_ids, images, *rest = tokenize(prompts)
    if not any(len(ids) > limit for ids in prompt_ids):
        return (prompt_ids, images, *rest)
    if images is not None and any(images):
        raise _images_refused(limit)
    return ([list(ids)[-limit:] for ids in prompt_ids], images, *rest)


def emulate(call) -> None:
    """Step (0.29+): ``max_prompt_length`` kept by trlshim on the config -> truncate prompts after TRL's ``__init__``."""
    limit = _limit(call)
    if limit is None:
        return
    report.decided("grpo.max_prompt_length", f"trlshim: prompts truncated to their last max_prompt_length tokens, "
                   f"as TRL 0.14-0.23 did ({installed_label()} removed the option)")

    _wrap_after_init(call, limit, "_tokenize_prompts",
                     lambda trainer, tokenize, limit: functools.partial(_truncating, tokenize, limit))


# -- TRL 0.26-0.28: the regular generation path -------------------------------------------------------------------
class LastColumns:
    """The trainer's ``processing_class`` during one ``_generate_single_turn`` (TRL 0.26-0.28): a left-padded
    prompt batch it returns keeps its last ``limit`` columns; everything else is the real processing class's."""

    def __init__(self, inner, limit: int):
        self.__dict__.update(_inner=inner, _limit=limit, _calls=0)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    def __call__(self, *args, **kwargs):
        return self._cut(self._inner(*args, **kwargs), kwargs)

    def apply_chat_template(self, *args, **kwargs):
        out = self._inner.apply_chat_template(*args, **kwargs)
        return self._cut(out, kwargs) if kwargs.get("tokenize") else out  # a rendered text: nothing tokenized

    def _cut(self, out, kwargs):
        if not (kwargs.get("padding") is True and kwargs.get("padding_side") == "left"
                and kwargs.get("return_tensors") == "pt" and hasattr(out, "keys")):
            raise TypeError(f"GRPOConfig(max_prompt_length={self._limit}): {installed_label()} tokenized the prompts "
                            f"for generation in a form trlshim does not cut ({sorted(kwargs)}); filter long prompts "
                            "from the dataset, or use trl>=0.29 or <0.26")
        object.__setattr__(self, "_calls", self._calls + 1)
        ids, mask = out["input_ids"], out["attention_mask"]
        if ids.shape[1] <= self._limit or int(mask.sum(-1).max()) <= self._limit:
            return out
        per_token = [k for k in out.keys() if getattr(out[k], "shape", None) == ids.shape]
        if len(per_token) < len(out.keys()) or kwargs.get("images") is not None:
            raise _images_refused(self._limit)  # pixel values, image grids, ...: their tokens would be cut
        shifts = _to_the_right(mask)
        if shifts is not None:
            for key in per_token:
                out[key] = _rolled(out[key], shifts)
        if any(row != sorted(row) for row in out["attention_mask"].tolist()):  # a gap inside a prompt
            raise TypeError(f"GRPOConfig(max_prompt_length={self._limit}): a prompt batch with padding inside a row "
                            f"cannot be cut as TRL 0.14-0.23 did ({installed_label()})")
        for key in per_token:  # input_ids, attention_mask, token_type_ids, ...
            out[key] = out[key][:, -self._limit:]  # TRL 0.14-0.23: prompt_ids[:, -max_prompt_length:]
        return out


def _to_the_right(mask):
    """How far each row must move right to end at the last column (None: all do). transformers 4.x's
    ``apply_chat_template`` does not take ``padding_side`` (TRL 0.26-0.28 pass it), so a right-padding tokenizer pads
    chat prompts on the right there; TRL 0.14-0.23 tokenized the rendered text left-padded, then cut."""
    width = mask.shape[1]
    shifts = [width - 1 - max((i for i, m in enumerate(row) if m), default=width - 1) for row in mask.tolist()]
    return shifts if any(shifts) else None


def _rolled(value, shifts):
    import torch

    return torch.stack([torch.roll(row, shift) for row, shift in zip(value, shifts)])


class _Generating:
    """``_generate_single_turn`` with the trainer's ``processing_class`` swapped for ``LastColumns`` during the
    call, and restored after it."""

    def __init__(self, trainer, generate, limit: int):
        self.trainer, self.generate, self.limit = trainer, generate, limit

    def __call__(self, *args, **kwargs):
        trainer = self.trainer
        inner = trainer.processing_class
        proxy = LastColumns(inner, self.limit)
        trainer.processing_class = proxy
        try:
            out = self.generate(*args, **kwargs)
        finally:
            trainer.processing_class = inner
        if not proxy._calls:
            raise TypeError(f"GRPOConfig(max_prompt_length={self.limit}): {installed_label()} generated without "
                            "tokenizing the prompts where trlshim cuts them (a generation path other than "
                            "transformers' generate); filter long prompts from the dataset, or use trl>=0.29 or <0.26")
        return out


def emulate_generation(call) -> None:
    """Step (0.26-0.28): the option -> the regular generation path's prompt batch cut (module docstring)."""
    limit = _limit(call)
    if limit is None:
        return
    for name, advice in NOT_REGULAR:
        if call.get(name):
            raise TypeError(f"GRPOConfig(max_prompt_length={limit}) with {name}=True: {installed_label()} does not "
                            "apply max_prompt_length (0.26-0.27 ignore it, 0.28 removed it) and trlshim can only cut "
                            f"the prompts of transformers' generate there: {advice}, filter long prompts from the "
                            "dataset, or use trl>=0.29 or <0.26")
    if call.kwargs.get("tools"):
        raise TypeError(f"GRPOTrainer(tools=...) with GRPOConfig(max_prompt_length={limit}): {installed_label()}'s "
                        "tool loop re-tokenizes the whole prompt after each tool call, so trlshim cannot keep it cut; "
                        "filter long prompts from the dataset, or use trl>=0.29")
    report.decided("grpo.max_prompt_length", f"trlshim: prompts truncated to their last max_prompt_length tokens "
                   f"before generation, as TRL 0.14-0.23 did ({installed_label()} ignores or removed the option)")

    _wrap_after_init(call, limit, "_generate_single_turn", _Generating)


# -- both -----------------------------------------------------------------------------------------------------------
def _wrap_after_init(call, limit: int, method: str, wrap) -> None:
    """After TRL's ``__init__``: the trainer's ``method`` replaced by ``wrap(trainer, method, limit)``."""

    def install(call):
        trainer = call.instance
        setattr(trainer, method, wrap(trainer, getattr(trainer, method), limit))
        trainer.max_prompt_length = limit  # what 0.14-0.25 trainers exposed

    call.after(install)


def _has_method(method: str):
    """A step's shape check: the installed GRPOTrainer has ``method`` to cut prompts in."""

    def expects(init) -> Optional[str]:
        module = sys.modules.get(getattr(init, "__module__", ""), None)
        cls = getattr(module, "GRPOTrainer", None)
        if cls is not None and not callable(getattr(cls, method, None)):
            return f"GRPOTrainer has no {method} to cut prompts in"
        return None

    return expects


expects = _has_method("_tokenize_prompts")  # 0.29+
expects_generation = _has_method("_generate_single_turn")  # 0.26-0.28
