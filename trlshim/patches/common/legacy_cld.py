"""``ConstantLengthDataset`` for TRL >= 0.20, which deleted it (TRL 0.7-0.19 keep their own class).

What it did (TRL 0.7.5-0.19): a torch ``IterableDataset`` that formats each example to text
(``formatting_func`` or ``dataset_text_field``), tokenizes a buffer of them, joins the token lists
with the EOS id between documents (``append_concat_token``), cuts the stream into rows of exactly
``seq_length`` tokens (the tail that does not fill a row is dropped), optionally shuffles the rows, and
yields ``{"input_ids", "labels"}`` with labels equal to the input ids. Documents attend across their
boundaries (no position-id reset). A dataset with an ``input_ids`` column is pre-tokenized (TRL 0.13-0.19):
``formatting_func`` then returns each example's token ids, which are joined as they are (no tokenizer call)
and the buffer is counted in tokens. Re-implemented here from that description.

``to_dataset()`` gives the same rows as a ``datasets.Dataset`` of ``input_ids``: the SFT step
``sft.constant_length_dataset`` hands that to TRL releases whose SFTTrainer refuses the iterable.
"""
from __future__ import annotations

import random
import warnings

try:
    from torch.utils.data import IterableDataset as _TorchIterable
except ImportError:  # pragma: no cover - torch is a TRL dependency
    _TorchIterable = object


class ConstantLengthDataset(_TorchIterable):
    """Rows of exactly ``seq_length`` tokens cut from the tokenized, concatenated texts of ``dataset``."""

    _trlshim_constant_length = True

    def __init__(self, tokenizer, dataset, dataset_text_field=None, formatting_func=None, infinite=False,
                 seq_length=1024, num_of_sequences=1024, chars_per_token=3.6, eos_token_id=0, shuffle=True,
                 append_concat_token=True, add_special_tokens=True):
        if dataset_text_field is None and formatting_func is None:
            raise ValueError("ConstantLengthDataset needs dataset_text_field or formatting_func")
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.seq_length = int(seq_length)
        self.infinite = infinite
        self.current_size = 0
        self.max_buffer_size = seq_length * chars_per_token * num_of_sequences
        self.shuffle = shuffle
        self.append_concat_token = append_concat_token
        self.add_special_tokens = add_special_tokens
        tok_eos = getattr(tokenizer, "eos_token_id", None)
        self.concat_token_id = tok_eos if tok_eos else eos_token_id
        if formatting_func is not None:
            self.formatting_func = formatting_func
            if dataset_text_field is not None:
                warnings.warn("ConstantLengthDataset: formatting_func is used and dataset_text_field ignored",
                              stacklevel=2)
        else:
            self.formatting_func = lambda example: example[dataset_text_field]
        self.pretokenized = "input_ids" in (getattr(dataset, "column_names", None) or ())
        if self.pretokenized:  # the buffer holds token ids: its size is counted in tokens
            self.max_buffer_size = seq_length * num_of_sequences

    def __len__(self):
        return len(self.dataset)

    def _texts(self):
        """The formatted texts, once through the data (or forever when ``infinite``)."""
        while True:
            for example in self.dataset:
                yield self.formatting_func(example)
            if not self.infinite:
                return
            warnings.warn("ConstantLengthDataset: the data was exhausted; starting over", stacklevel=2)

    def _rows(self, infinite=None):
        texts = self._texts() if infinite is None else _once(self)
        done = False
        while not done:
            buffer, chars = [], 0
            for text in texts:
                buffer.append(text)
                chars += len(text)
                if chars >= self.max_buffer_size:
                    break
            else:
                done = True
            if not buffer:
                return
            if self.shuffle:
                random.shuffle(buffer)
            if self.pretokenized:
                ids = [list(one) for one in buffer]
            else:
                ids = self.tokenizer(buffer, add_special_tokens=self.add_special_tokens, truncation=False)["input_ids"]
            stream = []
            for one in ids:
                stream.extend(one)
                if self.append_concat_token:
                    stream.append(self.concat_token_id)
            rows = [stream[i:i + self.seq_length] for i in range(0, len(stream) - self.seq_length + 1, self.seq_length)]
            if self.shuffle:
                random.shuffle(rows)
            yield from rows

    def __iter__(self):
        import torch

        for row in self._rows():
            self.current_size += 1
            yield {"input_ids": torch.LongTensor(row), "labels": torch.LongTensor(row)}

    def to_dataset(self):
        """The rows of one pass as a ``datasets.Dataset`` with an ``input_ids`` column (never infinite)."""
        from datasets import Dataset

        return Dataset.from_dict({"input_ids": list(self._rows(infinite=False))})


def _once(cld):
    for example in cld.dataset:
        yield cld.formatting_func(example)


def is_constant_length_dataset(obj) -> bool:
    """trlshim's class, or TRL's own (0.7-0.19), by its shape rather than its module."""
    return getattr(type(obj), "_trlshim_constant_length", False) or (
        type(obj).__name__ == "ConstantLengthDataset" and hasattr(obj, "seq_length"))
