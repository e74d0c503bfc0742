"""Pre-tokenized DPO data in every release's column layout: the token ids the model is fed (a forward pre-hook)
are the dataset's own, on every release with ``_prepare_dataset`` (0.14+); a TypeError before, and for
columns the installed release cannot use."""
from __future__ import annotations

import copy

import helpers
import pytest
from packaging.version import Version

from trlshim.versions import trl_version

TRL = trl_version()
FEEDS = TRL >= Version("0.14")

PROMPTS = [[11, 12, 13, 14], [21, 22, 23], [31, 32, 33, 34, 35], [41, 42, 43]]
CHOSEN = [[51, 52], [61, 62, 63], [71], [81, 82]]
REJECTED = [[91, 92, 93], [101], [111, 112], [121, 122, 123, 124]]


def _rows(layout: str) -> list:
    rows = []
    for p, c, r in zip(PROMPTS, CHOSEN, REJECTED):
        if layout == "0.7-0.12":  # tokenize_row's output: whole sequences, prompt masked in the labels
            rows.append({"prompt_input_ids": p, "prompt_attention_mask": [1] * len(p),
                         "chosen_input_ids": p + c, "chosen_attention_mask": [1] * len(p + c),
                         "chosen_labels": [-100] * len(p) + c,
                         "rejected_input_ids": p + r, "rejected_attention_mask": [1] * len(p + r),
                         "rejected_labels": [-100] * len(p) + r})
        elif layout == "0.13-0.28":
            rows.append({"prompt_input_ids": p, "chosen_input_ids": c, "rejected_input_ids": r})
        else:
            rows.append({"prompt_ids": p, "chosen_ids": c, "rejected_ids": r})
    return rows


def _dataset(layout: str, extra: dict | None = None):
    from datasets import Dataset

    rows = _rows(layout)
    if extra:
        rows = [dict(row, **extra) for row in rows]
    return Dataset.from_list(rows)


def _trainer(tmp_path, data, **config):
    import trl

    tok = helpers.make_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = helpers.make_model()
    cfg = trl.DPOConfig(**helpers.training_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=2,
                                                  remove_unused_columns=False), **config)
    rec = helpers.Recorder(model)
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=data,
                             processing_class=tok)
    return trainer, rec


def _expected(prompt_cap=None) -> list:
    out = []
    for p, c, r in zip(PROMPTS, CHOSEN, REJECTED):
        p = p[-prompt_cap:] if prompt_cap else p
        out += [p + c, p + r]
    return sorted(out)


@pytest.mark.parametrize("layout", ["0.7-0.12", "0.13-0.28", ">=0.29"])
def test_fed_token_ids_are_the_datasets(tmp_path, layout):
    data = _dataset(layout)
    if not FEEDS:
        with pytest.raises(TypeError, match=r"pre-tokenized.*TRL .*tokenizes text"):
            _trainer(tmp_path, data)
        return
    trainer, rec = _trainer(tmp_path, data)
    trainer.train()
    rec.remove()
    assert sorted(rec.rows()) == _expected()  # 2 steps x 2 pairs: every example once, chosen and rejected


@pytest.mark.skipif(not FEEDS, reason="TRL < 0.14 refuses pre-tokenized DPO data (tested above)")
@pytest.mark.parametrize("layout", ["0.13-0.28", ">=0.29"])
def test_max_prompt_length_cuts_pretokenized_prompts(tmp_path, layout):
    """max_prompt_length=2: the prompt keeps its last 2 tokens (the release's own cut on 0.14-0.28,
    trlshim's emulation on >= 0.29, composed with the column step)."""
    trainer, rec = _trainer(tmp_path, _dataset(layout), max_prompt_length=2)
    trainer.train()
    rec.remove()
    assert sorted(rec.rows()) == _expected(prompt_cap=2)


@pytest.mark.skipif(not FEEDS, reason="TRL < 0.14 refuses pre-tokenized DPO data (tested above)")
def test_masked_padding_is_dropped(tmp_path):
    """Attention-mask zeros inside pre-tokenized rows are padding: not fed (the collators pad themselves)."""
    from datasets import Dataset

    rows = []
    for p, c, r in zip(PROMPTS, CHOSEN, REJECTED):
        rows.append({"prompt_input_ids": [0] + p, "prompt_attention_mask": [0] + [1] * len(p),
                     "chosen_input_ids": c + [0], "chosen_attention_mask": [1] * len(c) + [0],
                     "rejected_input_ids": r, "rejected_attention_mask": [1] * len(r)})
    trainer, rec = _trainer(tmp_path, Dataset.from_list(rows))
    trainer.train()
    rec.remove()
    assert sorted(rec.rows()) == _expected()


@pytest.mark.skipif(not FEEDS, reason="TRL < 0.14 refuses pre-tokenized DPO data (tested above)")
def test_unusable_columns_are_errors(tmp_path):
    # a label mask inside the completion: no DPO release from 0.13 on can hide completion tokens
    data = _dataset("0.7-0.12").map(lambda ex: {"chosen_labels": ex["chosen_labels"][:-1] + [-100]})
    with pytest.raises(TypeError, match=r"chosen_labels masks tokens after the prompt"):
        _trainer(tmp_path, data)
    # a token column outside the layout is not silently dropped
    with pytest.raises(TypeError, match=r"\['chosen_position_ids'\] have no place"):
        _trainer(tmp_path, _dataset(">=0.29", extra={"chosen_position_ids": [0, 1]}))


def test_text_datasets_are_untouched(tmp_path):
    """Text columns present: the release tokenizes as always (the extra token columns are its business)."""
    from trlshim.patches.dpo.columns import layout_of

    data = _dataset(">=0.29", extra={"prompt": "a", "chosen": "b", "rejected": "c"})
    assert layout_of(data) is None
    assert layout_of(_dataset(">=0.29")).releases == ">=0.29"
    assert layout_of(_dataset("0.7-0.12")).whole_sequence
    assert not layout_of(_dataset("0.13-0.28")).whole_sequence
