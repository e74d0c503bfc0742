"""RewardTrainer scripts of every release, importing from ``trl`` directly (patches/reward)."""
from __future__ import annotations

import inspect
import random

import helpers
import pytest

from trlshim import report
from trlshim.versions import trl_in


def _reward_model(seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3, num_labels=1)
    cfg._attn_implementation = "eager"
    return LlamaForSequenceClassification(cfg)


def _pretokenized(n=8, long_every=4):
    """TRL <= 0.23's pre-tokenized columns; every ``long_every``-th example is 40 tokens long."""
    rng = random.Random(5)
    rows = []
    for i in range(n):
        size = 40 if i % long_every == 0 else rng.randint(4, 10)
        chosen = [rng.randint(10, 300) for _ in range(size)]
        rejected = [rng.randint(10, 300) for _ in range(rng.randint(4, 10))]
        rows.append({"input_ids_chosen": chosen, "attention_mask_chosen": [1] * len(chosen),
                     "input_ids_rejected": rejected, "attention_mask_rejected": [1] * len(rejected)})
    return rows


def _config(tmp_path, **kw):
    from trl import RewardConfig

    kw = {"per_device_train_batch_size": 2, "max_steps": 2, "remove_unused_columns": False, **kw}
    return RewardConfig(**helpers.training_kwargs(tmp_path, **kw))


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_old_script_pretokenized_trains_every_example_whole(tmp_path, tokenizer):
    """A TRL 0.8 script: tokenizer=, max_length= on the trainer, pre-tokenized input_ids_chosen columns."""
    from datasets import Dataset
    from trl import RewardTrainer

    rows = _pretokenized()
    model = _reward_model()
    before = _params(model)
    rec = helpers.Recorder(model)
    kw = dict(model=model, args=_config(tmp_path, max_steps=4), tokenizer=tokenizer,
              train_dataset=Dataset.from_list(rows))
    kw["max_length"] = 16  # a trainer kwarg up to 0.13; on 0.7-0.23 it never dropped pre-tokenized examples
    trainer = RewardTrainer(**kw)
    trainer.train()
    rec.remove()
    fed = rec.rows()
    # every chosen and rejected sequence reached the model, the 40-token ones whole (not truncated, not dropped)
    wanted = [r["input_ids_chosen"] for r in rows] + [r["input_ids_rejected"] for r in rows]
    for ids in wanted:
        assert ids in fed, ids
    assert max(len(r) for r in fed) == 40
    after = dict(model.named_parameters())
    assert any(not before[k].equal(after[k].detach()) for k in before)  # the loss reached the parameters
    params = inspect.signature(type(trainer).__init__).parameters
    if "tokenizer" not in params:
        assert any("RewardTrainer(tokenizer=...) -> processing_class=" in m for m in report.applied())
    if trl_in(">=0.14"):
        assert any("RewardTrainer(max_length=...) -> RewardConfig.max_length" in m for m in report.applied())
    if trl_in(">=0.24"):
        assert any("input_ids_chosen/input_ids_rejected ->" in m for m in report.applied())
        assert trainer.args.max_length is None


def test_max_length_as_trainer_kwarg_filters_text_data(tmp_path, tokenizer):
    """Text data (tokenized by TRL >= 0.12): max_length given the 0.12 way (trainer kwarg) is what filters."""
    if trl_in("<0.12"):
        pytest.skip("TRL < 0.12's RewardTrainer takes only pre-tokenized data")
    from datasets import Dataset
    from trl import RewardTrainer

    short, long_ = helpers.texts(8, seed=6, n_min=2, n_max=4), helpers.texts(8, seed=7, n_min=30, n_max=40)
    rows = [{"chosen": a, "rejected": b} for a, b in zip(short, short[1:] + short[:1])]
    rows += [{"chosen": a, "rejected": b} for a, b in zip(long_, short)]
    limit = max(len(tokenizer(t)["input_ids"]) for t in short) + 2
    assert min(len(tokenizer(t)["input_ids"]) for t in long_) > limit
    model = _reward_model()
    rec = helpers.Recorder(model)
    trainer = RewardTrainer(model=model, args=_config(tmp_path, max_steps=4), processing_class=tokenizer,
                            train_dataset=Dataset.from_list(rows), max_length=limit)
    trainer.train()
    rec.remove()
    assert trainer.args.max_length == limit or "max_length" in inspect.signature(RewardTrainer.__init__).parameters
    fed = rec.rows()
    assert fed and max(len(r) for r in fed) <= limit  # the long examples were dropped, as the release does


def test_plain_training_arguments_and_bf16_default(tmp_path, tokenizer):
    from datasets import Dataset
    from transformers import TrainingArguments
    from trl import RewardConfig, RewardTrainer

    cfg = RewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=False) if "use_cpu" in \
        RewardConfig.__dataclass_fields__ else None
    if cfg is not None:
        assert cfg.bf16 in (False, None) or _bf16_ok()  # TRL >= 0.19 would default True: CPU cannot run it
    args = TrainingArguments(**helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1,
                                                       remove_unused_columns=False))
    trainer = RewardTrainer(model=_reward_model(), args=args, processing_class=tokenizer,
                            train_dataset=Dataset.from_list(_pretokenized(4, long_every=99)))
    assert isinstance(trainer.args, RewardConfig)
    trainer.train()


def _bf16_ok():
    from transformers.utils import is_torch_bf16_gpu_available

    return is_torch_bf16_gpu_available()


def test_unknown_and_removed_arguments_are_errors(tmp_path, tokenizer):
    from trl import RewardTrainer

    with pytest.raises(TypeError, match=r"max_lenght.*TRL .*did you mean 'max_length'"):
        RewardTrainer(model=_reward_model(), args=_config(tmp_path), processing_class=tokenizer, max_lenght=8)
    if trl_in(">=0.24"):
        with pytest.raises(TypeError, match=r"model_init' was removed in TRL 0.24"):
            RewardTrainer(model=None, model_init=_reward_model, args=_config(tmp_path), processing_class=tokenizer)


def test_stable_names_work_unpatched(tmp_path, tokenizer):
    from datasets import Dataset

    import trlshim

    trlshim.unpatch()
    try:
        kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1, remove_unused_columns=False)
        cfg = trlshim.RewardConfig(**kw)
        trainer = trlshim.RewardTrainer(model=_reward_model(), args=cfg, tokenizer=tokenizer,
                                        train_dataset=Dataset.from_list(_pretokenized(4, long_every=99)))
        assert isinstance(trainer.args, cfg.__class__.__mro__[1])
        trainer.train()
    finally:
        trlshim.patch()
