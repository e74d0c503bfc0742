"""How much of a padded batch would be padding: one input of the auto padding-free decision.

Padding-free pays in proportion to the padding it removes. Uniform lengths (e.g. every row near
``max_length``) waste little, and there the flattened path only adds its bookkeeping; skewed lengths (chat
data: a few long rows, many short) waste most of a padded batch. Estimated before training from a sample of
the training rows: their token lengths (pre-tokenized ``input_ids``, else the text column tokenized, else
the conversation through the chat template), capped at ``max_length``, drawn into batches of the per-device
size in a fixed-seed shuffle - the padded batch costs ``size x longest``.
"""
from __future__ import annotations

import random

SAMPLE = 512  # rows read; enough for the mean and the batch maxima to settle within a few percent


def sample_lengths(dataset, tokenizer, text_field: str | None) -> list[int] | None:
    """Token lengths of up to :data:`SAMPLE` rows, or None where they cannot be known cheaply."""
    try:
        n = len(dataset)
        columns = set(dataset.column_names or ())
    except (TypeError, AttributeError):
        return None  # an IterableDataset or a plain iterable: not sampled (reading it would consume it)
    if n == 0:
        return None
    sample = dataset.select(random.Random(0).sample(range(n), min(n, SAMPLE)))  # one read of the sampled rows
    if "input_ids" in columns:
        return [len(ids) for ids in sample["input_ids"]]
    if tokenizer is None:
        return None
    field = text_field or "text"
    if field in columns:
        texts = list(sample[field])  # datasets >= 4 returns a lazy Column
        if all(isinstance(t, str) for t in texts):
            return [len(ids) for ids in tokenizer(texts)["input_ids"]]
        return None
    if "messages" in columns and getattr(tokenizer, "chat_template", None):
        try:
            return [len(tokenizer.apply_chat_template(msgs, tokenize=True)) for msgs in sample["messages"]]
        except Exception:  # a template that needs other inputs: unknown, not an error
            return None
    return None


def padding_waste(lengths: list[int], batch_size: int, max_length: int | None) -> float:
    """Share of a padded batch's tokens that would be padding (0 = none)."""
    capped = [min(n, max_length) if max_length else n for n in lengths]
    order = capped[:]
    random.Random(0).shuffle(order)
    real = padded = 0
    for i in range(0, len(order), batch_size):  # the last batch may be short, as the Trainer feeds it
        batch = order[i:i + batch_size]
        real += sum(batch)
        padded += len(batch) * max(batch)
    return 1.0 - real / padded if padded else 0.0
