"""completion_only_loss and assistant_only_loss on every release, checked by the labels fed."""
from __future__ import annotations

import helpers
import pytest
from packaging.version import Version

from trlshim import report
from trlshim.versions import trl_version

TRL = trl_version()
IGNORE = -100


def _prompt_lengths(tok, rows):
    return [tok(text=r["prompt"])["input_ids"] for r in rows]


def _match_prompt(ids, prompts):
    found = [p for p in prompts if ids[: len(p)] == p]
    assert found, "fed example matches no prompt of the dataset"
    return max(found, key=len)


@pytest.mark.parametrize("setting", ["auto", True, False])
def test_completion_only_loss(tmp_path, setting):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = helpers.prompt_completion_rows()
    cfg = {} if setting == "auto" else {"completion_only_loss": setting}
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, max_length=64, **cfg)
    prompts = _prompt_lengths(tok, rows)
    seen = helpers.fed_examples(rec)
    assert len(seen) == 4
    for ids, labels in seen:
        p = _match_prompt(ids, prompts)
        assert len(ids) > len(p)
        if setting is False:
            assert labels == ids  # full loss
        else:
            assert labels[: len(p)] == [IGNORE] * len(p)  # the prompt carries no loss
            assert labels[len(p):] == ids[len(p):]  # the completion does
        assert ids[-1] == tok.eos_token_id  # TRL >= 0.17 ends the completion with EOS


def test_completion_only_truncated_to_max_length(tmp_path):
    from datasets import Dataset

    rows = helpers.prompt_completion_rows()
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), max_length=10)
    assert max(len(ids) for ids, _ in helpers.fed_examples(rec)) == 10


def _runs(ids, labels):
    runs, cur = [], []
    for t, lab in zip(ids, labels):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


@pytest.mark.parametrize("key,sharegpt", [("messages", False), ("conversations", True)])
def test_assistant_only_loss(tmp_path, key, sharegpt):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = helpers.chat_rows(key=key, sharegpt=sharegpt)
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, assistant_only_loss=True,
                             max_length=128)
    answers = set()
    for r in rows:
        for m in r[key]:
            if m.get("role", m.get("from")) in ("assistant", "gpt"):
                answers.add(m.get("content", m.get("value")) + tok.eos_token)
    seen = helpers.fed_examples(rec)
    assert len(seen) == 4
    for ids, labels in seen:
        runs = _runs(ids, labels)
        assert len(runs) == 2  # two assistant turns, nothing else
        for run in runs:
            assert tok.decode(run) in answers
        assert tok.convert_tokens_to_ids("<|user|>") not in [t for run in runs for t in run]


def test_assistant_only_loss_without_generation_markers_is_an_error(tmp_path):
    from datasets import Dataset

    tok = helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)
    with pytest.raises((ValueError, RuntimeError), match="generation|assistant"):
        helpers.run_sft(tmp_path, Dataset.from_list(helpers.chat_rows()), tokenizer=tok, assistant_only_loss=True,
                        max_length=128)


def test_assistant_only_loss_needs_conversational_data(tmp_path):
    with pytest.raises(ValueError, match="conversational"):
        helpers.run_sft(tmp_path, helpers.text_dataset(8), assistant_only_loss=True, max_length=32, train=False)


def test_emulated_mask_with_packing_is_refused(tmp_path):
    from datasets import Dataset

    if TRL >= Version("0.17"):
        pytest.skip("TRL >= 0.17 packs prompt/completion data with its completion mask")
    with pytest.raises(ValueError, match="packing"):
        helpers.run_sft(tmp_path, Dataset.from_list(helpers.prompt_completion_rows()), packing=True, max_length=32,
                        completion_only_loss=True, train=False)


def test_automatic_completion_only_gives_way_to_packing(tmp_path):
    """Not asked for explicitly, the (TRL >= 0.17) automatic completion-only loss never breaks a call the
    release runs natively: with packing on < 0.17 the loss covers every token, as the release does."""
    from datasets import Dataset

    if TRL >= Version("0.17"):
        pytest.skip("TRL >= 0.17 packs prompt/completion data with its completion mask")
    tok = helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)  # old transformers render no {% generation %}
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(helpers.prompt_completion_rows()), tokenizer=tok,
                             packing=True, max_length=32)
    labels = [lab for _, labs in helpers.fed_examples(rec) for lab in labs]
    assert labels and IGNORE not in labels
    assert any("not emulated" in m and "packing" in m for m in report.applied())
