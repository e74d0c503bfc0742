"""CPOTrainer scripts of every release, importing from ``trl`` directly (patches/cpo, common/moved_trainers)."""
from __future__ import annotations

import helpers
import pytest

from trlshim import report
from trlshim.versions import trl_in


def _rows(n=8):
    prompts = helpers.texts(n, seed=31, n_min=3, n_max=5)
    chosen = helpers.texts(n, seed=32, n_min=14, n_max=20)
    rejected = helpers.texts(n, seed=33, n_min=14, n_max=20)
    return [{"prompt": p + " ?", "chosen": " " + c, "rejected": " " + r} for p, c, r in zip(prompts, chosen, rejected)]


def _config(tmp_path, **fields):
    from trl import CPOConfig

    kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False)
    return CPOConfig(**{**kw, **fields})


def test_old_script_trains_with_its_beta_and_max_length(tmp_path, tokenizer):
    """A TRL 0.8 CPO script: ``from trl import CPOConfig, CPOTrainer``, ``tokenizer=``, beta/max_length."""
    from datasets import Dataset
    from trl import CPOTrainer

    fields = dict(beta=0.2, max_length=24, loss_type="sigmoid")
    if trl_in("<0.28"):
        fields["max_prompt_length"] = 8
    model = helpers.make_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = helpers.Recorder(model)
    trainer = CPOTrainer(model=model, args=_config(tmp_path, **fields), train_dataset=Dataset.from_list(_rows()),
                         tokenizer=tokenizer)
    trainer.train()
    rec.remove()
    assert trainer.beta == 0.2 and trainer.loss_type == "sigmoid"
    fed = rec.rows()
    assert fed
    if trl_in("<0.28"):
        assert max(len(r) for r in fed) <= 24
    after = dict(model.named_parameters())
    assert any(not before[k].equal(after[k].detach()) for k in before)
    if trl_in(">=0.16"):
        assert any("CPOTrainer(tokenizer=...) -> processing_class=" in m for m in report.applied())


def test_old_import_paths_and_removed_fields(tmp_path):
    import trl
    from trl.trainer.cpo_config import CPOConfig
    from trl.trainer.cpo_trainer import CPOTrainer

    assert trl.CPOTrainer is CPOTrainer and trl.CPOConfig is CPOConfig
    cfg = CPOConfig(output_dir=str(tmp_path), report_to="none")
    from transformers.utils import is_torch_bf16_gpu_available

    assert cfg.bf16 in (False, None) or is_torch_bf16_gpu_available()
    if trl_in(">=0.28"):
        from trlshim.patches.common.preference import own_options

        kept = CPOConfig(output_dir=str(tmp_path), max_prompt_length=8)  # emulated (test_pair_prompt_truncation.py)
        assert own_options(kept)["max_prompt_length"] == 8
    if trl_in(">=0.11"):
        with pytest.raises(TypeError, match=r"max_target_length.*removed in TRL 0\.11.*max_completion_length"):
            CPOConfig(output_dir=str(tmp_path), max_target_length=8)


def test_stable_names_work_unpatched(tmp_path, tokenizer):
    from datasets import Dataset

    import trlshim

    trlshim.unpatch()
    try:
        kw = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=1, remove_unused_columns=False)
        if trl_in("<0.28"):  # 0.14-0.27 default it to 512 and require it below max_length
            kw["max_prompt_length"] = 8
        trainer = trlshim.CPOTrainer(model=helpers.make_model(), args=trlshim.CPOConfig(**kw, max_length=24),
                                     tokenizer=tokenizer, train_dataset=Dataset.from_list(_rows(4)), beta=0.35)
        assert trainer.beta == 0.35
    finally:
        trlshim.patch()
