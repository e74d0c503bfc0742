"""DPOTrainer scripts of every release style, checked by what reached the loss and the model: the beta and
loss type the loss reads, the prompt/completion lengths fed after truncation, that parameters changed."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import helpers
import pytest
import torch
from packaging.version import Version

import trlshim
from trlshim.versions import trl_version

TRL = trl_version()
NEW_TRUNCATION = TRL >= Version("0.29")  # max_prompt_length / max_completion_length removed: trlshim applies them
HAS_COMPLETION_CAP = TRL >= Version("0.12")  # the release (or trlshim) can cap completions on their own


def _tokenizer():
    tok = helpers.make_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _data(n=8):
    from datasets import Dataset

    rows = []
    for i in range(n):  # prompts of 12+ tokens, completions of 10+: every cap below really cuts
        rows.append({"prompt": helpers.texts(1, seed=i, n_min=12, n_max=14)[0],  # completions start with a space:
                     "chosen": " " + helpers.texts(1, seed=100 + i, n_min=10, n_max=12)[0],  # one tokenization
                     "rejected": " " + helpers.texts(1, seed=200 + i, n_min=10, n_max=12)[0]})  # on every release
    return Dataset.from_list(rows)


def _ta_kwargs(tmp_path, **kw):
    return helpers.training_kwargs(tmp_path, remove_unused_columns=False, per_device_train_batch_size=2, **kw)


class LossSpy:
    """Records, at every loss computation, the beta and loss type(s) the trainer's loss reads."""

    def __init__(self, trainer):
        self.seen = []
        original = trainer.compute_loss

        def compute_loss(*args, **kwargs):
            lt = getattr(trainer, "loss_type", None) or getattr(trainer, "loss_types", None) or trainer.args.loss_type
            self.seen.append((trainer.beta, [lt] if isinstance(lt, str) else list(lt)))
            return original(*args, **kwargs)

        trainer.compute_loss = compute_loss


def _train(trainer, model):
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    spy = LossSpy(trainer)
    trainer.train()
    after = dict(model.named_parameters())
    changed = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    return spy, changed


def _prompt_tails(tok, data, k):
    return {tuple(tok(r["prompt"], add_special_tokens=False)["input_ids"][-k:]) for r in data}


@pytest.mark.parametrize("positional_beta", [True, False])
def test_trl_08_script(tmp_path, positional_beta):
    """DPOTrainer(model, ref_model, beta, args=TrainingArguments, tokenizer=, max_length=, max_prompt_length=)."""
    from transformers import TrainingArguments
    from trl import DPOTrainer

    tok, data = _tokenizer(), _data()
    model = helpers.make_model()
    ref = copy.deepcopy(model)
    rec = helpers.Recorder(model)
    args = TrainingArguments(**_ta_kwargs(tmp_path))
    kw = dict(args=args, train_dataset=data, tokenizer=tok, max_length=8, max_prompt_length=4)
    trainer = DPOTrainer(model, ref, 0.3, **kw) if positional_beta else DPOTrainer(model, ref, beta=0.3, **kw)
    spy, changed = _train(trainer, model)
    rec.remove()
    assert spy.seen and all(beta == 0.3 and lt == ["sigmoid"] for beta, lt in spy.seen)
    assert changed
    rows = rec.rows()
    # TRL 0.8 rule: prompt + completion > max_length -> prompt keeps its last 4 tokens, completions max_length - 4
    assert rows and all(len(r) == 8 for r in rows)
    if TRL >= Version("0.13"):  # exact old rule (the prompt's last tokens first); 0.12.2: the release's caps
        tails = _prompt_tails(tok, data, 4)
        assert all(tuple(r[:4]) in tails for r in rows), (rows, tails)


def _config_2x(tmp_path, cls, **kw):
    return cls(**_ta_kwargs(tmp_path), beta=0.2, loss_type="ipo", max_prompt_length=4, max_completion_length=3,
               max_length=64, generate_during_eval=False, force_use_ref_model=False, label_pad_token_id=-100,
               **kw)


@pytest.mark.parametrize("style", ["trl", "stable", "replace", "deepcopy", "pickle"])
def test_trl_2x_config_script(tmp_path, style):
    """A TRL 0.2x DPOConfig using fields TRL 0.29 removed: the prompt keeps its last 4 tokens, the completions
    their first 3, on releases before and after the removal."""
    import trl

    cls = trl.DPOConfig if style == "trl" else trlshim.DPOConfig
    import dataclasses as dc

    native_cap = "max_completion_length" in {f.name for f in dc.fields(cls)}
    if not HAS_COMPLETION_CAP and not native_cap:  # 0.9-0.10: no such field for decoder-only models
        with pytest.raises(TypeError, match=r"max_completion_length.*TRL"):
            _config_2x(tmp_path, cls)
        return
    cfg = _config_2x(tmp_path, cls)
    if style == "replace":  # the copies TRL, accelerate and users make keep the emulated fields (issue 9)
        cfg = dataclasses.replace(cfg)
    elif style == "deepcopy":
        cfg = copy.deepcopy(cfg)
    elif style == "pickle":
        cfg = pickle.loads(pickle.dumps(cfg))
    from trl.trainer.dpo_config import DPOConfig as Installed

    assert isinstance(cfg, Installed)
    tok, data = _tokenizer(), _data()
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    if style == "stable":  # trlshim.DPOTrainer, with TRL >= 0.13's positions (model, ref_model, args)
        trainer = trlshim.DPOTrainer(model, copy.deepcopy(model), cfg, train_dataset=data, processing_class=tok)
        assert isinstance(trainer, trl.DPOTrainer)
    else:
        trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=data,
                                 processing_class=tok)
    spy, changed = _train(trainer, model)
    rec.remove()
    assert spy.seen and all(beta == 0.2 and lt == ["ipo"] for beta, lt in spy.seen)
    assert changed
    rows = rec.rows()
    if not HAS_COMPLETION_CAP:  # TRL 0.11: its own fields with its own rule - cut only what exceeds max_length
        assert rows and all(len(r) > 7 for r in rows)  # (a known difference from 0.12+: see the README)
        return
    assert rows and all(len(r) == 7 for r in rows)
    tails = _prompt_tails(tok, data, 4)
    assert all(tuple(r[:4]) in tails for r in rows)


def test_trl_1x_config_script(tmp_path):
    """A TRL 1.x script: DPOConfig(loss_type=[...]), processing_class=, keyword arguments only."""
    import trl

    cfg = trl.DPOConfig(**_ta_kwargs(tmp_path), beta=0.25, loss_type=["hinge"], max_length=64)
    tok, data = _tokenizer(), _data()
    model = helpers.make_model()
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=data,
                             processing_class=tok)
    spy, changed = _train(trainer, model)
    assert spy.seen and all(beta == 0.25 and lt == ["hinge"] for beta, lt in spy.seen)
    assert changed


def test_reference_free_precomputed(tmp_path):
    """ref_model=None with precompute_ref_log_probs: the reference log-probs come with the data, the policy
    trains with the given beta."""
    import trl

    tok, data = _tokenizer(), _data()
    model = helpers.make_model()
    cfg = trlshim.DPOConfig(**_ta_kwargs(tmp_path), beta=0.5, precompute_ref_log_probs=True)
    trainer = trl.DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=data, tokenizer=tok)
    assert trainer.ref_model is None or trainer.ref_model is not model  # 0.29-1.15: a copy of the initial policy
    spy, changed = _train(trainer, model)
    assert spy.seen and all(beta == 0.5 for beta, _ in spy.seen)
    assert changed
    assert any("chosen_logps" in c for c in trainer.train_dataset.column_names)


def test_peft_lora(tmp_path):
    """A LoRA DPO run (reference = the adapter disabled): only the adapter weights change."""
    peft = pytest.importorskip("peft")
    import trl
    from transformers import TrainingArguments

    tok, data = _tokenizer(), _data()
    model = helpers.make_model()
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = trl.DPOTrainer(model=model, ref_model=None, args=TrainingArguments(**_ta_kwargs(tmp_path)),
                             beta=0.1, train_dataset=data, tokenizer=tok, peft_config=lora)
    trained = trainer.model
    spy, changed = _train(trainer, trained)
    assert spy.seen and all(beta == 0.1 for beta, _ in spy.seen)
    assert changed and all("lora" in n for n in changed)


def test_rpo_alpha(tmp_path):
    """rpo_alpha (0.9.3-0.28) means DPO + alpha * NLL: TRL >= 0.29 spells it as two weighted losses."""
    import trl

    if TRL < Version("0.9.3"):
        with pytest.raises(TypeError, match="rpo_alpha"):
            trl.DPOConfig(**_ta_kwargs(tmp_path), rpo_alpha=0.5)
        return
    cfg = trl.DPOConfig(**_ta_kwargs(tmp_path), rpo_alpha=0.5)
    if NEW_TRUNCATION:
        assert cfg.loss_type == ["sigmoid", "sft"] and cfg.loss_weights == [1.0, 0.5]
    else:
        assert cfg.rpo_alpha == 0.5


def test_removed_fields_that_change_training_are_errors(tmp_path):
    import trl

    if not NEW_TRUNCATION:
        pytest.skip("the release still has generate_during_eval and reference_free")
    for field in ("generate_during_eval", "reference_free"):
        with pytest.raises(TypeError, match=rf"{field}=True has no place in TRL {TRL}"):
            trl.DPOConfig(**_ta_kwargs(tmp_path), **{field: True})


def test_loss_type_list_on_string_releases(tmp_path):
    import trl

    if TRL >= Version("0.20"):
        assert trl.DPOConfig(**_ta_kwargs(tmp_path), loss_type=["sigmoid", "sft"]).loss_type == ["sigmoid", "sft"]
        return
    with pytest.raises(TypeError, match="several losses"):
        trl.DPOConfig(**_ta_kwargs(tmp_path), loss_type=["sigmoid", "hinge"])


def test_positions_are_bound_by_meaning(tmp_path):
    from trl import DPOTrainer

    model = helpers.make_model()
    with pytest.raises(TypeError, match="neither beta"):
        DPOTrainer(model, None, "0.1")
    with pytest.raises(TypeError, match="at most 3 positional"):
        DPOTrainer(model, None, 0.1, 0.0)


def test_trainer_kwargs_go_to_a_copy_of_the_config(tmp_path):
    """DPO options given to the trainer win over the config (as in 0.9-0.12); the caller's config is untouched."""
    import trl

    cfg = trl.DPOConfig(**_ta_kwargs(tmp_path), beta=0.1)
    model = helpers.make_model()
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=_data(),
                             tokenizer=_tokenizer(), beta=0.7, loss_type="hinge")
    assert trainer.beta == 0.7 and cfg.beta == 0.1
    lt = getattr(trainer, "loss_type", None) or trainer.args.loss_type
    assert (lt if isinstance(lt, str) else lt[0]) == "hinge"


def test_legacy_config_fields_match_the_installed_trainer():
    """trlshim's DPOConfig for TRL < 0.9 is a table (no trainer import inside trl's import hook): it must equal
    the installed DPOTrainer's DPO keyword defaults."""
    import inspect

    from trlshim.patches.dpo.options import DPO_OPTIONS, LEGACY_DEFAULTS

    if TRL >= Version("0.9"):
        pytest.skip("TRL >= 0.9 has its own DPOConfig")
    from trl.trainer.dpo_trainer import DPOTrainer

    sig = inspect.signature(DPOTrainer.__init__).parameters
    assert dict(LEGACY_DEFAULTS) == {n: p.default for n, p in sig.items() if n in DPO_OPTIONS}


def test_a_dataset_given_to_evaluate_is_cut_too(tmp_path):
    """evaluate(eval_dataset=...) prepares that dataset (DPOTrainer.evaluate, TRL 1.6+): the old caps (prompt's last
    4 tokens, completions' first 3) reach it as they reach the training data."""
    import trl

    if "evaluate" not in vars(trl.DPOTrainer):
        pytest.skip("this release's evaluate() does not prepare a dataset given to it (its collator refuses raw rows)")

    cfg = _config_2x(tmp_path, trlshim.DPOConfig)
    tok = _tokenizer()
    model = helpers.make_model()
    trainer = trl.DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=cfg, train_dataset=_data(4),
                             processing_class=tok)
    rows = []

    def seen(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if not module.training and ids is not None:
            rows.extend(r[m.bool()].tolist() if mask is not None else r.tolist() for r, m in
                        zip(ids, mask if mask is not None else ids))

    handle = model.register_forward_pre_hook(seen, with_kwargs=True)
    later = _data(12).select(range(8, 12))  # not the training rows: prepared only by evaluate()
    trainer.evaluate(eval_dataset=later)
    handle.remove()
    assert rows and all(len(r) == 7 for r in rows), rows
    tails = _prompt_tails(tok, later, 4)
    assert all(tuple(r[:4]) in tails for r in rows)
