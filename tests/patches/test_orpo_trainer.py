"""ORPOTrainer scripts of every release, importing from ``trl`` directly (patches/orpo, common/moved_trainers)."""
from __future__ import annotations

import helpers
import pytest

from trlshim import report
from trlshim.versions import trl_in


def _rows(n=8):
    prompts = helpers.texts(n, seed=11, n_min=3, n_max=5)
    chosen = helpers.texts(n, seed=12, n_min=14, n_max=20)
    rejected = helpers.texts(n, seed=13, n_min=14, n_max=20)
    return [{"prompt": p + " ?", "chosen": " " + c, "rejected": " " + r} for p, c, r in zip(prompts, chosen, rejected)]


def _config(tmp_path, **fields):
    from trl import ORPOConfig

    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False)
    return ORPOConfig(**{**kw, **fields})


def test_old_script_trains_with_its_beta_and_max_length(tmp_path, tokenizer):
    """A TRL 0.8 ORPO script: ``from trl import ORPOConfig, ORPOTrainer``, ``tokenizer=``, beta/max_length."""
    from datasets import Dataset
    from trl import ORPOTrainer

    fields = dict(beta=0.25, max_length=24)
    if trl_in("<0.28"):
        fields["max_prompt_length"] = 8
    model = helpers.make_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = helpers.Recorder(model)
    trainer = ORPOTrainer(model=model, args=_config(tmp_path, **fields), train_dataset=Dataset.from_list(_rows()),
                          tokenizer=tokenizer)
    trainer.train()
    rec.remove()
    assert trainer.beta == 0.25  # what ORPO's loss multiplies the odds-ratio term by
    assert trainer.max_length == 24
    fed = rec.rows()
    assert fed
    if trl_in("<0.28"):  # prompt then responses truncated so each row fits max_length
        assert max(len(r) for r in fed) <= 24
    # the prompts the model saw are ours, tokenized by our tokenizer
    first = tokenizer(_rows()[0]["prompt"], add_special_tokens=False)["input_ids"][:3]
    assert any(r[i:i + 3] == first for r in fed for i in range(len(r)))
    after = dict(model.named_parameters())
    assert any(not before[k].equal(after[k].detach()) for k in before)
    if trl_in(">=0.16"):
        assert any("ORPOTrainer(tokenizer=...) -> processing_class=" in m for m in report.applied())
    if trl_in(">=0.29"):
        from trl.experimental.orpo import ORPOTrainer as Home

        assert ORPOTrainer is Home


def test_old_import_paths_and_bf16_default(tmp_path):
    import trl
    from trl.trainer.orpo_config import ORPOConfig
    from trl.trainer.orpo_trainer import ORPOTrainer

    assert trl.ORPOTrainer is ORPOTrainer and trl.ORPOConfig is ORPOConfig
    cfg = ORPOConfig(output_dir=str(tmp_path), report_to="none")
    from transformers.utils import is_torch_bf16_gpu_available

    assert cfg.bf16 in (False, None) or is_torch_bf16_gpu_available()


def test_removed_fields_say_why(tmp_path):
    from trl import ORPOConfig

    if trl_in("<0.28"):
        cfg = ORPOConfig(output_dir=str(tmp_path), max_prompt_length=8, label_pad_token_id=-100)
        assert cfg.max_prompt_length == 8
        return
    from trlshim.patches.common.preference import own_options

    kept = ORPOConfig(output_dir=str(tmp_path), max_prompt_length=8)  # emulated (test_pair_prompt_truncation.py)
    assert own_options(kept)["max_prompt_length"] == 8
    cfg = ORPOConfig(output_dir=str(tmp_path), label_pad_token_id=-100)  # what the release does anyway
    assert any("dropped ORPOConfig(label_pad_token_id=-100)" in m for m in report.applied())
    with pytest.raises(TypeError, match="label_pad_token_id"):
        ORPOConfig(output_dir=str(tmp_path), label_pad_token_id=0)
    assert cfg.beta == 0.1


def test_config_fields_given_to_the_trainer_move_to_a_copy(tmp_path, tokenizer):
    from datasets import Dataset
    from trl import ORPOTrainer

    cfg = _config(tmp_path, max_length=24)
    trainer = ORPOTrainer(model=helpers.make_model(), args=cfg, train_dataset=Dataset.from_list(_rows(4)),
                          processing_class=tokenizer, beta=0.5)
    assert trainer.beta == 0.5 and cfg.beta == 0.1  # the user's config object is not mutated
    with pytest.raises(TypeError, match=r"'bta'.*TRL .*did you mean 'beta'"):
        ORPOTrainer(model=helpers.make_model(), args=cfg, processing_class=tokenizer, bta=0.5)


def test_stable_names_work_unpatched(tmp_path, tokenizer):
    """trlshim.ORPOTrainer / ORPOConfig run the same translation whether or not trlshim.patch() ran."""
    from datasets import Dataset

    import trlshim

    trlshim.unpatch()
    try:
        kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1, remove_unused_columns=False)
        bare = trlshim.ORPOConfig(output_dir=str(tmp_path), report_to="none")  # TRL >= 0.19: bf16 on by default
        assert bare.bf16 in (False, None) or _bf16_gpu()
        cfg = trlshim.ORPOConfig(**kw, beta=0.3, max_length=24)
        trainer = trlshim.ORPOTrainer(model=helpers.make_model(), args=cfg, tokenizer=tokenizer,
                                      train_dataset=Dataset.from_list(_rows(4)))
        assert trainer.beta == 0.3
        assert isinstance(trainer, trlshim.ORPOTrainer.__mro__[1])
    finally:
        trlshim.patch()


def _bf16_gpu():
    from transformers.utils import is_torch_bf16_gpu_available

    return is_torch_bf16_gpu_available()
