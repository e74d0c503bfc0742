"""What the trainer formats: ``formatting_func`` shapes, ``dataset_text_field``, chat datasets.

- ``formatting_func`` had two shapes: batched (returns ``list[str]``; required by TRL <= 0.14
  unpacked, detected in 0.15-0.16, a deprecated fallback in 0.17-0.20, an error from 0.21) and
  per example (returns ``str``; what TRL <= 0.14's packer and TRL >= 0.17 call). trlshim tells
  the shape by calling it on the first example (as TRL 0.15 does). On TRL < 0.15 it writes the
  output into a column itself (so both shapes work packed and unpacked, and the function is not
  ignored next to ``dataset_text_field`` as in TRL <= 0.11); on TRL >= 0.17 a batched function
  is called on batches of one (0.17-0.20 fall back to batched only when the per-example call
  raises, and a batched function called on one example usually returns a list instead).
- ``dataset_text_field``: TRL >= 0.15 writes formatted text to ``"text"`` and appends EOS only
  to ``"text"`` (0.17+); another column name is renamed to ``"text"`` before TRL sees it.
- Conversational datasets (``messages``, or ``conversations`` with role/content or from/value
  turns): TRL < 0.15 formats them only when the column has the exact ChatML schema (and,
  <= 0.11, no ``dataset_text_field``); trlshim renders them with the tokenizer's chat template
  (tokenized without extra special tokens, as TRL >= 0.19 does).
"""
from __future__ import annotations

from ... import report
from ...translate import installed_label
from .data import (
    chat_text,
    column_names,
    conversational_column,
    first_example,
    is_hf_dataset,
    map_datasets,
    to_chatml,
    tokenizer_of,
)

COLUMN = "trlshim_text"  # where trlshim writes formatted text on TRL < 0.15


def formatting_shape(func, example) -> str:
    """"batched" or "example", decided on one example as TRL 0.15 does."""
    try:
        out = func(example)
    except Exception:
        return "batched"
    if isinstance(out, str):
        return "example"
    if isinstance(out, (list, tuple)):
        return "batched"
    raise TypeError(f"formatting_func must return a string (or, batched, a list of strings); it returned {type(out)}")


def per_example(func):
    """A batched formatting function called on a batch of one."""

    def formatting_func(example):
        return func({k: [v] for k, v in example.items()})[0]

    return formatting_func


def _materialize(dataset, func, shape):
    if shape == "batched":
        return dataset.map(lambda batch: {COLUMN: list(func(batch))}, batched=True)
    return dataset.map(lambda ex: {COLUMN: func(ex)})


def _formatted_example(call, func):
    """The first training example to decide the function's shape on, or None when there is nothing to format."""
    example = first_example(call.kwargs.get("train_dataset"))
    if not isinstance(example, dict) or "input_ids" in example:
        return None
    return example


def _materialized(call, func):
    """TRL < 0.15: trlshim applies formatting_func itself, into a column of its own."""
    example = _formatted_example(call, func)
    if example is None:
        return
    shape = formatting_shape(func, example)
    map_datasets(call, lambda d: _materialize(d, func, shape) if is_hf_dataset(d) else d)
    call.kwargs["formatting_func"] = None
    call.set("dataset_text_field", COLUMN)
    report.decided(
        "formatting.materialized",
        f"trlshim: formatting_func ({shape}) applied by trlshim into column {COLUMN!r} ({installed_label()} calls "
        "it batched or per example depending on packing)",
    )


def _per_example_func(call, func):
    """TRL >= 0.15 calls formatting_func per example (from 0.17 with no batched fallback that works)."""
    example = _formatted_example(call, func)
    if example is None:
        return
    shape = formatting_shape(func, example)
    if shape == "batched" and call.fact("formatting_per_example"):  # 0.17-0.20 fall back only when it raises
        call.kwargs["formatting_func"] = per_example(func)
        report.translated(
            "formatting.batched",
            f"trlshim: batched formatting_func called on batches of one ({installed_label()} calls it per example)",
        )
    if call.get("dataset_text_field") != "text":
        call.set("dataset_text_field", "text")  # TRL >= 0.15 writes formatting_func's output to "text"


def _text_field(call):
    """TRL >= 0.15: the text column is read as "text"; rename another one."""
    field = call.get("dataset_text_field")
    if not field or field == "text":
        return
    example = first_example(call.kwargs.get("train_dataset"))
    if not isinstance(example, dict) or "input_ids" in example or field not in example:
        return

    def rename(d):
        if not is_hf_dataset(d) or field not in column_names(d):
            return d
        if "text" in column_names(d):
            d = d.remove_columns("text")
        return d.rename_column(field, "text")

    map_datasets(call, rename)
    call.set("dataset_text_field", "text")
    report.decided(
        f"formatting.text_field.{field}",
        f"trlshim: dataset_text_field={field!r} read as column 'text' ({installed_label()} reads 'text' internally)",
    )


def _sharegpt(call):
    """TRL >= 0.15 converts ``conversations`` (from/value) to ``messages`` only after checking
    ``assistant_only_loss`` against the raw example; convert first so the check sees a chat."""
    if conversational_column(first_example(call.kwargs.get("train_dataset"))) != "conversations":
        return

    def convert(d):
        if not is_hf_dataset(d) or conversational_column(first_example(d)) != "conversations":
            return d
        return d.map(lambda ex: {"messages": to_chatml(ex["conversations"])}, remove_columns=["conversations"])

    map_datasets(call, convert)


def _conversational(call):
    """TRL < 0.15: render conversational datasets with the chat template."""
    example = first_example(call.kwargs.get("train_dataset"))
    col = conversational_column(example)
    if col is None or "input_ids" in example:
        return
    field = call.get("dataset_text_field")
    if field and field in example:
        return  # the user named a text column: it is what they train on
    tokenizer = tokenizer_of(call.kwargs)
    if tokenizer is None:
        return  # TRL loads the tokenizer from the model name and formats the data itself, as stock

    def render(d):
        if not is_hf_dataset(d):
            return d
        c = conversational_column(first_example(d))
        if c is None:
            return d
        return d.map(lambda ex: {COLUMN: chat_text(tokenizer, to_chatml(ex[c]))})

    map_datasets(call, render)
    call.set("dataset_text_field", COLUMN)
    call.set("dataset_kwargs", dict(call.get("dataset_kwargs") or {}, add_special_tokens=False))
    report.decided(
        "formatting.chat",
        f"trlshim: conversational column {col!r} rendered with the tokenizer's chat template ({installed_label()} "
        "formats only exact-ChatML 'messages'/'conversations' columns)",
    )


def legacy(call) -> None:
    """Step (TRL < 0.15): formatting_func applied by trlshim; chat datasets rendered with the template."""
    if not is_hf_dataset(call.kwargs.get("train_dataset")):
        return
    func = call.kwargs.get("formatting_func")
    if func is not None:
        _materialized(call, func)
    else:
        _conversational(call)


def text_column(call) -> None:
    """Step (TRL >= 0.15): formatting_func per example, ShareGPT turns as messages, any text column as 'text'."""
    if not is_hf_dataset(call.kwargs.get("train_dataset")):
        return
    func = call.kwargs.get("formatting_func")
    if func is not None:
        _per_example_func(call, func)
    else:
        _sharegpt(call)
        _text_field(call)
