"""``model_init_kwargs`` of ORPO, CPO, KTO and Reward (and KTO's ``ref_model_init_kwargs``): a script's dtype, in
either spelling (``torch_dtype`` up to TRL 0.22, ``dtype`` from 0.23) and either form (a name or a
``torch.dtype``), is the dtype of the model the trainer loads from a path, on every release."""
from __future__ import annotations

import helpers
import pytest
import torch

from trlshim.versions import trl_in

TRAINERS = ("ORPO", "CPO", "KTO", "Reward")


def _rows(trainer: str) -> list:
    prompts = helpers.texts(4, seed=11, n_min=3, n_max=5)
    answers = helpers.texts(4, seed=12, n_min=3, n_max=6)
    if trainer == "KTO":
        return [{"prompt": p + " ?", "completion": " " + a, "label": i % 2 == 0}
                for i, (p, a) in enumerate(zip(prompts, answers))]
    if trainer == "Reward":
        return [{"chosen": p + " " + a, "rejected": a + " " + p} for p, a in zip(prompts, answers)]
    return [{"prompt": p + " ?", "chosen": " " + a, "rejected": " " + p} for p, a in zip(prompts, answers)]


def _saved_model(tmp_path) -> str:
    path = tmp_path / "tiny"
    model = helpers.make_model()
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(path)
    return str(path)


def _build(trainer: str, tmp_path, tokenizer, on_config: bool, **options):
    import trl
    from datasets import Dataset

    config_cls, trainer_cls = getattr(trl, f"{trainer}Config"), getattr(trl, f"{trainer}Trainer")
    kw = helpers.training_kwargs(tmp_path / "out", per_device_train_batch_size=2, max_steps=1,
                                 remove_unused_columns=False)
    cfg = config_cls(**kw, **(options if on_config else {}))
    extra = {} if on_config else options
    if trainer == "KTO" and "ref_model_init_kwargs" in options:
        extra["ref_model"] = _saved_model(tmp_path)
    return trainer_cls(model=_saved_model(tmp_path), args=cfg, train_dataset=Dataset.from_list(_rows(trainer)),
                       processing_class=tokenizer, **extra)


def _skip_missing(trainer: str):
    if trainer == "Reward" and trl_in("<0.24"):
        pytest.skip("RewardTrainer loads model paths itself from TRL 0.24 (model_init_kwargs added there)")


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
@pytest.mark.parametrize("form", ["name", "dtype"])
def test_loaded_model_has_the_requested_dtype(tmp_path, tokenizer, trainer, key, form):
    _skip_missing(trainer)
    value = "bfloat16" if form == "name" else torch.bfloat16
    built = _build(trainer, tmp_path, tokenizer, on_config=True, model_init_kwargs={key: value})
    assert built.model.dtype == torch.bfloat16


@pytest.mark.parametrize("trainer", ["ORPO", "KTO"])
def test_trainer_keyword_is_translated_too(tmp_path, tokenizer, trainer):
    """model_init_kwargs given to the trainer (moved to a copy of the config by the arguments step)."""
    built = _build(trainer, tmp_path, tokenizer, on_config=False, model_init_kwargs={"dtype": "float16"})
    assert built.model.dtype == torch.float16


def test_kto_reference_model_dtype(tmp_path, tokenizer):
    if trl_in(">=0.28"):
        pytest.skip("ref_model_init_kwargs removed in TRL 0.28 (a TypeError with advice: test_kto_trainer)")
    built = _build("KTO", tmp_path, tokenizer, on_config=True, ref_model_init_kwargs={"dtype": torch.bfloat16},
                   model_init_kwargs={"torch_dtype": "float16"})
    assert built.model.dtype == torch.float16
    assert built.ref_model.dtype == torch.bfloat16


def test_both_spellings_with_different_values_is_an_error(tmp_path, tokenizer):
    with pytest.raises(TypeError, match=r"both 'torch_dtype'|both 'dtype'"):
        _build("ORPO", tmp_path, tokenizer, on_config=True,
               model_init_kwargs={"torch_dtype": "bfloat16", "dtype": "float16"})
