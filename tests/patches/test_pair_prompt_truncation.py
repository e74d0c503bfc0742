"""ORPO/CPO ``max_prompt_length`` (removed in TRL 0.28): the model is fed what TRL <= 0.27 fed it
(patches/common/pair_truncation.py). The expected rows are computed here from the tokenizer and the old rule, so
the same assertion holds on releases that apply the option natively (<= 0.27) and where trlshim emulates it."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import helpers
import pytest

from trlshim import report
from trlshim.versions import trl_in

MAX_LENGTH, LIMIT = 24, 8


def _rows():
    long_p = helpers.texts(2, seed=41, n_min=12, n_max=16)
    short_p = helpers.texts(2, seed=42, n_min=8, n_max=10)
    long_r = helpers.texts(4, seed=43, n_min=14, n_max=20)
    short_r = helpers.texts(4, seed=44, n_min=3, n_max=5)
    rows = [{"prompt": p, "chosen": " " + long_r[2 * i], "rejected": " " + long_r[2 * i + 1]}
            for i, p in enumerate(long_p)]
    rows += [{"prompt": p, "chosen": " " + short_r[2 * i], "rejected": " " + short_r[2 * i + 1]}
             for i, p in enumerate(short_p)]
    return rows


def _expected(tokenizer, rows, keep_end=True):
    """Every row the model should see, by TRL 0.8-0.27's rule: prompt = BOS + prompt tokens, responses end with
    EOS; when prompt + the longer response exceed max_length the prompt keeps its last (keep_end) LIMIT tokens,
    then, if still too long, the responses their first max_length - LIMIT tokens."""
    out = []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        responses = []
        for key in ("chosen", "rejected"):
            full = tokenizer(row["prompt"] + row[key], add_special_tokens=False)["input_ids"]
            assert full[: len(prompt)] == prompt  # the tiny tokenizer does not merge across the boundary
            responses.append(full[len(prompt):] + [tokenizer.eos_token_id])
        p = [tokenizer.bos_token_id] + prompt
        longer = max(len(r) for r in responses)
        if len(p) + longer > MAX_LENGTH:
            p = p[-LIMIT:] if keep_end else p[:LIMIT]
        if len(p) + longer > MAX_LENGTH:
            responses = [r[: MAX_LENGTH - LIMIT] for r in responses]
        out += [p + r for r in responses]
    return sorted(out)


def _classes(name):
    import trl

    return getattr(trl, f"{name}Trainer"), getattr(trl, f"{name}Config")


@pytest.mark.parametrize("name", ["ORPO", "CPO"])
@pytest.mark.parametrize("keep_end", [True, False])
def test_fed_prompt_is_cut_as_before_028(tmp_path, tokenizer, name, keep_end):
    from datasets import Dataset

    trainer_cls, config_cls = _classes(name)
    rows = _rows()
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False)
    fields = dict(max_length=MAX_LENGTH, max_prompt_length=LIMIT)
    if not keep_end:
        fields["truncation_mode"] = "keep_start"
    cfg = config_cls(**kw, **fields)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    trainer = trainer_cls(model=model, args=cfg, train_dataset=Dataset.from_list(rows), tokenizer=tokenizer)
    trainer.train()
    rec.remove()
    fed = sorted(rec.rows())
    expected = _expected(tokenizer, rows, keep_end)
    assert fed == expected
    assert (sum(r[0] != tokenizer.bos_token_id for r in fed) == 4) == keep_end  # two long prompts were cut
    assert max(len(r) for r in fed) == MAX_LENGTH  # and their responses
    if trl_in(">=0.28"):
        assert any("max_prompt_length" in m and "as TRL <= 0.27 did" in m for m in report.applied())


@pytest.mark.parametrize("name", ["ORPO", "CPO"])
def test_trainer_kwarg_and_config_copies_keep_it(tmp_path, tokenizer, name):
    """Given to the trainer (a TRL 0.8 habit) or carried through copies of the config, the option still applies."""
    from datasets import Dataset

    trainer_cls, config_cls = _classes(name)
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1, remove_unused_columns=False)
    cfg = config_cls(**kw, max_length=MAX_LENGTH, max_prompt_length=LIMIT)
    for copied in (dataclasses.replace(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert _limit(copied) == LIMIT
    rows = _rows()
    trainer = trainer_cls(model=helpers.make_model(), args=config_cls(**kw, max_length=MAX_LENGTH),
                          train_dataset=Dataset.from_list(rows), tokenizer=tokenizer, max_prompt_length=LIMIT)
    tokenized = trainer.train_dataset
    got = sorted(list(r) for r in list(tokenized["chosen_input_ids"]) + list(tokenized["rejected_input_ids"]))
    assert got == _expected(tokenizer, rows)


def _limit(cfg):
    from trlshim.patches.common.preference import own_options

    return getattr(cfg, "max_prompt_length", None) or own_options(cfg).get("max_prompt_length")


def test_written_for_restores_the_old_prompt_limit(tmp_path, monkeypatch):
    """written_for=0.20 on a release without the field: ORPOConfig's old default 512 is emulated, not dropped."""
    import trlshim

    _, config_cls = _classes("ORPO")
    monkeypatch.setenv("TRLSHIM_WRITTEN_FOR", "0.20")
    cfg = config_cls(output_dir=str(tmp_path), report_to="none")
    assert _limit(cfg) == 512
    assert trlshim  # patched by the plugin


def _kto_expected(tokenizer, rows, keep_end=True):
    """TRL 0.8-0.26 KTO: max_length less one for BOS and one for EOS still to add; when prompt + completion exceed
    it, the prompt keeps its last (keep_end) LIMIT tokens, then the completion its first max_length - LIMIT."""
    out = []
    for row in rows:
        p = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        a = tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"][len(p):]
        budget = MAX_LENGTH - 2
        if len(p) + len(a) > budget:
            p = p[-LIMIT:] if keep_end else p[:LIMIT]
        if len(p) + len(a) > budget:
            a = a[: budget - LIMIT]
        out.append([tokenizer.bos_token_id] + p + a + [tokenizer.eos_token_id])
    return sorted(out)


def _kto_expected_18(tokenizer, rows, keep_end=True):
    """TRL >= 1.3 (the rewritten KTO) tokenizes itself (``tokenizer(text)``, EOS appended to the completion text, no BOS added by the
    trainer): the same rule on its ids - a leading BOS kept, the completion's EOS kept last."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = []
    for row in rows:
        p = tokenizer(row["prompt"])["input_ids"]
        a = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"][len(p):]
        head = p[:1] if p and p[0] == bos else []
        if len(p) + len(a) > MAX_LENGTH:
            p = head + (p[len(head):][-LIMIT:] if keep_end else p[len(head):][:LIMIT])
        if len(p) + len(a) > MAX_LENGTH:
            a = a[: MAX_LENGTH - LIMIT - len(head) - 1] + [eos]
        out.append(p + a)
    return sorted(out)


@pytest.mark.parametrize("keep_end", [True, False])
def test_kto_fed_prompt_is_cut_as_before_027(tmp_path, tokenizer, keep_end):
    """KTO (removed in 0.27): the same rows fed on 0.26 (natively) and 0.27-1.2 (emulated); on 1.3+ (emulated) the
    same rule on that release's own tokenization."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    if not trl_in(">=0.11"):
        pytest.skip("apo_zero_unpaired (no KL rows) arrived in 0.11")
    prompts = helpers.texts(4, seed=51, n_min=10, n_max=16)
    completions = helpers.texts(4, seed=52, n_min=3, n_max=20)
    rows = [{"prompt": p, "completion": " " + c, "label": i % 2 == 0}
            for i, (p, c) in enumerate(zip(prompts, completions))]
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False)
    fields = dict(max_length=MAX_LENGTH, max_prompt_length=LIMIT, loss_type="apo_zero_unpaired")
    if not keep_end:
        fields["truncation_mode"] = "keep_start"
    model = helpers.make_model()
    trainer = KTOTrainer(model=model, ref_model=helpers.make_model(), args=KTOConfig(**kw, **fields),
                         train_dataset=Dataset.from_list(rows), tokenizer=tokenizer)
    rec = helpers.Recorder(model)
    trainer.train()
    rec.remove()
    expected = (_kto_expected_18 if trl_in(">=1.3") else _kto_expected)(tokenizer, rows, keep_end)
    assert sorted(rec.rows()) == expected
    assert max(len(r) for r in expected) == MAX_LENGTH and sum(len(r) < MAX_LENGTH for r in expected) >= 1
    assert not hasattr(tokenizer, "_trlshim_kto_truncation")  # the user's tokenizer is untouched


def test_written_for_reason_is_honest_where_not_emulated(tmp_path, monkeypatch):
    """A removed field trlshim does not emulate (KTO's ref_model_init_kwargs on >= 0.28) is reported with why."""
    if not trl_in(">=0.28"):
        pytest.skip("the field exists here")
    from trl import KTOConfig

    from trlshim.patches.common import preference
    from trlshim.patches.kto import REMOVED

    monkeypatch.setenv("TRLSHIM_WRITTEN_FOR", "0.20")
    removed = REMOVED + (preference.Removed("max_prompt_length", "0.27", "truncate prompts yourself"),)
    preference._written_for(KTOConfig, {}, tuple(r for r in removed if r.field != "max_prompt_length" or not r.emulated))
    assert any("KTOConfig.max_prompt_length default 512 not restored" in m and "truncate prompts yourself" in m
               for m in report.applied())
