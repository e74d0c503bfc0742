"""KTOTrainer scripts of every release, importing from ``trl`` directly (patches/kto)."""
from __future__ import annotations

import helpers
import pytest

from trlshim import report
from trlshim.versions import trl_in


def _rows(n=8):
    prompts = helpers.texts(n, seed=21, n_min=3, n_max=5)
    completions = helpers.texts(n, seed=22, n_min=3, n_max=8)
    return [{"prompt": p + " ?", "completion": " " + c, "label": i % 2 == 0}
            for i, (p, c) in enumerate(zip(prompts, completions))]


def _config(tmp_path, **fields):
    from trl import KTOConfig

    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=4, max_steps=2, remove_unused_columns=False)
    return KTOConfig(**{**kw, **fields})


def test_old_script_trains_with_its_beta(tmp_path, tokenizer):
    """A TRL 0.8 KTO script: ``from trl import KTOConfig, KTOTrainer``, ``tokenizer=``, beta, max_length."""
    from datasets import Dataset
    from trl import KTOTrainer

    model, ref = helpers.make_model(), helpers.make_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = helpers.Recorder(model)
    cfg = _config(tmp_path, beta=0.3, max_length=32, desirable_weight=1.0, undesirable_weight=1.0)
    trainer = KTOTrainer(model=model, ref_model=ref, args=cfg, train_dataset=Dataset.from_list(_rows()),
                         tokenizer=tokenizer)
    trainer.train()
    rec.remove()
    assert trainer.beta == 0.3  # KTO's loss scales the log-ratio by it
    fed = rec.rows()
    assert fed and max(len(r) for r in fed) <= 32
    first = tokenizer(_rows()[0]["prompt"], add_special_tokens=False)["input_ids"][:3]
    assert any(r[i:i + 3] == first for r in fed for i in range(len(r)))
    after = dict(model.named_parameters())
    assert any(not before[k].equal(after[k].detach()) for k in before)
    if trl_in(">=0.16"):
        assert any("KTOTrainer(tokenizer=...) -> processing_class=" in m for m in report.applied())


def test_removed_fields_say_why(tmp_path):
    from trl import KTOConfig

    if trl_in("<0.27"):
        assert KTOConfig(output_dir=str(tmp_path), max_prompt_length=8).max_prompt_length == 8
        return
    from trlshim.patches.common.preference import own_options  # emulated (test_pair_prompt_truncation.py)

    assert own_options(KTOConfig(output_dir=str(tmp_path), max_prompt_length=8))["max_prompt_length"] == 8
    cfg = KTOConfig(output_dir=str(tmp_path), label_pad_token_id=-100, padding_value=None)
    assert any("dropped KTOConfig(label_pad_token_id=-100)" in m for m in report.applied())
    from transformers.utils import is_torch_bf16_gpu_available

    assert cfg.bf16 in (False, None) or is_torch_bf16_gpu_available()


def test_config_fields_on_the_trainer_and_unknown_names(tmp_path, tokenizer):
    from datasets import Dataset
    from trl import KTOTrainer

    cfg = _config(tmp_path, max_length=32)
    trainer = KTOTrainer(model=helpers.make_model(), ref_model=helpers.make_model(), args=cfg,
                         train_dataset=Dataset.from_list(_rows(4)), processing_class=tokenizer, beta=0.4)
    assert trainer.beta == 0.4 and cfg.beta == 0.1
    with pytest.raises(TypeError, match=r"'bta'.*TRL .*did you mean 'beta'"):
        KTOTrainer(model=helpers.make_model(), args=cfg, processing_class=tokenizer, bta=0.5)


def test_stable_names_work_unpatched(tmp_path, tokenizer):
    from datasets import Dataset

    import trlshim

    trlshim.unpatch()
    try:
        kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=4, max_steps=1, remove_unused_columns=False)
        trainer = trlshim.KTOTrainer(model=helpers.make_model(), ref_model=helpers.make_model(),
                                     args=trlshim.KTOConfig(**kw, max_length=32), tokenizer=tokenizer,
                                     train_dataset=Dataset.from_list(_rows(4)), beta=0.45)
        assert trainer.beta == 0.45
    finally:
        trlshim.patch()


def test_a_skipped_helper_row_refuses_the_option_it_applies(tmp_path, tokenizer, monkeypatch):
    """On 0.27-1.2 the prompt cut is done by the ``kto.process_tokens`` row. If that row skipped itself (its target
    reshaped on an unknown release), max_prompt_length is refused by name - not a trainer that ignores it."""
    from trlshim import hooks

    if not trl_in(">=0.27,<1.3"):
        pytest.skip("the kto.process_tokens row applies to 0.27-1.2")
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    monkeypatch.setitem(hooks._skipped, "kto.process_tokens", "reshaped (test)")
    rows = [{"prompt": "a b c", "completion": " d e", "label": True}, {"prompt": "a b", "completion": " c", "label": False}]
    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1, remove_unused_columns=False)
    with pytest.raises(TypeError, match=r"max_prompt_length.*'kto.process_tokens' skipped itself"):
        KTOTrainer(model=helpers.make_model(), ref_model=helpers.make_model(),
                   args=KTOConfig(**kw, max_length=24, max_prompt_length=8), train_dataset=Dataset.from_list(rows),
                   tokenizer=tokenizer)
    KTOTrainer(model=helpers.make_model(), ref_model=helpers.make_model(), args=KTOConfig(**kw, max_length=24),
               train_dataset=Dataset.from_list(rows), tokenizer=tokenizer)  # without the option: builds
