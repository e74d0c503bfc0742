"""Dict-valued SFT options (``model_init_kwargs``, ``dataset_kwargs``) translated key by key, checked by
what TRL loaded and what the model was fed."""
from __future__ import annotations

import helpers
import pytest

import trlshim  # noqa: F401  (patches trl)
from trlshim.versions import trl_in, trl_version

TRL = trl_version()


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    """A tiny float32 model (and its tokenizer) saved to a directory: TRL loads it by path."""
    path = tmp_path / "tiny"
    helpers.make_model().save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def _loaded(tmp_path, model_dir, tokenizer, where, mik):
    import trl

    data = helpers.text_dataset(n=8)
    if where == "config":
        cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path / "out"), dataset_text_field="text",
                            max_seq_length=8, model_init_kwargs=mik)
        trainer = trl.SFTTrainer(model=model_dir, args=cfg, train_dataset=data, tokenizer=tokenizer)
    else:  # TRL 0.7/0.8 style: a trainer keyword
        from transformers import TrainingArguments

        trainer = trl.SFTTrainer(model=model_dir, args=TrainingArguments(**helpers.training_kwargs(tmp_path / "out")),
                                 train_dataset=data, tokenizer=tokenizer, dataset_text_field="text",
                                 max_seq_length=8, model_init_kwargs=mik)
    return trainer.model


@pytest.mark.parametrize("where", ["config", "trainer"])
@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
def test_model_init_kwargs_dtype_reaches_the_model(tmp_path, model_dir, tokenizer, where, key):
    import torch

    mik = {key: torch.bfloat16}
    model = _loaded(tmp_path, model_dir, tokenizer, where, mik)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert mik == {key: torch.bfloat16}  # the caller's dict is untouched


def test_model_init_kwargs_string_dtype(tmp_path, model_dir, tokenizer):
    import torch

    model = _loaded(tmp_path, model_dir, tokenizer, "config", {"torch_dtype": torch.float16})
    assert next(model.parameters()).dtype == torch.float16


def test_model_init_kwargs_both_spellings_differ_is_an_error(tmp_path, model_dir, tokenizer):
    import torch

    with pytest.raises(TypeError, match="torch_dtype"):
        _loaded(tmp_path, model_dir, tokenizer, "config", {"torch_dtype": torch.bfloat16, "dtype": torch.float16})


def test_translate_model_init_kwargs_table():
    import torch

    from trlshim.patches.common.model_init_kwargs import translate_model_init_kwargs

    src = {"torch_dtype": torch.bfloat16, "revision": "main"}
    out = translate_model_init_kwargs(src, "x")
    want = "dtype" if trl_in(">=0.23") else "torch_dtype"
    assert out == {want: torch.bfloat16, "revision": "main"}
    assert src == {"torch_dtype": torch.bfloat16, "revision": "main"}
    same = translate_model_init_kwargs({"torch_dtype": torch.bfloat16, "dtype": torch.bfloat16}, "x")
    assert same == {want: torch.bfloat16}


# -- dataset_kwargs ------------------------------------------------------------------------------------


def _bos_eos_tokenizer():
    """The tiny tokenizer, made to add BOS and EOS around each text (as Llama-style tokenizers do)."""
    from tokenizers.processors import TemplateProcessing

    tok = helpers.make_tokenizer()
    bos, eos = tok.bos_token_id, tok.eos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    assert tok("the cat")["input_ids"][0] == bos  # the fixture itself works
    return tok


def _fed_ids(tmp_path, tok, **config):
    rec, _ = helpers.run_sft(tmp_path, helpers.text_dataset(n=12), tokenizer=tok, steps=1, batch_size=2,
                             dataset_text_field="text", max_seq_length=24, **config)
    return [i for row in rec.rows() for i in row]


def test_dataset_kwargs_add_special_tokens_false_adds_no_bos_eos(tmp_path):
    tok = _bos_eos_tokenizer()
    fed = _fed_ids(tmp_path, tok, dataset_kwargs={"add_special_tokens": False})
    assert fed and tok.bos_token_id not in fed and tok.eos_token_id not in fed


def test_dataset_kwargs_add_special_tokens_true_adds_bos(tmp_path):
    tok = _bos_eos_tokenizer()
    fed = _fed_ids(tmp_path, tok, dataset_kwargs={"add_special_tokens": True})
    assert tok.bos_token_id in fed


@pytest.mark.parametrize("concat", [False, True])
def test_dataset_kwargs_append_concat_token_when_packing(tmp_path, concat):
    tok = helpers.make_tokenizer()
    fed = _fed_ids(tmp_path, tok, packing=True, dataset_kwargs={"append_concat_token": concat})
    assert len(fed) >= 24
    assert (tok.eos_token_id in fed) is concat


def test_dataset_kwargs_unknown_key_is_an_error(tmp_path):
    if not trl_in(">=0.15"):
        pytest.skip("TRL <= 0.14 pass dataset_kwargs to their own data preparation, which rejects unknown keys")
    with pytest.raises(TypeError, match="no_such_key"):
        _fed_ids(tmp_path, helpers.make_tokenizer(), dataset_kwargs={"no_such_key": 1})


def test_dataset_kwargs_remove_unused_columns_false_is_an_error(tmp_path):
    if not trl_in(">=0.15"):
        pytest.skip("TRL <= 0.14 read remove_unused_columns from dataset_kwargs themselves")
    with pytest.raises(TypeError, match="remove_unused_columns"):
        _fed_ids(tmp_path, helpers.make_tokenizer(), dataset_kwargs={"remove_unused_columns": False})


def test_dataset_kwargs_given_to_the_trainer_like_trl_0_8(tmp_path):
    """A 0.8-style call: dataset_kwargs as an SFTTrainer keyword, TrainingArguments as args."""
    import trl
    from transformers import TrainingArguments

    tok = _bos_eos_tokenizer()
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    trl.SFTTrainer(model=model, args=TrainingArguments(**helpers.training_kwargs(tmp_path, max_steps=1)),
                   train_dataset=helpers.text_dataset(n=8), tokenizer=tok, dataset_text_field="text",
                   max_seq_length=24, dataset_kwargs={"add_special_tokens": False}).train()
    rec.remove()
    fed = [i for row in rec.rows() for i in row]
    assert fed and tok.bos_token_id not in fed and tok.eos_token_id not in fed
