"""Step: a training dataset the trainer cannot read is trlshim's clear error, naming its columns.

TRL 1.x meets an empty dataset with a bare ``StopIteration`` and a dataset with no text column (and no
``formatting_func``) with ``KeyError: 'text'``, where TRL 0.8 said what was wrong. Checked before any
other step: the columns are the user's, before trlshim renames or adds any.
"""
from __future__ import annotations

from ...translate import installed_label
from .data import column_names, is_hf_dataset

# Column sets some release reads without a text column (tokenized, conversational, prompt-completion).
OWN_SCHEMAS = ({"input_ids"}, {"messages"}, {"conversations"}, {"prompt", "completion"}, {"prompt"})


def check(call) -> None:
    for name in ("train_dataset", "eval_dataset"):
        data = call.kwargs.get(name)
        for label, dataset in (data.items() if isinstance(data, dict) else [(None, data)]):
            _check_one(call, f"{name}[{label!r}]" if label is not None else name, dataset)


def _check_one(call, name, dataset) -> None:
    if dataset is None or not is_hf_dataset(dataset):
        return
    try:
        size = len(dataset)
    except TypeError:  # an IterableDataset
        size = None
    if size == 0:
        raise ValueError(f"{name} is empty (0 rows, columns {column_names(dataset)}): there is nothing to train on "
                         f"({installed_label()})")
    if call.kwargs.get("formatting_func") is not None:
        return
    columns = set(column_names(dataset))
    if not columns or any(schema <= columns for schema in OWN_SCHEMAS):
        return
    field = call.get("dataset_text_field") or "text"
    if field not in columns:
        raise ValueError(
            f"{name} has no column {field!r} to train on (its columns: {sorted(columns)}); name the text column with "
            "dataset_text_field=..., pass a formatting_func, or use a conversational ('messages') or "
            f"prompt/completion dataset ({installed_label()})"
        )
