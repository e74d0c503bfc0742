"""Issue 9 item 6: vision-language models, on a real tiny Llava built locally from a config (a tiny
CLIP vision tower, a tiny Llama text model, in-memory images): trlshim's automatic padding-free never
turns on for it, and an explicit packing / padding-free request with vision data is a clear error
(trlshim's on TRL < 0.22, TRL's own from 0.22) - never rows packed by their text alone."""
from __future__ import annotations

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
        pytest.skip("TRL >= 0.22 refuses packing/padding-free for vision datasets itself; reaching that check needs "
                    "a multimodal processor, which this test does not build (not proven here)")
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
