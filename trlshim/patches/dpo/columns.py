"""Pre-tokenized DPO data in any release's column names, fed with its own token ids.

No stock DPOTrainer release takes a dataset of token ids alone: every one tokenizes ``prompt``/``chosen``/
``rejected`` text (0.8-0.13: KeyError 'prompt'; 0.14-0.28: ValueError on the missing text columns; 0.29+:
KeyError 'chosen'). What a script holds is data in the layout its release's tokenization produced (research
section 1.4) - one table, ``LAYOUTS``:

- TRL 0.7-0.12 (``tokenize_row``): ``prompt_input_ids``; ``chosen_input_ids`` / ``rejected_input_ids`` are the
  **whole** sequence (prompt + completion) with ``chosen_labels`` / ``rejected_labels`` masking the prompt;
  ``*_attention_mask`` columns;
- TRL 0.13-0.28: ``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids`` (completions alone);
- TRL >= 0.29: ``prompt_ids``, ``chosen_ids``, ``rejected_ids``.

On TRL >= 0.14 (``_prepare_dataset``) a dataset with a full id triple of one layout and no ``chosen``/
``rejected`` text is renamed to the installed release's columns instead of being tokenized: the same token ids,
no special tokens added. What the release's own preparation does to token ids still applies: 0.14-0.28 cut the
prompt to its last ``max_prompt_length`` and the completions to their first ``max_completion_length`` tokens;
1.16 drops examples whose prompt alone reaches ``max_length``; ``max_length`` applies in the forward as usual.
Tokens whose attention mask is 0 are dropped (the collators build their own masks). A label mask that hides
more than the prompt, prompts that differ between chosen and rejected, or other token columns
(``*_ids``/``*_labels``/``*_attention_mask`` outside the layout) cannot be expressed there: a TypeError. On TRL
< 0.14 (tokenization inside ``__init__``) such a dataset is a TypeError naming the release.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ... import report
from ...translate import installed_label


@dataclasses.dataclass(frozen=True)
class Layout:
    """One release line's pre-tokenized DPO columns."""

    releases: str
    ids: tuple  # (prompt, chosen, rejected)
    masks: tuple = ()  # attention masks, same order (optional columns)
    labels: tuple = ()  # (chosen, rejected): their presence marks the whole-sequence layout
    whole_sequence: bool = False  # chosen/rejected ids start with the prompt


_MASKS_13 = ("prompt_attention_mask", "chosen_attention_mask", "rejected_attention_mask")
LAYOUTS = (
    Layout("0.7-0.12", ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"), _MASKS_13,
           labels=("chosen_labels", "rejected_labels"), whole_sequence=True),
    Layout("0.13-0.28", ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"), _MASKS_13),
    Layout(">=0.29", ("prompt_ids", "chosen_ids", "rejected_ids"), _MASKS_13),
)
_TOKEN_SUFFIXES = ("_ids", "_labels", "_attention_mask")


def _columns(dataset) -> list:
    names = getattr(dataset, "column_names", None)
    return list(names) if isinstance(names, (list, tuple)) else []


def layout_of(dataset) -> Optional[Layout]:
    """The layout of a pre-tokenized dataset (no ``chosen``/``rejected`` text), else None."""
    cols = set(_columns(dataset))
    if not cols or {"chosen", "rejected"} & cols:
        return None
    labelled = {"chosen_labels", "rejected_labels"} <= cols
    for layout in LAYOUTS:
        if all(c in cols for c in layout.ids) and layout.whole_sequence == labelled:
            return layout
    return None


def _check_columns(dataset, layout: Layout, where: str) -> None:
    known = set(layout.ids) | set(layout.masks) | set(layout.labels)
    unusable = [c for c in _columns(dataset) if c.endswith(_TOKEN_SUFFIXES) and c not in known]
    if unusable:
        raise TypeError(f"DPOTrainer {where}: pre-tokenized columns {unusable} have no place in {installed_label()}'s "
                        f"DPO (it reads {list(layout.ids)} in TRL {layout.releases}'s layout): drop them or pass text")


def _split(example, layout: Layout, where: str) -> tuple:
    """(prompt, chosen, rejected) token ids of one example, masks applied, completions alone."""
    parts = []
    for i, col in enumerate(layout.ids):
        ids = list(example[col])
        mask_col = layout.masks[i] if i < len(layout.masks) else None
        if mask_col is not None and example.get(mask_col) is not None:
            mask = example[mask_col]
            keep = [bool(m) for m in mask]
            ids = [t for t, k in zip(ids, keep) if k]
            if i and layout.labels:  # labels align with the unmasked sequence
                example = dict(example, **{layout.labels[i - 1]: [v for v, k in zip(example[layout.labels[i - 1]],
                                                                                     keep) if k]})
        parts.append(ids)
    prompt, chosen, rejected = parts
    if not layout.whole_sequence:
        return prompt, chosen, rejected
    out, prompts = [], []
    for ids, col in zip((chosen, rejected), layout.labels):
        hidden = [lab != tok for lab, tok in zip(example[col], ids)]  # -100 (any pad id) where no loss
        k = hidden.index(False) if False in hidden else len(ids)
        if any(hidden[k:]):
            raise TypeError(f"DPOTrainer {where}: {col} masks tokens after the prompt; {installed_label()} trains "
                            "on every completion token (no label mask in its DPO): pass text or unmasked completions")
        prompts.append(ids[:k])
        out.append(ids[k:])
    if prompts[0] != prompts[1]:
        raise TypeError(f"DPOTrainer {where}: the chosen and rejected sequences start with different prompts; "
                        f"{installed_label()}'s DPO takes one prompt per pair")
    return prompts[0], out[0], out[1]


def _convert(dataset, layout: Layout, target: tuple, cfg, caps: bool, drops: bool, where: str):
    _check_columns(dataset, layout, where)
    prompt_cap = getattr(cfg, "max_prompt_length", None) if caps else None
    completion_cap = getattr(cfg, "max_completion_length", None) if caps else None

    def convert(example):
        p, c, r = _split(example, layout, where)
        if prompt_cap is not None:
            p = p[-prompt_cap:]  # as the release's tokenize_row (0 keeps all there too)
        if completion_cap is not None:
            c, r = c[:completion_cap], r[:completion_cap]
        return dict(zip(target, (p, c, r)))

    source = set(layout.ids) | set(layout.masks) | set(layout.labels)
    remove = [c for c in _columns(dataset) if c in source and c not in target]
    if tuple(layout.ids) != tuple(target) or layout.whole_sequence:
        report.translated(f"DPOTrainer.columns.{layout.releases}",
                          f"trlshim: DPOTrainer pre-tokenized columns in TRL {layout.releases}'s layout "
                          f"{'/'.join(layout.ids)} -> {'/'.join(target)} ({installed_label()} reads those), "
                          "fed as they are (not re-tokenized)")
    else:
        report.translated("DPOTrainer.columns.pretokenized",
                          f"trlshim: DPOTrainer pre-tokenized {'/'.join(target)} fed as they are "
                          f"({installed_label()} itself only tokenizes text)")
    out = dataset.map(convert, remove_columns=remove)
    length = getattr(cfg, "max_length", None)
    if drops and length is not None and getattr(cfg, "truncation_mode", None) == "keep_start":
        out = out.filter(lambda example: len(example[target[0]]) < length)  # as the release's preparation does
    return out


def _datasets(call):
    for key in ("train_dataset", "eval_dataset"):
        value = call.kwargs.get(key)
        if isinstance(value, dict):
            yield from ((f"{key}[{k!r}]", v) for k, v in value.items())
        elif value is not None:
            yield key, value


def apply(call) -> None:
    """Step (TRL >= 0.14): pre-tokenized datasets bypass the release's tokenization (see module docstring)."""
    instance = call.instance
    if instance is None or not any(layout_of(d) is not None for _, d in _datasets(call)):
        return
    prepare = instance._prepare_dataset
    target = call.fact("tokenized_columns")
    caps = call.fact("prepare_caps_parts", False)
    drops = call.fact("drops_fully_truncated", False)

    def _prepare_dataset(dataset, *args, **kw):
        layout = layout_of(dataset)
        if layout is None:
            return prepare(dataset, *args, **kw)
        cfg = kw.get("args", args[1] if len(args) > 1 else None)
        name = kw.get("dataset_name", args[2] if len(args) > 2 else "dataset")
        return _convert(dataset, layout, target, cfg, caps, drops, f"{name} dataset")

    # kept after __init__: evaluate(eval_dataset=...) prepares its dataset again (TRL >= 1.6), and the ids must apply
    # there too (was popped after __init__: an evaluation dataset passed later went through uncut, silently)
    instance._prepare_dataset = _prepare_dataset


def refuse(call) -> None:
    """Step (TRL < 0.14): the release tokenizes inside ``__init__``; pre-tokenized data is a TypeError."""
    for where, dataset in _datasets(call):
        layout = layout_of(dataset)
        if layout is not None:
            raise TypeError(f"DPOTrainer {where}: pre-tokenized columns {list(layout.ids)} (TRL {layout.releases}'s "
                            f"layout) without prompt/chosen/rejected text: {installed_label()}'s DPOTrainer tokenizes "
                            "text itself and trlshim cannot feed token ids there (it can on TRL >= 0.14): pass text")
