"""SFTConfig field names of every release, changed defaults, and the class on TRL < 0.9."""
from __future__ import annotations

import dataclasses

import helpers
import pytest
from packaging.version import Version

import trlshim
from trlshim import report
from trlshim.versions import trl_version

TRL = trl_version()


def _cfg(tmp_path, **kw):
    import trl

    return trl.SFTConfig(**helpers.training_kwargs(tmp_path), **kw)


def test_sft_config_exists_on_every_release(tmp_path):
    import trl
    import trl.trainer
    from transformers import TrainingArguments

    assert trl.SFTConfig is trl.trainer.SFTConfig
    assert issubclass(trl.SFTConfig, TrainingArguments)
    cfg = _cfg(tmp_path, max_length=11, packing=True, dataset_text_field="body")
    length = getattr(cfg, "max_length", None) or cfg.max_seq_length
    assert (length, cfg.packing, cfg.dataset_text_field) == (11, True, "body")


@pytest.mark.parametrize("spelling", ["max_length", "max_seq_length"])
def test_max_length_both_spellings(tmp_path, spelling):
    cfg = _cfg(tmp_path, **{spelling: 13})
    fields = {f.name for f in dataclasses.fields(cfg)}
    installed = "max_length" if "max_length" in fields else "max_seq_length"
    assert getattr(cfg, installed) == 13
    assert (installed != spelling) == any(spelling in m for m in report.applied())


def test_stable_config_is_the_installed_class(tmp_path):
    import trl

    cfg = trlshim.SFTConfig(**helpers.training_kwargs(tmp_path), max_seq_length=9, embedding_learning_rate=1e-4)
    assert isinstance(cfg, trl.SFTConfig)
    assert cfg.embedding_learning_rate == 1e-4
    assert (getattr(cfg, "max_length", None) or cfg.max_seq_length) == 9


def test_unknown_field_names_closest_and_version(tmp_path):
    with pytest.raises(TypeError) as err:
        _cfg(tmp_path, pakcing=True)
    assert "pakcing" in str(err.value) and "'packing'" in str(err.value) and str(TRL) in str(err.value)


def test_bf16_default_kept_runnable_on_cpu(tmp_path):
    import trl
    from transformers.utils import is_torch_bf16_gpu_available

    if is_torch_bf16_gpu_available():
        pytest.skip("this machine runs bf16: the release's default applies")
    kw = helpers.training_kwargs(tmp_path)
    kw.pop("use_cpu", None)
    kw.pop("no_cuda", None)
    cfg = trl.SFTConfig(**kw)  # TRL >= 0.19 alone raises "Your setup doesn't support bf16/gpu"
    assert cfg.bf16 is False
    field = trl.SFTConfig.__dataclass_fields__["bf16"]
    assert any("bf16=False" in m for m in report.applied()) == (field.default is not False)
    if field.default is not False:  # an explicit choice is never overridden: stock TRL's error
        with pytest.raises(ValueError, match="bf16"):
            trl.SFTConfig(**kw, bf16=True)


def test_bf16_training_runs_fp32_where_default_flipped(tmp_path, tokenizer):
    import torch
    import trl

    model = helpers.make_model()
    dtypes = []
    model.model.layers[0].mlp.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    kw = helpers.training_kwargs(tmp_path)
    kw.pop("use_cpu", None)
    kw.pop("no_cuda", None)
    trl.SFTTrainer(model=model, args=trl.SFTConfig(**kw, max_length=8), train_dataset=helpers.text_dataset(),
                   processing_class=tokenizer).train()
    assert dtypes and all(d == torch.float32 for d in dtypes)


def test_use_liger_spelling(tmp_path):
    fields = {f.name for f in dataclasses.fields(_cfg(tmp_path))}
    if "use_liger" not in fields and "use_liger_kernel" not in fields:
        with pytest.raises(TypeError, match="use_liger"):
            _cfg(tmp_path, use_liger=False)
        return
    cfg = _cfg(tmp_path, use_liger=False)
    name = "use_liger_kernel" if "use_liger_kernel" in fields else "use_liger"  # the preferred spelling
    assert getattr(cfg, name) is False


STRATEGIES = [
    ("bfd", {">=0.20": "bfd", ">=0.19,<0.20": "ffd"}),
    ("ffd", {">=0.20": "bfd", ">=0.19,<0.20": "ffd"}),
    ("bfd-requeue", {">=1.0": "bfd_split", ">=0.29,<1.0": "bfd-requeue", ">=0.19,<0.29": ValueError}),
    ("bfd_split", {">=1.0": "bfd_split", ">=0.29,<1.0": "bfd-requeue", ">=0.19,<0.29": ValueError}),
    ("wrapped", {">=0.19": "wrapped"}),
]


@pytest.mark.parametrize("given,expected", STRATEGIES)
def test_packing_strategy_spellings(tmp_path, given, expected):
    from packaging.specifiers import SpecifierSet

    if TRL < Version("0.19"):
        pytest.skip("packing_strategy is not a field before TRL 0.19 (handled by the packing patches)")
    want = next(v for spec, v in expected.items() if SpecifierSet(spec).contains(TRL))
    if want is ValueError:
        with pytest.raises(ValueError, match=given):
            _cfg(tmp_path, packing=True, packing_strategy=given)
        return
    assert _cfg(tmp_path, packing=True, packing_strategy=given).packing_strategy == want


def test_training_arguments_converted_with_same_values(tmp_path, tokenizer):
    import trl
    from transformers import TrainingArguments

    ta = TrainingArguments(**helpers.training_kwargs(tmp_path, learning_rate=5e-5))
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=ta, train_dataset=helpers.text_dataset(),
                             tokenizer=tokenizer, max_seq_length=8)
    if TRL < Version("0.9"):
        assert trainer.args is ta
        return
    assert isinstance(trainer.args, trl.SFTConfig) and trainer.args is not ta
    # the script's values, not SFTConfig's defaults (2e-5, bf16 on 0.19+, checkpointing on 0.22+)
    assert trainer.args.learning_rate == 5e-5 and trainer.args.bf16 is False
    assert trainer.args.gradient_checkpointing is False and trainer.args.logging_steps == 1
    assert not hasattr(ta, "max_length") and not hasattr(ta, "max_seq_length")
