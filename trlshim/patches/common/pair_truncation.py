"""ORPO/CPO ``max_prompt_length`` (removed in TRL 0.28) with its old meaning, on TRL >= 0.28.

TRL 0.8-0.27 ``tokenize_row`` (``0.27.0:trl/experimental/orpo/orpo_trainer.py:L506-L522``, CPO the same):
when prompt + the longer response exceed ``max_length``, the prompt is cut to ``max_prompt_length`` tokens (its
LAST tokens with ``truncation_mode="keep_end"``, the default; its first with ``"keep_start"``); if still too
long, both responses to ``max_length - max_prompt_length`` tokens. 0.28 removed the option and only cuts the
responses (to ``max_length`` minus the prompt); ``truncation_mode`` went from the config at 1.0.

``tokenize_row`` is the one place these releases turn a row into token ids (``dataset.map(self.tokenize_row)``
inside ``__init__``): trlshim puts an instance attribute in front of it before TRL's ``__init__`` runs, calls the
release's own ``tokenize_row`` (its tokenization, BOS/EOS handling untouched) with no length cap, then applies the
old rule to the ids and rebuilds the labels (prompt positions -100, as every release does). Encoder-decoder models
(the old rule there was the tokenizer's own truncation) are refused.
"""
from __future__ import annotations

import sys
from typing import Callable

from ... import report
from ...translate import installed_label
from .preference import own_options

MODES = ("keep_end", "keep_start")


def _split(batch: dict, side: str):
    ids, mask, labels = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], batch[f"{side}_labels"]
    n = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    return [list(ids[:n]), list(mask[:n])], [list(ids[n:]), list(mask[n:])]


def old_rule(batch: dict, max_length: int, limit: int, keep_end: bool) -> dict:
    """``batch`` (one row from the release's ``tokenize_row``, uncapped) cut as TRL 0.8-0.27 did."""
    parts = {side: _split(batch, side) for side in ("chosen", "rejected")}
    prompt = [list(batch["prompt_input_ids"]), list(batch["prompt_attention_mask"])]
    longer = max(len(parts[s][1][0]) for s in parts)

    def cut_prompt(pair):
        if len(pair[0]) + longer > max_length:
            return [x[-limit:] if keep_end else x[:limit] for x in pair]
        return pair

    out = dict(batch)
    out["prompt_input_ids"], out["prompt_attention_mask"] = cut_prompt(prompt)
    for side, (p, r) in parts.items():
        p = cut_prompt(p)
        if len(p[0]) + longer > max_length:
            r = [x[: max_length - limit] for x in r]
        out[f"{side}_input_ids"] = p[0] + r[0]
        out[f"{side}_attention_mask"] = p[1] + r[1]
        out[f"{side}_labels"] = [-100] * len(p[0]) + r[0]
    return out


def _truncating(trainer, tokenize_row: Callable, limit: int, keep_end: bool, name: str) -> Callable:
    def tokenize(feature, *args, **kwargs):
        if getattr(trainer, "is_encoder_decoder", False):
            raise TypeError(f"{name}: max_prompt_length with an encoder-decoder model: trlshim does not emulate it on "
                            f"{installed_label()} (removed in TRL 0.28); truncate prompts in your dataset")
        max_length = trainer.max_length
        trainer.max_length = sys.maxsize  # the release's own response cut off: the old rule below decides
        try:
            batch = tokenize_row(feature, *args, **kwargs)
        finally:
            trainer.max_length = max_length
        return old_rule(batch, max_length, limit, keep_end)

    return tokenize


def emulate(name: str) -> Callable:
    """Step of ``name`` (``"ORPOTrainer"``/``"CPOTrainer"``) on TRL >= 0.28 (see module docstring)."""

    def step(call) -> None:
        options = own_options(call.args)
        limit = options.get("max_prompt_length")
        mode = options.get("truncation_mode") or getattr(call.args, "truncation_mode", None) or "keep_end"
        if limit is None:
            if options.get("truncation_mode") not in (None, "keep_end"):
                report.decided(f"{name}.truncation_mode", f"trlshim: {name}: truncation_mode={mode!r} has no effect "
                               f"without max_prompt_length ({installed_label()} never truncates the prompt)")
            return
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise TypeError(f"{name}: max_prompt_length={limit!r} must be a positive int or None")
        if mode not in MODES:
            raise ValueError(f"{name}: unknown truncation_mode {mode!r} (one of {', '.join(MODES)})")
        instance = call.instance
        if instance is None:
            return
        report.decided(f"{name}.max_prompt_length", f"trlshim: {name}: prompts cut to max_prompt_length={limit} "
                       f"({mode}) and responses to max_length - max_prompt_length when too long, as TRL <= 0.27 did "
                       f"({installed_label()} removed max_prompt_length)")
        instance.tokenize_row = _truncating(instance, instance.tokenize_row, limit, mode == "keep_end", name)
        call.after(lambda c: vars(instance).pop("tokenize_row", None))

    return step


def expects(init):
    """The class must tokenize rows with ``tokenize_row`` (the place the emulation sits in front of)."""
    module = sys.modules.get(getattr(init, "__module__", ""), None)
    name = getattr(init, "__qualname__", "").split(".")[0]
    cls = getattr(module, name, None)
    if cls is not None and not callable(getattr(cls, "tokenize_row", None)):
        return f"{name} has no tokenize_row to truncate prompts in"
    return None
