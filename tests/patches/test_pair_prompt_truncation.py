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


def _kto_ids(tokenizer, prompt, completion) -> tuple:
    """A row's (prompt ids, completion ids) as the release tokenizes them: TRL 0.8-1.2 without special tokens (BOS
    and EOS added after the cut); TRL >= 1.3 (the rewritten KTO) ``tokenizer(text)``, EOS appended to the completion
    text, no BOS added by the trainer."""
    if trl_in(">=1.3"):
        p = tokenizer(prompt)["input_ids"]
        return p, tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"][len(p):]
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return p, tokenizer(prompt + completion, add_special_tokens=False)["input_ids"][len(p):]


def _kto_fed(tokenizer, p, a, keep_end=True) -> list:
    """The sequence fed for one (prompt, completion) pair."""
    return sum(_kto_parts(tokenizer, p, a, keep_end), [])


def _kto_parts(tokenizer, p, a, keep_end=True) -> tuple:
    """The (prompt, completion) parts fed for one pair. TRL 0.8-0.26 (``_process_tokens``): max_length less one for
    a BOS and one for an EOS still to add; when prompt + completion exceed it, the prompt keeps its last (keep_end)
    LIMIT tokens, then the completion its first max_length - LIMIT; then BOS and EOS are added where missing. TRL
    >= 1.3: the same rule on its ids - a leading BOS kept, the completion's EOS kept last."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if not trl_in(">=1.3"):
        budget = MAX_LENGTH - (bool(p) and p[0] != bos) - (bool(a) and a[-1] != eos)
        if len(p) + len(a) > budget:
            p = p[-LIMIT:] if keep_end else p[:LIMIT]
        if len(p) + len(a) > budget:
            a = a[: budget - LIMIT]
        return ([bos] if not p or p[0] != bos else []) + p, a + ([eos] if not a or a[-1] != eos else [])
    head = p[:1] if p and p[0] == bos else []
    if len(p) + len(a) > MAX_LENGTH:
        p = head + (p[len(head):][-LIMIT:] if keep_end else p[len(head):][:LIMIT])
    if len(p) + len(a) > MAX_LENGTH:
        a = a[: MAX_LENGTH - LIMIT - len(head) - 1] + [eos]
    return p, a


def _kto_expected(tokenizer, rows, keep_end=True):
    return sorted(_kto_fed(tokenizer, *_kto_ids(tokenizer, r["prompt"], r["completion"]), keep_end) for r in rows)


def _kto_kl_parts(tokenizer, rows, keep_end=True) -> list:
    """The KL pairs' (prompt, completion) parts: each row's prompt as fed (cut, BOS added) with its batch neighbour's
    completion ids (batches of two: every release's rotation and 0.8's reversal both swap the pair), cut again by the
    rule, as TRL 0.11-0.26 built its KL_ rows from the processed rows."""
    ids = [_kto_ids(tokenizer, r["prompt"], r["completion"]) for r in rows]
    prompts = [_kto_parts(tokenizer, p, a, keep_end)[0] for p, a in ids]
    out = [_kto_parts(tokenizer, prompts[i], ids[i ^ 1][1], keep_end) for i in range(len(ids))]
    if trl_in(">=0.27,<1.3"):  # 0.26 fed a keep_end KL row up to max_length + 1 tokens (its BOS bookkeeping);
        eos = tokenizer.eos_token_id  # the release's own completion cut, after trlshim's, caps it at max_length
        out = [(p, a if len(p) + len(a) <= MAX_LENGTH else a[: MAX_LENGTH - len(p) - 1] + [eos]) for p, a in out]
    return out


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
    expected = _kto_expected(tokenizer, rows, keep_end)
    assert sorted(rec.rows()) == expected
    assert max(len(r) for r in expected) == MAX_LENGTH and sum(len(r) < MAX_LENGTH for r in expected) >= 1
    assert not hasattr(tokenizer, "_trlshim_kto_truncation")  # the user's tokenizer is untouched


def _kl_rows():
    """Batches of two, one long and one short completion each: the row with the short completion keeps its whole
    prompt, its KL pair (with the long completion) has it cut; the other row's prompt is cut either way."""
    prompts = helpers.texts(4, seed=61, n_min=12, n_max=14)
    long_c, short_c = helpers.texts(2, seed=62, n_min=16, n_max=18), helpers.texts(2, seed=63, n_min=2, n_max=3)
    completions = [long_c[0], short_c[0], short_c[1], long_c[1]]
    return [{"prompt": p, "completion": " " + c, "label": i % 2 == 0}
            for i, (p, c) in enumerate(zip(prompts, completions))]


@pytest.mark.parametrize(("keep_end", "precompute"), [(True, False), (False, False), (True, True)])
def test_kto_kl_pairs_cut_again_by_the_rule(tmp_path, tokenizer, keep_end, precompute):
    """The KL term's mismatched pairs: TRL 0.12-0.26 cut each (row's fed prompt, other completion) pair again by the
    rule, so a KL prompt is cut where the other completion is long though its row's was not. The KL forwards (the
    policy's, and the reference's, precomputed or not) are fed those sequences natively (<= 0.26), by trlshim's
    _process_tokens row (0.27-1.2, exactly: the same pipeline) and by KL_prompt_ids + the collator (1.3+: the rule
    on its own sequences), with TRL's default remove_unused_columns."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    if not trl_in(">=0.12"):
        pytest.skip("TRL 0.8-0.11 built the KL pairs otherwise (0.8-0.10: raw prompts across the total batch; 0.11 "
                    "fed other pairs - found by the full matrix, not diagnosed); the meaning emulated is 0.12-0.26's")
    rows = _kl_rows()
    main, kl_parts = _kto_expected(tokenizer, rows, keep_end), _kto_kl_parts(tokenizer, rows, keep_end)
    kl = [p + a for p, a in kl_parts]
    row_prompts = [_kto_parts(tokenizer, *_kto_ids(tokenizer, r["prompt"], r["completion"]), keep_end)[0] for r in rows]
    assert any(len(kp) != len(rp) for (kp, _), rp in zip(kl_parts, row_prompts))  # a KL prompt cut, its row's not
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2)
    fields = dict(max_length=MAX_LENGTH, max_prompt_length=LIMIT)  # loss: every release's default, "kto" (KL term)
    if precompute:
        fields["precompute_ref_log_probs"] = True
    if not keep_end:
        fields["truncation_mode"] = "keep_start"
    model, ref = helpers.make_model(), helpers.make_model(seed=1)
    ref_rows = []

    def reference(module, args, kwargs):  # the reference runs in eval mode (helpers.Recorder skips those)
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        ref_rows.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))

    handle = ref.register_forward_pre_hook(reference, with_kwargs=True)
    rec = helpers.Recorder(model)
    trainer = KTOTrainer(model=model, ref_model=ref, args=KTOConfig(**kw, **fields),
                         train_dataset=Dataset.from_list(rows), tokenizer=tokenizer)
    trainer.train()
    rec.remove()
    handle.remove()
    assert sorted(rec.rows()) == sorted(main + kl)  # one epoch: every row once, every KL pair once
    assert sorted(ref_rows) == sorted(main + kl)


def test_kto_evaluate_dataset_is_cut_too(tmp_path, tokenizer):
    """TRL >= 1.8 prepares a dataset given to ``evaluate()`` after construction: it is cut by the same rule, KL pairs
    included."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    if not trl_in(">=1.8"):
        pytest.skip("evaluate(eval_dataset=...) prepares the dataset from TRL 1.8")
    rows = _kl_rows()
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, per_device_eval_batch_size=2)
    model = helpers.make_model()
    trainer = KTOTrainer(model=model, ref_model=helpers.make_model(), processing_class=tokenizer,
                         args=KTOConfig(**kw, max_length=MAX_LENGTH, max_prompt_length=LIMIT),
                         train_dataset=Dataset.from_list(rows[:2]))
    fed = []

    def record(module, args, kwargs):
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        fed.extend(row[m.bool()].tolist() for row, m in zip(ids, mask))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    trainer.evaluate(eval_dataset=Dataset.from_list(rows))
    handle.remove()
    kl = [p + a for p, a in _kto_kl_parts(tokenizer, rows)]
    assert sorted(fed) == sorted(_kto_expected(tokenizer, rows) + kl)


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
