"""tokenizer= and processing_class= work for TRL's other trainers (DPO as the representative)."""
from __future__ import annotations

import inspect

import helpers
import pytest

from trlshim import report


def _dpo_trainer(tmp_path, spelling, tokenizer, model):
    import trl
    from datasets import Dataset

    rows = [{"prompt": p, "chosen": " " + c, "rejected": " " + r}
            for p, c, r in zip(helpers.texts(8, seed=2, n_max=6), helpers.texts(8, seed=3, n_max=6),
                               helpers.texts(8, seed=4, n_max=6))]
    from transformers import TrainingArguments

    cfg_kw = helpers.training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=2,
                                     remove_unused_columns=False)
    config_cls = getattr(trl, "DPOConfig", TrainingArguments)  # TRL 0.8 takes DPO options as kwargs
    fields = config_cls.__dataclass_fields__
    params = inspect.signature(trl.DPOTrainer.__init__).parameters
    trainer_kw = {}
    for name, value in (("max_length", 32), ("max_prompt_length", 16), ("bf16", False),
                        ("gradient_checkpointing", False), ("precompute_ref_log_probs", False)):
        if name in fields:
            cfg_kw[name] = value
        elif name in params:
            trainer_kw[name] = value
    ref = helpers.make_model()
    kwargs = dict(model=model, ref_model=ref, args=config_cls(**cfg_kw), train_dataset=Dataset.from_list(rows),
                  **trainer_kw)
    kwargs[spelling] = tokenizer
    return trl.DPOTrainer(**kwargs)


def test_dpo_accepts_the_other_spelling(tmp_path, tokenizer):
    import trl

    params = inspect.signature(trl.DPOTrainer.__init__).parameters
    native = "processing_class" if "processing_class" in params else "tokenizer"
    other = "tokenizer" if native == "processing_class" else "processing_class"
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    trainer = _dpo_trainer(tmp_path, other, tokenizer, model)
    trainer.train()
    assert any(f"DPOTrainer({other}=...) -> {native}=" in m for m in report.applied())
    # the model was fed our prompts tokenized by our tokenizer
    first_prompt = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in helpers.texts(8, seed=2, n_max=6)]
    fed = [r for r in rec.rows()]
    assert fed and any(any(row[i:i + len(p)] == p for i in range(len(row))) for row in fed for p in first_prompt)


def test_dpo_both_spellings_conflict(tmp_path, tokenizer):
    import trl

    with pytest.raises((TypeError, ValueError), match="tokenizer|processing_class"):
        trl.DPOTrainer(model=helpers.make_model(), args=None, tokenizer=tokenizer,
                       processing_class=helpers.make_tokenizer())
