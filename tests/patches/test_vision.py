"""Issue 9 item 6: vision-language models, on a real tiny Llava built locally from a config (a tiny
CLIP vision tower, a tiny Llama text model, in-memory images): trlshim's automatic padding-free never
turns on for it, and an explicit packing / padding-free request with vision data is a clear error
(trlshim's on TRL < 0.22, TRL's own from 0.22) - never rows packed by their text alone."""
from __future__ import annotations

import inspect

import helpers
import pytest

from trlshim import report


def _tiny_llava():
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = helpers.make_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(tok) - 1)
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config), tok


def _image_rows(n=8):
    """Rows with an ``images`` column (16x16 RGB pixel lists: no imaging library needed to hold them)."""
    return [{"images": [[[[i * 20, 0, 0]] * 16] * 16], "text": t} for i, t in enumerate(helpers.texts(n))]


def test_tiny_vlm_is_a_real_vision_language_model():
    model, _ = _tiny_llava()
    assert model.config.vision_config is not None and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("option", ["packing", "padding_free"])
def test_packing_or_padding_free_with_vision_data_is_an_error(tmp_path, option):
    from datasets import Dataset
    from packaging.version import Version

    from trlshim.versions import trl_version

    if trl_version() >= Version("0.22"):
        pytest.skip("TRL >= 0.22 refuses packing/padding-free for vision data itself once given a processor: "
                    "test_packing_with_a_processor_and_images_is_refused")
    model, tok = _tiny_llava()
    rec = helpers.Recorder(model)
    with pytest.raises((ValueError, NotImplementedError)) as err:
        helpers.run_sft(tmp_path, Dataset.from_list(_image_rows()), tokenizer=tok, model=model, max_length=32,
                        **{option: True})
    rec.remove()
    assert rec.calls == []  # nothing trained
    assert f"{option}=True with vision data: the model is a vision-language model" in str(err.value)


def test_auto_padding_free_never_turns_on_for_a_vlm(tmp_path):
    model, tok = _tiny_llava()
    try:
        helpers.run_sft(tmp_path, helpers.text_dataset(8), tokenizer=tok, model=model, max_length=16,
                        auto_padding_free=True, train=False)
    except Exception:  # the release may not run SFT on this model with text data: the decision is made first
        pass
    decisions = [m for m in report.applied() if "auto padding-free" in m]
    assert decisions and all("auto padding-free off" in m for m in decisions), decisions
    assert any("vision-language model" in m for m in decisions)


# --- a real processor: TRL's own vision path (0.22+) ------------------------------------------------------------

IMAGE_TOKEN = "<image>"


def _vision_sft_release() -> bool:
    """TRL 0.22 added vision-language SFT (a processor as processing_class, image columns collated on the fly)."""
    import trl.trainer.sft_trainer as sft

    return hasattr(sft, "DataCollatorForVisionLanguageModeling")


def _llava_with_processor():
    """A tiny Llava plus a locally built LlavaProcessor (CLIP image processor, 16x16 images, 8x8 patches:
    4 patches + CLS per image,
    of which the default feature selection keeps the 4 patches: 4 placeholder tokens and 4 features per image)."""
    pytest.importorskip("PIL")
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = helpers.make_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    options = dict(patch_size=8, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                   num_additional_image_tokens=1, chat_template=tok.chat_template)
    accepted = inspect.signature(LlavaProcessor.__init__).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    try:
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, **options)
    except ValueError:  # transformers < 4.45 wants a Llama tokenizer class: the same vocabulary under that class
        from transformers import LlamaTokenizerFast

        tok = LlamaTokenizerFast(tokenizer_object=tok.backend_tokenizer, **tok.special_tokens_map)
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, **options)
    return model, processor, image_id


def _vision_rows(n=8):
    from PIL import Image

    rows = []
    for i, t in enumerate(helpers.texts(n, n_max=8)):
        rows.append({"images": [Image.new("RGB", (16, 16), (i * 30 % 256, 0, 0))], "text": f"{IMAGE_TOKEN} {t}"})
    return rows


@pytest.mark.parametrize("option", ["packing", "padding_free"])
def test_packing_with_a_processor_and_images_is_refused(tmp_path, option):
    """On every release: trlshim's error before TRL 0.22, TRL's own from 0.22 - and nothing trained either way."""
    from datasets import Dataset

    model, processor, _ = _llava_with_processor()
    rec = helpers.Recorder(model)
    with pytest.raises((ValueError, NotImplementedError)) as err:
        helpers.run_sft(tmp_path, Dataset.from_list(_vision_rows()), tokenizer=processor, model=model, max_length=64,
                        remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, **{option: True})
    rec.remove()
    assert rec.calls == []
    message = str(err.value)
    if _vision_sft_release():
        assert "not supported for vision" in message, message  # TRL's own refusal
    else:
        assert f"{option}=True with vision data" in message, message


def test_vision_sft_trains_with_images_aligned(tmp_path):
    """TRL 0.22+ trains vision-language models itself; with trlshim active, every row the model receives carries
    exactly as many image placeholder tokens as image features reach the language model (no packing, no
    flattening: trlshim's automatic padding-free stays off), and the weights move."""
    if not _vision_sft_release():
        pytest.skip("this TRL release has no vision-language SFT (added in TRL 0.22); packing/padding-free with "
                    "vision data is refused by trlshim (tested above)")
    import torch
    from datasets import Dataset

    model, processor, image_id = _llava_with_processor()
    features = []
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda module, args, out: features.append(tuple(out.shape)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec, trainer = helpers.run_sft(
        tmp_path, Dataset.from_list(_vision_rows()), tokenizer=processor, model=model, steps=2, max_length=None,
        auto_padding_free=True, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})
    hook.remove()
    assert len(rec.calls) == 2 and len(features) == 2
    for call, shape in zip(rec.calls, features):
        ids = call["input_ids"]
        per_row = (ids == image_id).sum(dim=1)
        assert shape[0] == ids.shape[0] and shape[1] == 4  # one image per row, 4 features each
        assert per_row.tolist() == [shape[1]] * ids.shape[0]  # every feature has its placeholder in its own row
        assert "position_ids" not in call  # not flattened
    decisions = [m for m in report.applied() if "auto padding-free" in m]
    assert decisions and all("auto padding-free off" in m for m in decisions), decisions
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


# --- skip_prepare_dataset with image columns on a text model (TRL <= 0.23's meaning) ----------------------------

class ImageMarkCollator:
    """A caller's collator for a text model fed image data (a custom multimodal setup): each row starts with a
    token naming its image (from the image's red value), then the tokenized text. Keeps every example it got."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def __call__(self, examples):
        import torch

        self.seen.extend(examples)
        rows = [[10 + ex["images"][0][0][0][0] // 20] + self.tok(ex["text"])["input_ids"] for ex in examples]
        width = max(map(len, rows))
        ids = torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_skip_prepare_dataset_keeps_image_columns_for_a_text_model(tmp_path):
    """TRL 0.8-0.23 kept a ``skip_prepare_dataset`` dataset as it was, image columns and all, for the caller's
    collator; TRL >= 0.24 refuses image columns without a processor. On every release: the trainer holds the
    dataset untouched and the model is fed what the caller's collator made of each example's image and text."""
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    data = Dataset.from_list(_image_rows())
    collator = ImageMarkCollator(tok)
    report.reset()
    rec, trainer = helpers.run_sft(tmp_path, data, tokenizer=tok, data_collator=collator, remove_unused_columns=False,
                                   dataset_text_field="text", dataset_kwargs={"skip_prepare_dataset": True})
    assert trainer.train_dataset.features == data.features and len(trainer.train_dataset) == len(data)
    assert len(collator.seen) >= 4 and all(ex in data.to_list() for ex in collator.seen)  # untouched (+ prefetch)
    expected = [[10 + i] + tok(row["text"])["input_ids"] for i, row in enumerate(_image_rows())]
    fed = rec.rows()
    assert len(fed) == 4 and all(row in expected for row in fed)
    from trlshim.versions import trl_in

    assert any("skip_prepare_dataset=True with ['images']" in m for m in report.applied()) == trl_in(">=0.24")
