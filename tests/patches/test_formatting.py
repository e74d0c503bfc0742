"""formatting_func shapes, dataset_text_field, conversational datasets: checked by what is fed."""
from __future__ import annotations

import random

import helpers
import pytest


def _qa_rows(n=8, seed=7):
    rng = random.Random(seed)
    return [{"q": helpers.sentence(rng, 2, 5), "a": helpers.sentence(rng, 2, 5)} for _ in range(n)]


def _fmt(q, a):
    return f"<|user|> {q} <|assistant|> {a}"


def batched(examples):
    return [_fmt(q, a) for q, a in zip(examples["q"], examples["a"])]


def per_example(example):
    return _fmt(example["q"], example["a"])


def _strip_eos(tok, ids):
    while ids and ids[-1] == tok.eos_token_id:
        ids = ids[:-1]
    return ids


@pytest.mark.parametrize("func", [batched, per_example], ids=["batched", "per_example"])
def test_formatting_func_unpacked(tmp_path, func):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = _qa_rows()
    expected = {tuple(tok(_fmt(r["q"], r["a"]), add_special_tokens=False)["input_ids"]) for r in rows}
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, formatting_func=func, max_length=64)
    seen = helpers.fed_examples(rec)
    assert len(seen) == 4
    for ids, _ in seen:
        assert tuple(_strip_eos(tok, ids)) in expected


@pytest.mark.parametrize("func", [batched, per_example], ids=["batched", "per_example"])
def test_formatting_func_packed(tmp_path, func):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = _qa_rows(16)
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, formatting_func=func, packing=True,
                             max_length=32)
    user = tok.convert_tokens_to_ids("<|user|>")
    fed = [ids for ids, _ in helpers.fed_examples(rec)]
    assert fed and max(len(ids) for ids in fed) <= 32
    # formatted text, and more examples per step than the 4 rows of a batch: packed
    assert sum(ids.count(user) for ids in fed) > 4 * len(rec.calls)


def test_formatting_func_wins_over_dataset_text_field(tmp_path):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = [dict(r, content="the cat sat") for r in _qa_rows()]
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, formatting_func=per_example,
                             dataset_text_field="content", max_length=64)
    user = tok.convert_tokens_to_ids("<|user|>")
    assert all(ids[0] == user for ids, _ in helpers.fed_examples(rec))


@pytest.mark.parametrize("packing", [False, True])
def test_dataset_text_field_any_column(tmp_path, packing):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    texts = helpers.texts(16)
    rows = [{"body": t, "text": "<|system|> not this"} for t in texts]
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, dataset_text_field="body",
                             packing=packing, max_length=64)
    system = tok.convert_tokens_to_ids("<|system|>")
    fed = [ids for ids, _ in helpers.fed_examples(rec)]
    assert fed and all(system not in ids for ids in fed)
    if not packing:
        expected = {tuple(tok(t)["input_ids"]) for t in texts}
        assert all(tuple(_strip_eos(tok, ids)) in expected for ids in fed)


@pytest.mark.parametrize("key,sharegpt", [("messages", False), ("conversations", False), ("conversations", True)])
def test_conversational_formatted_with_chat_template(tmp_path, key, sharegpt):
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = helpers.chat_rows(key=key, sharegpt=sharegpt)
    plain = helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)  # same text; renders on any transformers
    expected = set()
    for r in helpers.chat_rows(key="messages"):
        expected.add(tuple(tok(plain.apply_chat_template(r["messages"], tokenize=False),
                               add_special_tokens=False)["input_ids"]))
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, max_length=128)
    seen = helpers.fed_examples(rec)
    assert len(seen) == 4
    for ids, _ in seen:
        assert tuple(ids) in expected or tuple(_strip_eos(tok, ids)) + (tok.eos_token_id,) in expected


# --- issue 9 item 1: the shape is decided by what the function returns, never by an exception alone --------


def _dirty_rows(dirty_row):
    rows = _qa_rows()
    if dirty_row is not None:
        rows[dirty_row]["a"] = None  # a dirty row: the user's own function fails on it
    return rows


def _per_example_strict(example):
    return _fmt(example["q"], example["a"] + "")  # TypeError on a None answer


def _batched_strict(examples):
    return [_fmt(q, a + "") for q, a in zip(examples["q"], examples["a"])]


def _returns_none(example):
    return None


def _batched_returns_nones(examples):
    return [None for _ in examples["q"]]


def _first_batch_rows(tmp_path, rows, func):
    from datasets import Dataset

    rec, trainer = helpers.run_sft(tmp_path, Dataset.from_list(rows), formatting_func=func, max_length=64, train=False)
    batch = next(iter(trainer.get_train_dataloader()))
    mask = batch.get("attention_mask")
    return [ids[m.bool()].tolist() if mask is not None else ids.tolist()
            for ids, m in zip(batch["input_ids"], mask if mask is not None else batch["input_ids"])]


def _contains(row, part):
    return any(row[i:i + len(part)] == part for i in range(len(row) - len(part) + 1))


@pytest.mark.parametrize("func", [_per_example_strict, _batched_strict], ids=["per_example", "batched"])
def test_clean_rows_are_formatted_whole(tmp_path, func):
    tok = helpers.make_tokenizer()
    rows = _dirty_rows(None)
    fed = _first_batch_rows(tmp_path, rows, func)
    wanted = [tok(_fmt(r["q"], r["a"]), add_special_tokens=False)["input_ids"] for r in rows]
    assert fed and all(any(_contains(f, w) for w in wanted) for f in fed)  # whole texts, not first characters


@pytest.mark.parametrize("dirty_row", [0, 3])
@pytest.mark.parametrize("func", [_per_example_strict, _batched_strict], ids=["per_example", "batched"])
def test_a_raising_row_surfaces_the_users_error(tmp_path, func, dirty_row):
    """Never trained on: the user's TypeError (concatenating None) is raised, in the chain of whatever
    error reaches the caller, and on row 0 trlshim names the row."""
    with pytest.raises(Exception) as err:
        _first_batch_rows(tmp_path, _dirty_rows(dirty_row), func)
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, TypeError) and "NoneType" in str(x) for x in chain), chain
    if dirty_row == 0 and func is _per_example_strict:
        assert "row 0" in str(err.value)


@pytest.mark.parametrize("func", [_returns_none, _batched_returns_nones])
def test_wrong_return_types_are_refused(tmp_path, func):
    with pytest.raises(Exception) as err:
        _first_batch_rows(tmp_path, _dirty_rows(None), func)
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("formatting_func must return" in m or "list of one string" in m for m in chain), chain
