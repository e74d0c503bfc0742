"""Truncation with the meaning the script was written with, where the installed release changed it.

- ``max_prompt_length`` / ``max_completion_length`` on TRL >= 0.29 (removed there): as in TRL 0.13-0.28,
  the prompt keeps its **last** ``max_prompt_length`` tokens and each completion its **first**
  ``max_completion_length`` tokens (``0.20.0:trl/trainer/dpo_trainer.py`` ``tokenize_row``). The
  release's ``max_length`` (prompt + completion, ``keep_start``) then applies as usual.
- A TRL 0.7-0.11 call (``max_length`` and ``max_prompt_length`` as trainer kwargs) on TRL >= 0.14: the old
  rule of ``tokenize_row`` (``0.8.6:trl/trainer/dpo_trainer.py:L675-L695``): only when prompt + the longer
  completion exceed ``max_length``, the prompt is cut to ``max_prompt_length`` (from the left with
  ``truncation_mode="keep_end"``, the right with ``"keep_start"``), then, if still too long, both
  completions to ``max_length - max_prompt_length``.

Done on the dataset the release's own ``_prepare_dataset`` returns (its tokenization, special tokens and
chat template untouched), before the release precomputes reference log-probs from it.
"""
from __future__ import annotations

import copy
from typing import Optional

from ...translate import installed_label
from .config import extras


def _modern(example, columns, prompt_cap, completion_cap):
    prompt, chosen, rejected = columns
    out = {}
    if prompt_cap is not None:
        out[prompt] = example[prompt][-prompt_cap:] if prompt_cap > 0 else []
    if completion_cap is not None:
        out[chosen] = example[chosen][:completion_cap]
        out[rejected] = example[rejected][:completion_cap]
    return out


def _legacy(example, columns, max_length, prompt_cap, keep_end):
    prompt, chosen, rejected = columns
    p, c, r = example[prompt], example[chosen], example[rejected]
    if len(p) + max(len(c), len(r)) > max_length:
        p = p[-prompt_cap:] if keep_end else p[:prompt_cap]
    if len(p) + max(len(c), len(r)) > max_length:
        c, r = c[: max_length - prompt_cap], r[: max_length - prompt_cap]
    return {prompt: p, chosen: c, rejected: r}


def _without_max_length(args, kw):
    """``_prepare_dataset(dataset, processing_class, args, name)``: its config with ``max_length=None``, so
    the release's own length filter (1.16: drops prompts longer than max_length) runs after trlshim's cut."""
    args = list(args)
    if "args" in kw:
        cfg = kw["args"]
        kw = dict(kw, args=_copy_without(cfg))
    elif len(args) > 1:
        cfg = args[1]
        args[1] = _copy_without(cfg)
    else:
        cfg = None
    return tuple(args), kw, cfg


def _copy_without(cfg):
    if getattr(cfg, "max_length", None) is None:
        return cfg
    out = copy.copy(cfg)
    out.max_length = None
    return out


def _plan(call):
    extra = extras(call.args)
    legacy = extra.get("legacy_truncation")
    if legacy is not None:
        return _legacy, dict(max_length=legacy[0], prompt_cap=legacy[1], keep_end=legacy[2])
    prompt_cap, completion_cap = extra.get("max_prompt_length"), extra.get("max_completion_length")
    if prompt_cap is None and completion_cap is None:
        return None
    return _modern, dict(prompt_cap=prompt_cap, completion_cap=completion_cap)


def apply(call) -> None:
    """Step: cut the prepared (tokenized) datasets with the old meaning (see module docstring)."""
    plan = _plan(call)
    instance = call.instance
    if plan is None or instance is None:
        return
    func, kwargs = plan
    columns = call.fact("tokenized_columns")
    prepare = instance._prepare_dataset  # bound (or an earlier step's, e.g. dpo.columns)

    drops = call.fact("drops_fully_truncated", False)

    def _prepare_dataset(dataset, *args, **kw):
        args, kw, cfg = _without_max_length(args, kw)  # the release cuts/filters by max_length after us
        out = prepare(dataset, *args, **kw)
        names = getattr(out, "column_names", None) or []
        if not all(c in names for c in columns):
            raise TypeError(
                f"DPOTrainer: trlshim cannot apply {', '.join(k for k in extras(call.args))} to this dataset on "
                f"{installed_label()} (its prepared columns {names} lack {list(columns)}; e.g. image data): "
                "truncate the dataset yourself, or use max_length"
            )
        out = out.map(func, fn_kwargs=dict(columns=columns, **kwargs))
        length = getattr(cfg, "max_length", None)
        if drops and length is not None and getattr(cfg, "truncation_mode", None) == "keep_start":
            out = out.filter(lambda example: len(example[columns[0]]) < length)  # as the release does
        return out

    # kept after __init__: evaluate(eval_dataset=...) prepares its dataset again (TRL >= 1.6), and the cut must apply
    # there too (was popped after __init__: an evaluation dataset passed later went through uncut, silently)
    instance._prepare_dataset = _prepare_dataset


def expects(init) -> Optional[str]:
    from trl.trainer.dpo_trainer import DPOTrainer

    return None if callable(getattr(DPOTrainer, "_prepare_dataset", None)) else "DPOTrainer has no _prepare_dataset"
