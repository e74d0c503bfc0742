"""Packing strategies, padding-free batching, and automatic padding-free.

- ``packing_strategy`` appeared in TRL 0.19 (``ffd``/``wrapped``; ``bfd`` 0.20; ``bfd-requeue``
  0.29; ``bfd_split`` 1.0; spellings mapped in translate.py). On TRL < 0.19 the option is
  accepted, checked, and the release's own packing is used (concatenate and chunk), reported.
- ``padding_free`` appeared in TRL 0.16 (DataCollatorWithFlattening). On TRL < 0.16 trlshim
  supplies a flattening collator: one row, ``position_ids`` restarting per example, the first
  label of each example -100, no padding.
- TRL >= 1.0 raises for ``padding_free=True`` without packing when ``max_length`` is set (the
  length is not enforced). trlshim passes ``max_length=None`` and truncates each example in
  the collator instead, so the cap still holds.
- TRL 0.19-0.22 send packed rows without position_ids unless the attention is flash: trlshim
  turns their collator's ``return_position_ids`` on, so each example keeps its own positions.
- Auto padding-free: when the user asked for neither packing nor padding-free, trlshim turns
  padding-free on where it is safe and faster: a variable-length attention kernel - flash attention,
  or, with SDPA/eager on a CUDA GPU, torch's own (``varlen.py``: the model runs on it during
  ``train()`` only) -, the Trainer counting loss tokens on shifted labels (so the loss is unchanged),
  padding that would waste at least ``MIN_WASTE`` of a batch (``lengths.py``: sampled from the
  dataset), and no processor, vision model or images, user collator, encoder-decoder or known-bad
  model type. Without such a kernel (CPU, old torch/transformers) it is safe through transformers'
  block-diagonal mask but slower than padding, so it is on there only with
  ``SFTConfig(auto_padding_free=True)``. Decided before TRL sees the arguments, from what is known
  then (never by trying and catching an error), and logged once with the reason and its inputs.
  ``SFTConfig(auto_padding_free=False)`` or ``TRLSHIM_AUTO_PADDING_FREE=0`` turn it off.
"""
from __future__ import annotations

import inspect
import sys

from ... import report
from ...flags import flag
from ...translate import STRATEGY_SPELLINGS, installed_label
from . import config as sft_config
from . import lengths, varlen
from .data import IGNORE, unwrap_peft, vision_reason

sft_config.EMULATED.setdefault("packing_strategy", None)
sft_config.EMULATED.setdefault("padding_free", False)

# Model types whose attention breaks on packed rows (sliding-window/soft-capping hybrids, and
# multimodal models whose forward builds its own masks).
BLOCKED_MODEL_TYPES = {
    "gemma2", "gemma3", "gemma3_text", "gemma3n", "cohere2", "mllama", "llava", "paligemma", "qwen2_vl",
    "qwen2_5_vl", "idefics3", "llama4", "mistral3", "t5", "bart",
}
FLASH = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn", "kernels-community/flash-attn3")
# Below this share of padding a padded batch is as fast as a flattened one (measured on an H200 with
# uniform 1536-2047-token rows, ~10% padding: benchmarks/results.md), so the batch stays padded.
MIN_WASTE = 0.15


class FlatteningCollator:
    """Padding-free batches for TRL < 0.16: all examples in one row with per-example position_ids."""

    _trlshim_padding_free = True

    def __call__(self, features):
        import torch

        ids, labels, pos = [], [], []
        for f in features:
            seq = list(f["input_ids"])
            lab = list(f["labels"]) if f.get("labels") is not None else list(seq)
            lab[0] = IGNORE
            ids += seq
            labels += lab
            pos += list(range(len(seq)))
        return {
            "input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos]),
        }


class TruncatingCollator:
    """Cuts every per-token field of each example to ``max_length`` before the inner collator."""

    def __init__(self, inner, max_length, keep_end=False):
        self.inner, self.max_length, self.keep_end = inner, max_length, keep_end

    def __call__(self, features):
        out = []
        for f in features:
            n = len(f["input_ids"])
            if n > self.max_length:
                cut = slice(n - self.max_length, None) if self.keep_end else slice(0, self.max_length)
                f = {k: (v[cut] if isinstance(v, (list, tuple)) and len(v) == n else v) for k, v in f.items()}
            out.append(f)
        return self.inner(out)

    def __getattr__(self, name):  # padding_free, pad_token_id, ... of the inner collator
        return getattr(self.__dict__["inner"], name)


def _counts_shifted_labels() -> bool:
    """Whether the Trainer counts loss tokens on ``labels[..., 1:]`` (else padding-free changes the loss)."""
    from transformers import Trainer

    fn = getattr(Trainer, "_get_num_items_in_batch", None)
    try:
        return fn is not None and "1:]" in inspect.getsource(fn)
    except (OSError, TypeError):
        return False


def _builds_packed_mask(model) -> bool:
    """SDPA/eager: the model builds its mask with transformers' packed-sequence detection."""
    try:
        from transformers import masking_utils
    except ImportError:
        return False
    if not hasattr(masking_utils, "find_packed_sequence_indices"):
        return False
    module = sys.modules.get(type(unwrap_peft(model)).__module__)
    return module is not None and hasattr(module, "create_causal_mask")


def auto_padding_free_decision(call):
    """(on, reason, via) - ``via`` is ``varlen.NAME`` when trlshim's variable-length attention carries it -
    or None when the user chose packing or padding-free themselves."""
    decision = _decide(call)
    return decision if decision is None or len(decision) == 3 else (*decision, None)


def _decide(call):
    if call.get("packing") or call.get("padding_free"):
        return None
    if call.shim("auto_padding_free") is False:
        return False, "turned off by SFTConfig(auto_padding_free=False)"
    if flag("TRLSHIM_AUTO_PADDING_FREE") is False:
        return False, "turned off by TRLSHIM_AUTO_PADDING_FREE=0"
    if call.kwargs.get("data_collator") is not None:
        return False, "a data collator was passed"
    from transformers import PreTrainedTokenizerBase

    tok = call.kwargs.get("processing_class", call.kwargs.get("tokenizer"))
    if tok is not None and not isinstance(tok, PreTrainedTokenizerBase):
        return False, "processing_class is a processor, not a tokenizer"
    model = call.kwargs.get("model")
    if model is None or isinstance(model, str):
        return False, "the model is loaded by TRL (its attention is not known beforehand)"
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False, "encoder-decoder model"
    vision = vision_reason(call)
    if vision:
        return False, vision
    if getattr(config, "model_type", None) in BLOCKED_MODEL_TYPES:
        return False, f"model type {config.model_type!r} is known to break with packed rows"
    if (getattr(call.args, "per_device_train_batch_size", 8) or 8) <= 1:
        return False, "per_device_train_batch_size=1 (nothing to unpad)"
    attn = getattr(config, "_attn_implementation", None) or "eager"
    forced = call.shim("auto_padding_free") is True
    via = None
    if attn not in FLASH and not forced:
        missing = varlen.unusable_reason(unwrap_peft(model))
        if missing is not None:
            # Correct through a block-diagonal mask, but slower than padding (measured on an H100: SDPA
            # with that mask ran at 0.63x; benchmarks/results.md), so only on request.
            return False, (f"attn_implementation={attn!r} and no variable-length kernel here ({missing}; a "
                           "block-diagonal mask is slower than padding); on with flash attention, or with "
                           "SFTConfig(auto_padding_free=True)")
        via = varlen.NAME
    elif attn not in FLASH and not _builds_packed_mask(model):
        return False, f"attn_implementation={attn!r} and this transformers builds no block-diagonal mask from position_ids"
    if not _counts_shifted_labels():
        return False, "this transformers' Trainer counts loss tokens on unshifted labels (the loss would change)"
    kernel = f"torch's variable-length flash kernel ({via}, during train() only)" if via else f"{attn!r}"
    if forced:
        return True, f"asked for by SFTConfig(auto_padding_free=True); attention: {kernel}", via
    sampled = lengths.sample_lengths(call.kwargs.get("train_dataset"), tok, call.get("dataset_text_field"))
    if sampled is None:
        return True, f"attention: {kernel}; the loss is unchanged (length distribution not sampled)", via
    batch = getattr(call.args, "per_device_train_batch_size", 8) or 8
    waste = lengths.padding_waste(sampled, batch, call.get("max_length"))
    if waste < MIN_WASTE:
        return False, (f"padding would waste only {waste:.0%} of a batch (< {MIN_WASTE:.0%}; {len(sampled)} rows "
                       "sampled): padded batches are as fast")
    return True, (f"attention: {kernel}; padding would waste {waste:.0%} of a batch ({len(sampled)} rows sampled); "
                  "the loss is unchanged"), via


def strategy(call) -> None:
    """Step (TRL < 0.19, no packing_strategy): the option is checked, and the release's one packing used."""
    name = call.get("packing_strategy")
    if name is None:
        return
    if name not in STRATEGY_SPELLINGS:
        raise ValueError(
            f"packing_strategy={name!r} is not a TRL packing strategy (one of "
            f"{', '.join(repr(s) for s in STRATEGY_SPELLINGS)})"
        )
    if call.get("packing"):
        report.decided(
            f"packing.strategy.{name}",
            f"trlshim: packing_strategy={name!r}: {installed_label()} has one packing (concatenate and "
            "chunk to max length, as 'wrapped'); used instead",
        )


def auto_padding_free(call) -> None:
    """Step (trlshim's own feature, every release): padding-free turned on where it is safe and faster."""
    decision = auto_padding_free_decision(call)
    if decision is not None:
        on, reason, via = decision
        report.decided("packing.auto_padding_free", f"trlshim: auto padding-free {'on' if on else 'off'}: {reason}")
        if on:
            call.set("padding_free", True)
        if on and via == varlen.NAME:
            varlen.register()
            call.after(_switch_attention_during_training)


def _switch_attention_during_training(call) -> None:
    if call.instance is not None:
        switch = varlen.SwitchDuringTraining(unwrap_peft(call.instance.model))
        call.instance.add_callback(switch)
        switch.around_train(call.instance)


def padding_free_emulated(call) -> None:
    """Step (TRL < 0.16, no padding_free): trlshim's flattening collator."""
    if call.has("padding_free") or not call.get("padding_free"):
        return
    collator = call.kwargs.get("data_collator")
    if collator is not None and not isinstance(collator, _label_collator_types()):
        raise ValueError(
            f"Passing a custom data collator is not supported with padding_free=True ({installed_label()}: trlshim "
            "emulates padding-free with its own collator)"
        )
    call.kwargs["data_collator"] = FlatteningCollator()
    report.decided(
        "packing.padding_free",
        f"trlshim: padding_free=True emulated on {installed_label()} (flattened rows with position_ids)",
    )


def padding_free_cap(call) -> None:
    """Step (TRL >= 1.0, which refuses padding_free without packing when max_length is set): the
    length is enforced by truncating each example in the collator instead."""
    if not (call.get("padding_free") and not call.get("packing") and call.get("max_length") is not None):
        return
    cap, keep_end = call.get("max_length"), call.get("truncation_mode") == "keep_end"
    call.set("max_length", None)
    report.decided(
        "packing.padding_free_cap",
        f"trlshim: padding_free without packing: max_length={cap} enforced by truncating each example in the "
        f"collator ({installed_label()} refuses the combination)",
    )

    def wrap_collator(call):
        if call.instance is not None:
            call.instance.data_collator = TruncatingCollator(call.instance.data_collator, cap, keep_end=keep_end)

    call.after(wrap_collator)


def position_ids(call) -> None:
    """Step (TRL 0.19-0.22, which send position_ids only to flash attention): a packed row would be one
    long sequence; per-example position_ids keep each example's positions (as TRL >= 0.23 does)."""

    def turn_on(call):
        collator = getattr(call.instance, "data_collator", None)
        if getattr(collator, "padding_free", False) and getattr(collator, "return_position_ids", True) is False:
            collator.return_position_ids = True
            report.decided(
                "packing.position_ids",
                f"trlshim: padding-free rows get per-example position_ids ({installed_label()} sends them only "
                "with flash attention)",
            )

    call.after(turn_on)


def _label_collator_types():
    from transformers import DataCollatorForSeq2Seq

    return (DataCollatorForSeq2Seq,)

