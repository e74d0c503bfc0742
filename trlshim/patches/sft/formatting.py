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


class FormattingFuncError(ValueError):
    """The user's formatting_func raised on a row: their exception, with the row it came from."""


def _returned(out) -> str:
    return f"{type(out).__name__} {out!r}"[:120]


def _strings(out, n: int) -> bool:
    """Whether a batched function's result is one string for each of the ``n`` examples."""
    return isinstance(out, (list, tuple)) and len(out) == n and all(isinstance(t, str) for t in out)


def formatting_shape(func, example) -> str:
    """"batched" or "example", decided by what the function *returns*, never by an exception alone.

    Called on the example: a string means per example, a list/tuple batched. When that call raises,
    the function is tried on a batch of one; it is batched only if that returns a list of one string.
    Otherwise the user's own exception is raised again, naming the row (a per-example function that
    fails on one dirty row must not be taken for a batched one: TRL would then format every example
    as its first character)."""
    try:
        out = func(example)
    except Exception as exc:
        try:
            batch_out = func({k: [v] for k, v in example.items()})
        except Exception:
            batch_out = None
        if _strings(batch_out, 1):
            return "batched"
        raise FormattingFuncError(
            f"formatting_func raised {type(exc).__name__}: {exc} on training row 0 (called with that example; "
            f"trlshim calls it once to tell a per-example function from a batched one)"
        ) from exc
    if isinstance(out, str):
        return "example"
    if isinstance(out, (list, tuple)):
        return "batched"
    raise TypeError(
        f"formatting_func must return a string (or, batched, a list of strings); on training row 0 it returned "
        f"{_returned(out)}"
    )


def per_example(func):
    """A batched formatting function called on a batch of one: its one string, checked (never an index
    into a string)."""

    def formatting_func(example):
        out = func({k: [v] for k, v in example.items()})
        if not _strings(out, 1):
            raise TypeError(
                "formatting_func was taken for a batched function (it returned a list on the first example), but on "
                f"a batch of one it returned {_returned(out)}, not a list of one string"
            )
        return out[0]

    return formatting_func


def returns_strings(func):
    """A per-example formatting function whose every result is checked to be a string (TRL would train
    on whatever came back, e.g. the text 'None')."""

    def formatting_func(example):
        out = func(example)
        if not isinstance(out, str):
            raise TypeError(f"formatting_func must return a string per example; it returned {_returned(out)}")
        return out

    return formatting_func


def returns_string_lists(func):
    """A batched formatting function (TRL 0.15-0.16 call it batched) whose results are checked."""

    def formatting_func(batch):
        if type(batch) is not dict:  # datasets' map hands a LazyBatch: a real batch
            return _batch_result(batch, func(batch))
        # A plain dict: TRL's own shape probe on one example (next(iter(dataset))), or an IterableDataset's
        # batch. One example's columns can be lists too (a "messages" conversation), so it may look like a
        # batch, and the function can fail on it: a batch of one then gives TRL its (batched) answer.
        try:
            out = func(batch)
        except Exception:
            one = _try(func, {k: [v] for k, v in batch.items()})
            if _strings(one, 1):
                return one
            raise
        lists = all(isinstance(v, list) for v in batch.values())
        if lists and _strings(out, len(next(iter(batch.values()), []))):
            return out
        one = _try(func, {k: [v] for k, v in batch.items()})
        return one if _strings(one, 1) else (_batch_result(batch, out) if lists else out)

    return formatting_func


def _try(func, arg):
    try:
        return func(arg)
    except Exception:
        return None


def _batch_result(batch, out):
    n = len(next(iter(batch.values()), []))
    if _strings(out, n):
        return out
    raise TypeError(f"formatting_func must return one string per example; for a batch of {n} it returned "
                    f"{_returned(out)}")


def _checked(out, rows):
    """The function's output for ``rows`` (indices), refused unless it is one string per row."""
    if not _strings(out, len(rows)):
        raise TypeError(f"formatting_func must return one string per example; for rows {rows[0]}-{rows[-1]} it "
                        f"returned {_returned(out)}")
    return list(out)


def _materialize(dataset, func, shape):
    if shape == "batched":
        return dataset.map(lambda batch, idx: {COLUMN: _checked(func(batch), idx)}, batched=True, with_indices=True)
    return dataset.map(lambda ex, i: {COLUMN: _checked([func(ex)], [i])[0]}, with_indices=True)


def _formatted_example(call):
    """The first training example to decide the function's shape on, or None when there is nothing to format."""
    example = first_example(call.kwargs.get("train_dataset"))
    if not isinstance(example, dict) or "input_ids" in example:
        return None
    return example


def _materialized(call, func):
    """TRL < 0.15: trlshim applies formatting_func itself, into a column of its own."""
    example = _formatted_example(call)
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
    example = _formatted_example(call)
    if example is None:
        return
    shape = formatting_shape(func, example)
    if shape == "batched" and call.fact("formatting_per_example"):  # 0.17-0.20 fall back only when it raises
        call.kwargs["formatting_func"] = per_example(func)
        report.translated(
            "formatting.batched",
            f"trlshim: batched formatting_func called on batches of one ({installed_label()} calls it per example)",
        )
    elif shape == "batched":
        call.kwargs["formatting_func"] = returns_string_lists(func)
    else:
        call.kwargs["formatting_func"] = returns_strings(func)
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
