"""Completion-only and assistant-only loss on releases that predate them.

- ``completion_only_loss`` (TRL 0.17): for prompt/completion datasets the loss covers only the
  completion, automatically when the option is None. TRL <= 0.16 concatenates (0.15-0.16) or
  chat-formats (0.7.10-0.14) the pair and trains on everything.
- ``assistant_only_loss`` (TRL 0.19): for conversational ``messages`` datasets only the
  assistant turns carry loss, found with the chat template's ``{% generation %}`` markers.

On TRL < 0.17 (resp. < 0.19) trlshim tokenizes such datasets itself the way TRL 0.19 does
(prompt ids, then prompt+completion ids with EOS; ``apply_chat_template`` with the assistant
token mask), truncates them to the max length, builds ``labels`` (-100 where no loss) and
hands the trainer the tokenized dataset with ``skip_prepare_dataset`` and a collator that pads
labels with -100. A chat template without generation markers is an error, as in TRL. Packing
together with an emulated mask is refused (the release's packer drops labels).
"""
from __future__ import annotations

from ... import report
from ...translate import installed_label
from . import config as sft_config
from .data import (
    IGNORE,
    _native_assistant_mask,
    _rendered_with_spans,
    chat_text,
    conversational_column,
    first_example,
    has_generation_markers,
    is_hf_dataset,
    is_messages,
    map_datasets,
    needs_own_renderer,
    to_chatml,
    tokenizer_of,
)

sft_config.EMULATED.setdefault("completion_only_loss", None)
sft_config.EMULATED.setdefault("assistant_only_loss", False)



def _ids(result):
    if hasattr(result, "keys") and "input_ids" in result.keys():
        return list(result["input_ids"])
    return list(result)


def chat_ids(tokenizer, messages):
    if needs_own_renderer(tokenizer):
        return list(tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"])
    return _ids(tokenizer.apply_chat_template(messages, tokenize=True))


def assistant_ids_and_mask(tokenizer, messages):
    if _native_assistant_mask(tokenizer):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["input_ids"]), list(out["assistant_masks"])
    text, spans = _rendered_with_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def tokenize_prompt_completion(tokenizer, example, completion_only: bool):
    """TRL 0.19's tokenization of a prompt/completion example, with labels."""
    prompt, completion = example["prompt"], example["completion"]
    if is_messages(prompt):
        prompt_ids = chat_ids(tokenizer, to_chatml(prompt))
        ids = chat_ids(tokenizer, to_chatml(prompt) + to_chatml(completion))
    else:
        eos = tokenizer.eos_token or ""
        if not completion.endswith(eos):
            completion = completion + eos
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = tokenizer(text=prompt + completion)["input_ids"]
    n = len(prompt_ids) if completion_only else 0
    return ids, [IGNORE] * n + ids[n:]


def tokenize_assistant_only(tokenizer, example):
    col = conversational_column(example)
    ids, mask = assistant_ids_and_mask(tokenizer, to_chatml(example[col]))
    if 1 not in mask:
        raise RuntimeError(
            "You're using `assistant_only_loss=True`, but at least one example has no assistant tokens. This usually "
            "means the tokenizer's chat template doesn't generate assistant masks — it may be missing the "
            "`{% generation %}` keyword."
        )
    return ids, [t if m else IGNORE for t, m in zip(ids, mask)]


def label_padding_collator(tokenizer):
    """Pads input_ids with the pad token and labels with -100 (no other change to the labels)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")


def _pretokenize(dataset, fn, max_length):
    def encode(example):
        ids, labels = fn(example)
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    return dataset.map(encode, remove_columns=list(dataset.column_names))


def emulate(call) -> None:
    """Step (TRL < 0.19): completion-only / assistant-only loss where the release lacks the option."""
    dataset = call.kwargs.get("train_dataset")
    example = first_example(dataset) if is_hf_dataset(dataset) else None
    if not isinstance(example, dict) or "input_ids" in example:
        return
    tokenizer = tokenizer_of(call.kwargs)
    formatting_func = call.kwargs.get("formatting_func")
    mode = None
    if not call.has("completion_only_loss") and "prompt" in example and "completion" in example:
        completion_only = call.get("completion_only_loss")
        if formatting_func is not None:
            if completion_only:
                raise ValueError(
                    "A formatting function was provided while `completion_only_loss=True`, which is incompatible. "
                    "Using a formatter converts the dataset to a language modeling type, conflicting with "
                    "completion-only loss. To resolve this, apply your formatting function before passing the "
                    "dataset, or disable `completion_only_loss` in `SFTConfig`."
                )
        else:
            mode = "completion"
            completion_only = completion_only is None or bool(completion_only)
            fn = lambda ex: tokenize_prompt_completion(tokenizer, ex, completion_only)  # noqa: E731
            what = (
                f"completion_only_loss={'True' if completion_only else 'False'} for the prompt/completion dataset"
            )
    elif not call.has("assistant_only_loss") and call.get("assistant_only_loss"):
        if conversational_column(example) is None:
            raise ValueError(
                "You set `assistant_only_loss=True`, but the dataset is not conversational. This option is only "
                "supported for conversational datasets."
            )
        if not has_generation_markers(tokenizer):
            raise ValueError(
                "assistant_only_loss=True needs a chat template with {% generation %} ... {% endgeneration %} "
                "markers around the assistant turns; the tokenizer's chat template has none. Add the markers to "
                f"tokenizer.chat_template ({installed_label()}; trlshim emulates assistant_only_loss here)"
            )
        mode = "assistant"
        fn = lambda ex: tokenize_assistant_only(tokenizer, ex)  # noqa: E731
        what = "assistant_only_loss=True"
    if mode is None:
        return
    conflict = None
    if tokenizer is None:
        conflict = "no tokenizer was passed (TRL loads it itself)"
    elif call.kwargs.get("data_collator") is not None:
        conflict = ("a data_collator was also passed. Drop the data_collator, or pass a tokenized dataset with a "
                    "'labels' column")
    elif call.get("packing"):
        conflict = ("packing=True is on (its packer drops the loss mask; TRL >= 0.17 / 0.19 packs it). Use "
                    "packing=False, or upgrade TRL")
    if conflict is not None:
        if mode == "completion" and call.get("completion_only_loss") is None:
            # Only the automatic completion-only loss of TRL >= 0.17 was implied: keep the release's own
            # behaviour (loss on the whole sequence), say so, and never break a call that works natively.
            report.decided(
                "loss_masks.auto_off",
                f"trlshim: completion-only loss (automatic since TRL 0.17) not emulated on {installed_label()}: "
                f"{conflict.split('.')[0]}; the loss covers prompt and completion, as this release does",
            )
            return
        raise ValueError(f"trlshim emulates {what} on {installed_label()}, but {conflict}.")
    max_length = call.get("max_length")
    report.decided(
        f"loss_masks.{mode}",
        f"trlshim: {what} emulated on {installed_label()}: the dataset is tokenized by trlshim as TRL 0.19 does "
        "and the loss mask is passed as labels",
    )
    map_datasets(call, lambda d: _pretokenize(d, fn, max_length) if is_hf_dataset(d) else d)
    call.kwargs["data_collator"] = label_padding_collator(tokenizer)
    call.set("dataset_kwargs", dict(call.get("dataset_kwargs") or {}, skip_prepare_dataset=True))
    if call.legacy and call.get("dataset_text_field") is None and formatting_func is None:
        call.set("dataset_text_field", "input_ids")  # TRL 0.8 demands one even when preparation is skipped
    if formatting_func is not None:
        call.kwargs["formatting_func"] = None
    call.after(_keep_labels_column)


def _keep_labels_column(call) -> None:
    """TRL 0.17-0.18 declare the model's inputs as input_ids/attention_mask/completion_mask, so the Trainer's
    ``remove_unused_columns`` would drop the ``labels`` column trlshim built: keep it."""
    trainer = call.instance
    original = getattr(trainer, "_set_signature_columns_if_needed", None)
    if original is None:
        return

    def _set_signature_columns_if_needed():
        original()
        columns = getattr(trainer, "_signature_columns", None)
        if columns is not None and "labels" not in columns:
            trainer._signature_columns = [*columns, "labels"]

    trainer._set_signature_columns_if_needed = _set_signature_columns_if_needed

