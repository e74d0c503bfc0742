"""SFT steps for the data options old releases read themselves and new ones do not.

- ``dataset_kwargs`` (TRL 0.7.5-0.14 passed it to their data preparation): ``add_special_tokens`` and
  ``append_concat_token``; TRL >= 0.15 reads only ``skip_prepare_dataset`` and silently ignores the rest.
  trlshim tokenizes the text column itself with the old meaning - ``add_special_tokens=False``: no BOS/EOS
  from the tokenizer; ``append_concat_token``: the EOS id after each example when packing (between packed
  examples), nothing when it is False - and hands TRL the ``input_ids``. A key it cannot honour (a
  ``formatting_func`` or a dataset without the text column) or does not know is a TypeError, never ignored.
- ``remove_unused_columns`` (0.7-0.14): True (their default) is what every release does; False is an error.
- ``ConstantLengthDataset`` as ``train_dataset``/``eval_dataset`` (TRL 0.19 re-cuts its rows, >= 0.20 deleted
  the class and refuse the iterable): its rows, exactly ``seq_length`` tokens each, as a pre-tokenized dataset,
  unpacked.
"""
from __future__ import annotations

from ... import report
from ...translate import installed_label
from ..common import written_for
from ..common.legacy_cld import is_constant_length_dataset

HONOURED = ("add_special_tokens", "append_concat_token")
NATIVE = ("skip_prepare_dataset",)  # read by every release since 0.8.2


def _tokenizer(call):
    tok = call.kwargs.get("processing_class", call.kwargs.get("tokenizer"))
    return getattr(tok, "tokenizer", tok)  # a processor's text tokenizer


def dataset_kwargs(call) -> None:
    """Step (TRL >= 0.15): honour ``dataset_kwargs``' ``add_special_tokens``/``append_concat_token``."""
    value = call.get("dataset_kwargs")
    if not isinstance(value, dict):
        return
    if "remove_unused_columns" in value:  # TRL 0.7-0.14: drop the dataset's other columns after tokenizing
        if value["remove_unused_columns"] is not True:
            raise TypeError(f"dataset_kwargs['remove_unused_columns']={value['remove_unused_columns']!r} cannot be "
                            f"honoured on {installed_label()}: keep the columns with the config's "
                            "remove_unused_columns=False and a data_collator that reads them, and drop this key")
        value = {k: v for k, v in value.items() if k != "remove_unused_columns"}
        report.translated("dataset_kwargs.remove_unused_columns", "trlshim: dataset_kwargs['remove_unused_columns']="
                          f"True dropped: {installed_label()} feeds only the token columns anyway")
        call.set("dataset_kwargs", value or None)
    unknown = sorted(k for k in value if k not in HONOURED + NATIVE)
    if unknown:
        raise TypeError(f"dataset_kwargs keys {unknown} are not read by {installed_label()}'s SFTTrainer (it reads "
                        f"{list(NATIVE)}; trlshim honours {list(HONOURED)}): remove them or prepare the data yourself")
    legacy = {k: value[k] for k in HONOURED if k in value}
    if not legacy or value.get("skip_prepare_dataset"):
        if legacy:  # the old releases did not prepare the data either: the keys did nothing there
            call.set("dataset_kwargs", {k: v for k, v in value.items() if k not in HONOURED})
        return
    add_special = bool(legacy.get("add_special_tokens", True))
    packing = bool(call.get("packing"))
    concat = bool(legacy.get("append_concat_token", True)) and packing
    tok = _tokenizer(call)
    field = call.get("dataset_text_field") or "text"
    if call.kwargs.get("formatting_func") is not None or tok is None:
        raise TypeError(f"dataset_kwargs {sorted(legacy)} with formatting_func (or without a tokenizer) cannot be "
                        f"honoured on {installed_label()}, which ignores these keys: tokenize the texts yourself "
                        f"(an input_ids column) and drop the keys")
    def missing(which, cols):
        raise TypeError(f"dataset_kwargs {sorted(legacy)}: {which} has no {field!r} column ({cols}); "
                        f"{installed_label()} ignores these keys, so trlshim must tokenize that column")

    _tokenize_text(call, tok, field, add_special, concat, missing)
    report.translated(
        "dataset_kwargs.legacy",
        f"trlshim: dataset_kwargs {legacy} honoured by tokenizing the {field!r} column as TRL <= 0.14 did "
        f"({installed_label()} ignores these keys)",
    )
    call.set("dataset_kwargs", {k: v for k, v in value.items() if k not in HONOURED} or None)


def _tokenize_text(call, tok, field, add_special, concat, without_field) -> None:
    """Train/eval datasets' ``field`` column tokenized here (``input_ids``; EOS after each example when ``concat``);
    pre-tokenized datasets are left alone; ``without_field(which, columns)`` handles one without the column."""
    for which in ("train_dataset", "eval_dataset"):
        data = call.kwargs.get(which)
        if data is None:
            continue
        datasets = data if isinstance(data, dict) else {None: data}
        out = {}
        for name, ds in datasets.items():
            cols = getattr(ds, "column_names", None) or []
            if "input_ids" in cols:
                out[name] = ds  # pre-tokenized: nothing to add
                continue
            if field not in cols:
                without_field(which, cols)
                out[name] = ds
                continue

            def encode(batch, _field=field, eos=tok.eos_token_id):
                ids = tok(batch[_field], add_special_tokens=add_special)["input_ids"]
                rows = [list(x) + [eos] if concat and eos is not None else list(x) for x in ids]
                return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}  # 0.15 truncates both

            out[name] = ds.map(encode, batched=True, remove_columns=cols)
        call.kwargs[which] = out if isinstance(data, dict) else out[None]


def packing_separator(call) -> None:
    """Step (TRL 0.15): packed examples separated by EOS. 0.15's ``pack_examples`` concatenates the tokenized
    texts with nothing between them; every other release separates them (<= 0.14: ConstantLengthDataset's
    ``append_concat_token=True``; >= 0.16: EOS appended to each example). Plain-text data only: chat templates
    end turns themselves, and a ``formatting_func`` is left to the release (logged). Not for scripts declared
    ``written_for`` 0.15."""
    if not call.get("packing") or (written_for.release() or "").startswith("0.15"):
        return
    tok = _tokenizer(call)
    if tok is None or tok.eos_token_id is None:
        return
    if call.kwargs.get("formatting_func") is not None:
        report.decided("packing.eos_between", f"trlshim: packed examples from a formatting_func are concatenated "
                       f"without EOS between them, as {installed_label()} does (return texts ending in EOS to "
                       "separate them as other releases do)")
        return
    before = {w: call.kwargs.get(w) for w in ("train_dataset", "eval_dataset")}
    _tokenize_text(call, tok, call.get("dataset_text_field") or "text", True, True, lambda which, cols: None)
    if any(call.kwargs.get(w) is not v for w, v in before.items()):
        report.translated("packing.eos_between", f"trlshim: packed examples separated by EOS as in every other "
                          f"release ({installed_label()}'s packing concatenates them with nothing between)")


def _rows(data):
    """One pass of a ConstantLengthDataset as a ``datasets.Dataset`` of its ``input_ids`` rows: trlshim's class
    says how (``to_dataset``); TRL's own (0.7-0.19) is iterated once (``infinite`` off on a copy)."""
    if hasattr(data, "to_dataset"):
        return data.to_dataset()
    import copy

    from datasets import Dataset

    once = copy.copy(data)
    once.infinite = False
    rows = []
    for example in once:
        ids = example["input_ids"]
        rows.append({"input_ids": ids.tolist() if hasattr(ids, "tolist") else list(ids)})
    return Dataset.from_list(rows)


def constant_length_dataset(call) -> None:
    """Step (TRL >= 0.19): a ConstantLengthDataset becomes its rows, fed unpacked and untruncated (0.19 rewrote
    packing and re-cuts the iterable's rows; 0.20 deleted the class); so does each one among the values of an
    ``eval_dataset`` dict (evaluated under its key, as every release does)."""
    found, others = 0, []
    for which in ("train_dataset", "eval_dataset"):
        data = call.kwargs.get(which)
        named = data if isinstance(data, dict) else {None: data}
        out = {}
        for name, one in named.items():
            if is_constant_length_dataset(one):
                out[name] = _rows(one)
                found = max(found, one.seq_length)
            else:
                out[name] = one
                if one is not None:
                    others.append(which if name is None else f"{which}[{name!r}]")
        call.kwargs[which] = out if isinstance(data, dict) else out[None]
    if not found:
        return
    report.translated(
        "ConstantLengthDataset", f"trlshim: ConstantLengthDataset -> a dataset of its input_ids rows "
        f"({installed_label()} has no ConstantLengthDataset; rows are fed as they are, not re-packed)",
    )
    if call.get("packing"):
        call.set("packing", False)
        if others:  # one packing flag for all the datasets: the rows must not be re-packed
            report.decided("ConstantLengthDataset.others", f"trlshim: packing is off for the ConstantLengthDataset "
                           f"rows, so {', '.join(others)} is fed unpacked ({installed_label()}); wrap it in a "
                           "ConstantLengthDataset too to pack it as before")
    length = call.get("max_length")
    if length is not None and length < found:
        call.set("max_length", found)
