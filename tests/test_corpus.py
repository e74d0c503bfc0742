"""The real-world-style scripts of ``tests/corpus/`` on the installed TRL: each script runs in-process
(``runpy``, as ``python script.py`` would) with a tiny local model, tokenizer and dataset, and the test
checks what the model was fed at every step (input ids and labels of every example: lengths, packing,
which tokens carry loss, where EOS goes) against the meaning of the release the script was written for.

Where the installed release legitimately differs in a way the README lists under "Follows the installed
release" (EOS appended to each example from TRL 0.16; how packing cuts rows), the check admits exactly
that difference, keyed by release (``FOLLOWS_RELEASE``), and nothing else.
"""
from __future__ import annotations

import json
import os

import helpers
import pytest
from corpus import _support
from packaging.specifiers import SpecifierSet
from packaging.version import Version

CORPUS = _support.CORPUS


def _trl() -> Version:
    import trl

    return Version(trl.__version__)


# Installed-release behaviour the README says trlshim follows, not changes ("Follows the installed release").
FOLLOWS_RELEASE = {
    # 0.16 appends the EOS id after tokenizing, 0.17+ appends eos_token to the text (unless it ends with it).
    "appends_eos": SpecifierSet(">=0.16"),
}


def follows(what: str) -> bool:
    return _trl() in FOLLOWS_RELEASE[what]


# --- fixtures: a tiny model and tokenizer saved as a local "hub" folder, and the datasets --------------

@pytest.fixture(scope="module")
def corpus_env(tmp_path_factory):
    return _support.make_env(tmp_path_factory.mktemp("corpus"))


def _rows(data_dir, name):
    with open(os.path.join(data_dir, name)) as fh:
        return [json.loads(line) for line in fh]


def run_script(name, env, tmp_path, monkeypatch, argv=()):
    """Run ``tests/corpus/<name>`` as ``__main__``; returns the Recorder of the trained model's inputs."""
    for key, value in _support.environ(env, str(tmp_path / "out")).items():
        monkeypatch.setenv(key, value)
    return _support.run(os.path.join(CORPUS, name), argv)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _parses(row, pieces) -> bool:
    """``row`` is a piece of a concatenation of ``pieces`` in any order: the end of one piece, whole pieces,
    the start of one piece (or a slice inside a single piece). So documents are never cut except at the row's
    edges, and separators sit exactly where the pieces put them."""
    n = len(row)
    if any(row == p[i:i + n] for p in pieces for i in range(len(p) - n + 1)):
        return True
    reach = {i for i in range(n + 1) if any(i <= len(p) and row[:i] == p[len(p) - i:] for p in pieces)}
    for i in range(n + 1):
        if i in reach:
            if any(row[i:] == p[:n - i] for p in pieces if n - i <= len(p)):
                return True
            reach.update(i + len(p) for p in pieces if row[i:i + len(p)] == p)
    return False


def _assert_full_loss(examples):
    """Every fed token carries its own id as label (plain LM loss; a packed sequence's first token may be
    -100: its label would be the previous sequence's)."""
    for ids, labels in examples:
        assert labels is not None
        for j, (i, lab) in enumerate(zip(ids, labels)):
            assert lab == i or (lab == -100 and j == 0), (ids, labels)


# --- the scripts --------------------------------------------------------------------------------------

def test_cli_sft_v08(corpus_env, tmp_path, monkeypatch):
    """TRL 0.8 meaning: the ``content`` column, truncated to 8 tokens, no packing, loss on every token."""
    env, tok = corpus_env, corpus_env["tok"]
    argv = _support.argv("cli_sft_v08.py", env, str(tmp_path / "out"))
    rec, g = run_script("cli_sft_v08.py", env, tmp_path, monkeypatch, argv)
    assert g["model_kwargs"]["trust_remote_code"] is False  # ModelConfig lost the field after TRL 1.5
    texts = [r["content"] for r in _rows(env["data"], "train.jsonl")]
    eos = [tok.eos_token_id] if follows("appends_eos") else []
    expected = sorted((_ids(tok, t) + eos)[:8] for t in texts)
    fed = helpers.fed_examples(rec)
    assert len(fed) == 8
    assert sorted(ids for ids, _ in fed) == expected
    assert max(len(ids) for ids, _ in fed) == 8, "max_seq_length truncated the long texts"
    _assert_full_loss(fed)


def _assert_packed(rec, tok, texts, max_len, sep):
    """Packed rows: no sequence longer than ``max_len``; every row (or sequence within a row, where
    position_ids restart) is cut from the texts' token ids joined by ``sep`` (``_parses``)."""
    rows = helpers.fed_examples(rec)
    pieces = [_ids(tok, t) + sep for t in texts]
    for call in rec.calls:  # TRL >= 0.20 flattens a packed batch into one row (padding-free)
        assert call["input_ids"].numel() <= 2 * max_len, call["input_ids"].shape
    assert all(len(ids) <= max_len for ids, _ in rows)
    for ids, _ in rows:
        assert _parses(ids, pieces), (ids, pieces)
    return rows


def test_notebook_packing_v07(corpus_env, tmp_path, monkeypatch):
    """TRL 0.7/0.8 meaning: packed rows of at most 32 tokens, documents separated by EOS, loss everywhere
    (on TRL 0.15, whose packing puts nothing between documents, through trlshim's sft.packing.eos_between)."""
    env, tok = corpus_env, corpus_env["tok"]
    rec, _ = run_script("notebook_packing_v07.py", env, tmp_path, monkeypatch)
    texts = [r["text"] for r in _rows(env["data"], "train.jsonl")]
    rows = _assert_packed(rec, tok, texts, 32, [tok.eos_token_id])
    assert any(tok.eos_token_id in r[:-1] for r in rec.rows()), "no row holds two documents: not packed"
    _assert_full_loss(rows)


def test_peft_example_v09(corpus_env, tmp_path, monkeypatch):
    """TRL 0.9 meaning with dataset_kwargs: packed, NO EOS between documents, LoRA adapters trained only."""
    pytest.importorskip("peft")
    env, tok = corpus_env, corpus_env["tok"]
    rec, g = run_script("peft_example_v09.py", env, tmp_path, monkeypatch)
    texts = [r["text"] for r in _rows(env["data"], "train.jsonl")]
    rows = _assert_packed(rec, tok, texts, 32, [])
    assert all(tok.eos_token_id not in ids for ids, _ in rows), "append_concat_token=False: no EOS"
    assert any(len(r) > max(len(_ids(tok, t)) for t in texts) for r in rec.rows()), "not packed"
    _assert_full_loss(rows)
    trainable = [n for n, p in g["trainer"].model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable


def test_chat_formatting_v08(corpus_env, tmp_path, monkeypatch):
    """TRL 0.8 meaning: each conversation rendered by the chat template, loss only after <|assistant|>."""
    env, tok = corpus_env, corpus_env["tok"]
    rec, _ = run_script("chat_formatting_v08.py", env, tmp_path, monkeypatch)
    chats = [r["messages"] for r in _rows(env["data"], "chat.jsonl")]
    marker = tok.convert_tokens_to_ids("<|assistant|>")
    expected = {}
    for msgs in chats:
        ids = _ids(tok, tok.apply_chat_template(msgs, tokenize=False))
        assert ids[-1] == tok.eos_token_id  # the template ends each turn with EOS: nothing is appended
        expected[tuple(ids)] = ids.index(marker) + 1
    fed = helpers.fed_examples(rec)
    assert len(fed) == 4
    for ids, labels in fed:
        assert tuple(ids) in expected, ids
        cut = expected[tuple(ids)]
        assert labels[:cut] == [-100] * cut
        assert labels[cut:] == ids[cut:]


def test_completion_only_v1(corpus_env, tmp_path, monkeypatch):
    """TRL 1.x meaning on every release: prompt + completion + EOS, truncated to 24, loss on the completion."""
    env, tok = corpus_env, corpus_env["tok"]
    rec, _ = run_script("completion_only_v1.py", env, tmp_path, monkeypatch)
    expected = {}
    for r in _rows(env["data"], "prompt_completion.jsonl"):
        prompt = _ids(tok, r["prompt"])
        full = (prompt + _ids(tok, r["prompt"] + r["completion"])[len(prompt):] + [tok.eos_token_id])[:24]
        expected[tuple(full)] = len(prompt)
    fed = helpers.fed_examples(rec)
    assert len(fed) == 4
    for ids, labels in fed:
        assert tuple(ids) in expected, (ids, list(expected))
        n = expected[tuple(ids)]
        assert labels[:n] == [-100] * n
        assert labels[n:] == ids[n:]
