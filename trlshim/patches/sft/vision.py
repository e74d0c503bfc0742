"""Step (TRL < 0.22): packing or padding-free with a vision-language model, a processor or image data
is an error. Rows would be packed by their text alone, so image placeholder tokens and the image
features the model receives fall out of step - it trains on the wrong pairing, silently. TRL 0.22+
refuses packing and padding-free for vision datasets itself (and trlshim's automatic padding-free
never turns on for them: ``packing.auto_padding_free_decision``).

Step (TRL >= 0.24): ``dataset_kwargs={"skip_prepare_dataset": True}`` with image columns and a text tokenizer
(not a processor). TRL 0.8-0.23 left such a dataset as it was (the caller's collator reads the images: a custom
multimodal model that transformers does not know as one); 0.24 refuses any dataset with ``image``/``images``
columns unless the processing class is a processor. trlshim shows TRL's ``__init__`` the train dataset with
those columns renamed, and puts the caller's dataset back on the trainer afterwards: the trainer then holds
the dataset untouched on its text path (text collator unless one is given, no vision checks), as 0.23 did.
"""
from __future__ import annotations

from ... import report
from ...translate import installed_label
from .data import IMAGE_COLUMNS, column_names, is_hf_dataset, vision_reason


def refuse_packing(call) -> None:
    asked = [n for n in ("packing", "padding_free") if call.get(n)]
    if not asked:
        return
    why = vision_reason(call)
    if why:
        raise ValueError(
            f"{' and '.join(f'{n}=True' for n in asked)} with vision data: {why}. Packed or flattened rows are cut "
            "by their text alone, so image tokens and image features would no longer line up; use packing=False and "
            f"padding_free=False ({installed_label()}; TRL >= 0.22 refuses this too)"
        )


def _processor_decides_vision(call) -> bool:
    """Whether TRL will take the call as a vision-language one: its processing class is a processor (the
    rule of TRL >= 0.24). Without one, TRL loads ``AutoProcessor`` for the model: loaded here only to decide."""
    from transformers import ProcessorMixin

    proc = call.kwargs.get("processing_class", call.kwargs.get("tokenizer"))
    if proc is None:
        model = call.kwargs.get("model")
        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name:
            return True  # unknown: leave the call to TRL
        init = call.get("model_init_kwargs") or {}
        try:
            from transformers import AutoProcessor

            proc = AutoProcessor.from_pretrained(name, revision=init.get("revision"), trust_remote_code=bool(
                getattr(call.args, "trust_remote_code", False) or init.get("trust_remote_code")))
        except Exception:  # TRL meets the same failure itself
            return True
    return isinstance(proc, ProcessorMixin)


def keep_image_columns(call) -> None:
    """Step (TRL >= 0.24): a skipped-preparation dataset with image columns on a text model kept as it is."""
    value = call.get("dataset_kwargs")
    train = call.kwargs.get("train_dataset")
    if not (isinstance(value, dict) and value.get("skip_prepare_dataset")) or not is_hf_dataset(train):
        return
    columns = column_names(train)
    images = [c for c in IMAGE_COLUMNS if c in columns]
    if not images or _processor_decides_vision(call):
        return
    renamed = {c: f"_trlshim_{c}" for c in images}
    if any(new in columns for new in renamed.values()):
        return  # never overwrite a column: TRL's own refusal stands
    call.kwargs["train_dataset"] = train.rename_columns(renamed)

    def put_back(call):
        if call.instance is not None:
            call.instance.train_dataset = train

    call.after(put_back)
    report.translated("skip_prepare_dataset.images", f"trlshim: dataset_kwargs skip_prepare_dataset=True with "
                      f"{images} columns and a tokenizer: the dataset is kept as it is, on the text path, as TRL "
                      f"<= 0.23 did ({installed_label()} refuses image columns without a processor); your "
                      "data_collator reads the images")
