"""DataCollatorForCompletionOnlyLM on every release, checked by the labels the model is fed."""
from __future__ import annotations

import helpers
import pytest
from packaging.version import Version

from trlshim.versions import trl_version

TRL = trl_version()
IGNORE = -100


def _rows(n=8, turns=1, seed=5):
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rows.append({"q": [helpers.sentence(rng, 2, 5) for _ in range(turns)],
                     "a": [helpers.sentence(rng, 2, 5) for _ in range(turns)]})
    return rows


def _format(q, a):
    return "".join(f"<|user|> {x} <|assistant|> {y}" for x, y in zip(q, a))


def formatting_prompts_func(example):  # TRL's old docs: batched, returns a list of strings
    output_texts = []
    for i in range(len(example["q"])):
        output_texts.append(_format(example["q"][i], example["a"][i]))
    return output_texts


def _find(seq, sub):
    return [i for i in range(len(seq) - len(sub) + 1) if seq[i: i + len(sub)] == sub]


def test_importable_from_every_path():
    import trl
    import trl.trainer
    import trl.trainer.utils

    a = trl.DataCollatorForCompletionOnlyLM
    assert a is trl.trainer.DataCollatorForCompletionOnlyLM is trl.trainer.utils.DataCollatorForCompletionOnlyLM
    from trl import DataCollatorForCompletionOnlyLM  # noqa: F401


@pytest.mark.parametrize("as_ids", [False, True])
def test_response_template_masks_everything_before(tmp_path, as_ids):
    from datasets import Dataset
    from trl import DataCollatorForCompletionOnlyLM

    tok = helpers.make_tokenizer()
    template = " <|assistant|>"
    resp = tok.encode(template, add_special_tokens=False)
    collator = DataCollatorForCompletionOnlyLM(resp if as_ids else template, tokenizer=tok, mlm=False)
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(_rows()), tokenizer=tok, data_collator=collator,
                             formatting_func=formatting_prompts_func, packing=False, max_length=64)
    seen = helpers.fed_examples(rec)
    assert len(seen) == 4
    for ids, labels in seen:
        hits = _find(ids, resp)
        assert hits, tok.decode(ids)
        end = hits[-1] + len(resp)
        assert labels[:end] == [IGNORE] * end
        assert labels[end:] == ids[end:] and len(ids) > end


def test_instruction_template_masks_every_instruction_turn(tmp_path):
    from datasets import Dataset
    from trl import DataCollatorForCompletionOnlyLM

    tok = helpers.make_tokenizer()
    resp = tok.encode(" <|assistant|>", add_special_tokens=False)
    inst = tok.encode("<|user|>", add_special_tokens=False)
    collator = DataCollatorForCompletionOnlyLM(" <|assistant|>", instruction_template="<|user|>", tokenizer=tok)
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(_rows(turns=2)), tokenizer=tok, data_collator=collator,
                             formatting_func=formatting_prompts_func, packing=False, max_length=128)
    for ids, labels in helpers.fed_examples(rec):
        starts = _find(ids, inst)
        ends = [i + len(resp) for i in _find(ids, resp)]
        assert len(starts) == 2 and len(ends) == 2
        expected = list(ids)
        for a, b in zip(starts, ends):  # instruction turn + response template: no loss
            expected[a:b] = [IGNORE] * (b - a)
        assert labels == expected
        assert labels[ends[0]: starts[1]] == ids[ends[0]: starts[1]]  # first answer trained


def test_collator_decides_labels_not_dataset_prep(tmp_path):
    """New TRL builds labels/completion masks in dataset prep; the user's collator must still decide."""
    from datasets import Dataset
    from trl import DataCollatorForCompletionOnlyLM

    tok = helpers.make_tokenizer()
    rows = [{"text": _format(r["q"], r["a"])} for r in _rows()]
    collator = DataCollatorForCompletionOnlyLM(" <|assistant|>", tokenizer=tok)
    rec, _ = helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, data_collator=collator,
                             dataset_text_field="text", max_length=64)
    for ids, labels in helpers.fed_examples(rec):
        assert labels[0] == IGNORE and labels[-1] == ids[-1]


def test_refuses_packing(tmp_path):
    from datasets import Dataset
    from trl import DataCollatorForCompletionOnlyLM

    if Version("0.15") <= TRL < Version("0.20"):
        pytest.skip("TRL 0.15-0.19 accept the collator with packing (their own behaviour)")
    tok = helpers.make_tokenizer()
    collator = DataCollatorForCompletionOnlyLM(" <|assistant|>", tokenizer=tok)
    rows = [{"text": _format(r["q"], r["a"])} for r in _rows()]
    with pytest.raises(ValueError, match="packing"):
        helpers.run_sft(tmp_path, Dataset.from_list(rows), tokenizer=tok, data_collator=collator, packing=True,
                        dataset_text_field="text", max_length=32, train=False)


def test_unpatch_removes_the_injected_collator():
    import trl
    import trl.trainer.utils

    import trlshim

    if TRL < Version("0.20"):
        pytest.skip("TRL < 0.20 has its own DataCollatorForCompletionOnlyLM")
    assert hasattr(trl.trainer.utils, "DataCollatorForCompletionOnlyLM")
    trlshim.unpatch()
    try:
        assert "DataCollatorForCompletionOnlyLM" not in vars(trl.trainer.utils)
    finally:
        trlshim.patch()
    assert hasattr(trl.trainer.utils, "DataCollatorForCompletionOnlyLM")


def test_template_never_found_is_refused_not_trained_at_loss_zero(tmp_path):
    """Issue 9 item 5: trlshim's collator (TRL >= 0.20) refuses a batch in which no token carries a label,
    naming the template and its tokens, and warns once, not once per example; nothing is trained."""
    import warnings

    from datasets import Dataset
    from trl import DataCollatorForCompletionOnlyLM

    if TRL < Version("0.20"):
        pytest.skip("TRL < 0.20 has its own DataCollatorForCompletionOnlyLM (it trains at loss 0, as it always did)")
    tok = helpers.make_tokenizer()
    collator = DataCollatorForCompletionOnlyLM("### Answer:", tokenizer=tok, mlm=False)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError) as err:
        warnings.simplefilter("always")
        helpers.run_sft(tmp_path, Dataset.from_list(_rows()), tokenizer=tok, model=model, data_collator=collator,
                        formatting_func=formatting_prompts_func, packing=False, max_length=64)
    rec.remove()
    assert rec.calls == []  # never reached the model
    msg = str(err.value)
    assert "'### Answer:'" in msg and str(tok.encode("### Answer:", add_special_tokens=False)) in msg
    assert sum("Could not find response key" in str(w.message) for w in caught) == 1
