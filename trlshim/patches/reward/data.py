"""RewardTrainer's data and model across releases.

- Pre-tokenized columns were ``input_ids_chosen`` / ``attention_mask_chosen`` / ``input_ids_rejected`` /
  ``attention_mask_rejected`` up to TRL 0.23 (0.7-0.11 accepted nothing else), ``chosen_input_ids`` /
  ``rejected_input_ids`` in 0.24-0.28 and ``chosen_ids`` / ``rejected_ids`` from 0.29 (research section 3).
  A dataset in another release's spelling is renamed to the installed one (tokens whose attention mask is 0
  are dropped, as the collator of the new releases builds its own mask; on releases < 0.24 a mask of ones is
  added, which their collator requires). Without this an old dataset on TRL >= 0.24 is re-tokenized from a
  text column it lacks (error), and a new one on TRL < 0.24 fails in the collator.
- ``model`` as a string (TRL >= 0.24 loads ``AutoModelForSequenceClassification(num_labels=1)`` itself): on
  older releases trlshim loads it the same way.
"""
from __future__ import annotations

from ... import report
from ...translate import installed_label
from ..common.preference import older

# Each release's names of (chosen ids, rejected ids), and the mask columns where the release has them.
OLD = ("input_ids_chosen", "input_ids_rejected")
OLD_MASKS = ("attention_mask_chosen", "attention_mask_rejected")
MID = ("chosen_input_ids", "rejected_input_ids")
NEW = ("chosen_ids", "rejected_ids")


def installed_names() -> tuple:
    return OLD if older("0.24") else MID if older("0.29") else NEW


def _columns(dataset) -> set:
    names = getattr(dataset, "column_names", None)
    return set(names) if isinstance(names, (list, tuple)) else set()


def _convert(dataset, source: tuple, target: tuple, where: str):
    cols = _columns(dataset)
    masks = OLD_MASKS if source == OLD and all(m in cols for m in OLD_MASKS) else None
    add_masks = target == OLD

    def convert(example):
        out = {}
        for i, (src, dst) in enumerate(zip(source, target)):
            ids = example[src]
            if masks is not None:
                ids = [t for t, m in zip(ids, example[masks[i]]) if m]
            out[dst] = ids
            if add_masks:
                out[OLD_MASKS[i]] = [1] * len(ids)
        return out

    drop = list(source) + (list(masks) if masks else [])
    report.translated(f"RewardTrainer.columns.{source[0]}",
                      f"trlshim: RewardTrainer {where} columns {'/'.join(source)} -> {'/'.join(target)} "
                      f"({installed_label()} reads those)")
    return dataset.map(convert, remove_columns=[c for c in drop if c not in target])


def _translate_dataset(dataset, where: str):
    if isinstance(dataset, dict):
        return {k: _translate_dataset(v, f"{where}[{k!r}]") for k, v in dataset.items()}
    cols = _columns(dataset)
    target = installed_names()
    if not cols or all(c in cols for c in target) or not hasattr(dataset, "map"):
        return dataset
    for source in (OLD, MID, NEW):
        if source != target and all(c in cols for c in source):
            return _convert(dataset, source, target, where)
    return dataset


def _has_old_columns(dataset) -> bool:
    if isinstance(dataset, dict):
        return any(_has_old_columns(d) for d in dataset.values())
    return all(c in _columns(dataset) for c in OLD)


def columns(call) -> None:
    """Step: pre-tokenized preference columns in the installed release's spelling. A dataset in the
    spelling of TRL <= 0.23 is also kept whole: those releases trained every pre-tokenized example at full
    length (``max_length`` only padded), TRL >= 0.24 drops examples longer than ``max_length`` (default 1024),
    so trlshim passes ``max_length=None`` there."""
    old = False
    for key in ("train_dataset", "eval_dataset"):
        if call.kwargs.get(key) is not None:
            old = old or _has_old_columns(call.kwargs[key])
            call.kwargs[key] = _translate_dataset(call.kwargs[key], key)
    if old and not older("0.24") and call.get("max_length") is not None:
        report.translated("RewardTrainer.keep_whole", f"trlshim: RewardConfig.max_length="
                          f"{call.get('max_length')!r} -> None for a dataset in TRL <= 0.23's columns (those releases "
                          f"trained every pre-tokenized example whole; {installed_label()} would drop longer ones)")
        call.set("max_length", None)


def model_string(call) -> None:
    """Step (TRL < 0.24): ``model="name-or-path"`` loaded as TRL >= 0.24 does."""
    model = call.kwargs.get("model")
    if not isinstance(model, str):
        return
    from transformers import AutoModelForSequenceClassification

    report.translated("RewardTrainer.model_str", f"trlshim: RewardTrainer(model={model!r}) -> "
                      f"AutoModelForSequenceClassification.from_pretrained(num_labels=1) ({installed_label()} "
                      "takes only a model object)")
    loaded = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    tok = call.kwargs.get("processing_class", call.kwargs.get("tokenizer"))
    if loaded.config.pad_token_id is None and getattr(tok, "pad_token_id", None) is not None:
        loaded.config.pad_token_id = tok.pad_token_id
    call.kwargs["model"] = loaded


def model_init_removed(call) -> None:
    """Step (TRL >= 0.24): ``model_init`` is gone; say so instead of TRL's unexpected-keyword error."""
    if "model_init" not in call.kwargs or "model_init" in call.params:
        return
    if call.kwargs["model_init"] is not None:
        raise TypeError(f"RewardTrainer(): 'model_init' was removed in TRL 0.24 ({installed_label()} is installed): "
                        "build the model yourself and pass model=... (or a model name: the release loads it)")
    call.kwargs.pop("model_init")  # None: TRL's own default, nothing to carry
