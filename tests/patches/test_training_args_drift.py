"""transformers' TrainingArguments drift (4.36 -> 5.x): what reaches the built arguments, the scheduler and the
sampler, for both spellings of every tested release; the clear errors; the command line.

The seven venvs carry transformers 4.40.2, 4.46.3, 4.49.0, 4.51.3, 4.54.1, 5.4.0 and 5.19.0; expectations are
chosen from the installed transformers (``trlshim.versions.transformers_version()``)."""
from __future__ import annotations

import dataclasses

import helpers
import pytest
import trl  # trlshim applies its rows when TRL is imported
from packaging.version import Version

import trlshim  # noqa: F401  (patches)
from trlshim import report
from trlshim.versions import release, transformers_version

TF = release(transformers_version())
HAS_EVAL_STRATEGY = TF >= Version("4.41")  # eval_strategy added
HAS_EVALUATION_STRATEGY = TF < Version("4.51")  # evaluation_strategy removed
RATIO_IN_WARMUP_STEPS = TF >= Version("5.0")  # warmup_steps: a float < 1 is a ratio
HAS_WARMUP_RATIO = TF < Version("5.15")
HAS_GROUP_BY_LENGTH = TF < Version("5.2")


def _args(tmp_path, cls=None, **kw):
    from transformers import TrainingArguments

    return (cls or TrainingArguments)(**helpers.training_kwargs(tmp_path, **kw))


def _sft(tmp_path, **kw):
    return _args(tmp_path, cls=trl.SFTConfig, **kw)


def _eval_strategy(args):
    value = args.eval_strategy if HAS_EVAL_STRATEGY else args.evaluation_strategy
    return getattr(value, "value", value)


def _translations():
    return [m for m in report.applied() if "TrainingArguments" in m or "Config" in m or m.startswith("trlshim: --")]


def _warmup_used(args, steps=8):
    """The learning rate after one step of the scheduler the Trainer builds from ``args`` (tiny model)."""
    from transformers import Trainer

    trainer = Trainer(model=helpers.make_model(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    return trainer.lr_scheduler.get_last_lr()[0] / args.learning_rate


@pytest.mark.parametrize("build", [_args, _sft], ids=["TrainingArguments", "SFTConfig"])
@pytest.mark.parametrize("spelling", ["evaluation_strategy", "eval_strategy"])
def test_eval_strategy_either_spelling(tmp_path, build, spelling):
    args = build(tmp_path, **{spelling: "steps"}, eval_steps=3)
    assert _eval_strategy(args) == "steps"
    translated = (spelling == "evaluation_strategy" and not HAS_EVALUATION_STRATEGY) or (
        spelling == "eval_strategy" and not HAS_EVAL_STRATEGY)
    assert any(spelling in m for m in _translations()) is translated


@pytest.mark.parametrize("build", [_args, _sft], ids=["TrainingArguments", "SFTConfig"])
def test_both_eval_spellings_with_different_values_is_an_error(tmp_path, build):
    # 4.41-4.50 have both fields (the old one wins there): an error on every release, never a silent pick
    with pytest.raises(TypeError, match="evaluation_strategy.*eval_strategy|eval_strategy.*evaluation_strategy"):
        build(tmp_path, evaluation_strategy="steps", eval_strategy="epoch")


@pytest.mark.parametrize("build", [_args, _sft], ids=["TrainingArguments", "SFTConfig"])
@pytest.mark.parametrize("spelling", ["warmup_ratio", "warmup_steps"])
def test_warmup_ratio_reaches_the_scheduler(tmp_path, build, spelling):
    # a quarter of 8 steps is 2 warmup steps: after one step the learning rate is half the peak
    args = build(tmp_path, **{spelling: 0.25}, lr_scheduler_type="linear")
    assert args.get_warmup_steps(8) == 2
    assert _warmup_used(args) == pytest.approx(0.5)
    translated = (spelling == "warmup_ratio" and not HAS_WARMUP_RATIO) or (
        spelling == "warmup_steps" and not RATIO_IN_WARMUP_STEPS)
    assert any(spelling in m for m in _translations()) is translated


def test_whole_warmup_steps_stay_steps(tmp_path):
    args = _args(tmp_path, warmup_steps=3, lr_scheduler_type="linear")
    assert args.get_warmup_steps(8) == 3
    assert _warmup_used(args) == pytest.approx(1 / 3)


def test_warmup_ratio_and_steps_together_is_an_error_on_transformers_5(tmp_path):
    if TF < Version("5.0"):
        pytest.skip("transformers 4 defines it: warmup_steps > 0 wins (tested below)")
    with pytest.raises(TypeError, match="warmup_ratio.*warmup_steps"):
        _args(tmp_path, warmup_ratio=0.1, warmup_steps=3)


def test_warmup_ratio_and_steps_together_keep_their_meaning_on_transformers_4(tmp_path):
    if TF >= Version("5.0"):
        pytest.skip("transformers 5 resolves both differently (5.0-5.14: the ratio wins; 5.15+: one field)")
    args = _args(tmp_path, warmup_ratio=0.5, warmup_steps=3)  # transformers 4: warmup_steps > 0 wins
    assert args.get_warmup_steps(8) == 3


def test_activation_checkpointing_on_any_release(tmp_path):
    args = _args(tmp_path, activation_checkpointing=True)
    assert args.gradient_checkpointing is True
    assert any("activation_checkpointing" in m for m in _translations()) is (TF < Version("5.23"))


def test_warmup_ratio_one_has_no_equivalent(tmp_path):
    if HAS_WARMUP_RATIO:
        pytest.skip("this transformers has warmup_ratio itself")
    with pytest.raises(TypeError, match=rf"warmup_ratio.*transformers {TF}.*warmup_steps"):
        _args(tmp_path, warmup_ratio=1.0)


@pytest.mark.parametrize("spelling", ["group_by_length", "train_sampling_strategy"])
def test_group_by_length_reaches_the_sampler(tmp_path, spelling):
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    value = True if spelling == "group_by_length" else "group_by_length"
    args = _args(tmp_path, **{spelling: value})
    data = [{"input_ids": list(range(n))} for n in (3, 9, 5, 7, 2, 8, 4, 6)]
    trainer = Trainer(model=helpers.make_model(), args=args, train_dataset=data)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    translated = (spelling == "group_by_length") is not HAS_GROUP_BY_LENGTH
    assert any(spelling in m for m in _translations()) is translated


def test_no_cuda_means_use_cpu(tmp_path):
    from transformers import TrainingArguments

    kw = helpers.training_kwargs(tmp_path)
    kw.pop("use_cpu", None)
    args = TrainingArguments(**kw, no_cuda=True)
    assert args.use_cpu is True and args.device.type == "cpu"


def test_include_inputs_for_metrics(tmp_path):
    args = _args(tmp_path, include_inputs_for_metrics=True)
    if TF >= Version("4.46"):
        assert "inputs" in args.include_for_metrics
    else:
        assert args.include_inputs_for_metrics is True


def test_both_batch_size_spellings_with_different_values_is_an_error_on_transformers_5(tmp_path):
    if TF < Version("5.0"):
        pytest.skip("transformers 4 has both fields (per_gpu_* wins there)")
    with pytest.raises(TypeError, match="per_gpu_train_batch_size.*per_device_train_batch_size"):
        _args(tmp_path, per_gpu_train_batch_size=3)  # helpers pass per_device_train_batch_size=4


def test_removed_field_without_equivalent_is_a_clear_error(tmp_path):
    if TF < Version("5.0"):
        args = _args(tmp_path, save_safetensors=False)
        assert args.save_safetensors is False
        return
    with pytest.raises(TypeError, match=rf"save_safetensors.*transformers {TF}.*removed.*5\.0.*safetensors"):
        _args(tmp_path, save_safetensors=False)
    with pytest.raises(TypeError, match=r"past_index"):
        _sft(tmp_path, past_index=0)
    # its default did nothing: dropped, reported
    assert _args(tmp_path, save_safetensors=True, overwrite_output_dir=True).output_dir == str(tmp_path)
    assert any("overwrite_output_dir" in m for m in _translations())


def test_strict_mode_refuses_the_translation(tmp_path, monkeypatch):
    if HAS_EVALUATION_STRATEGY:
        pytest.skip("nothing to translate on this transformers")
    monkeypatch.setenv("TRLSHIM_STRICT", "1")
    with pytest.raises(TypeError, match="TRLSHIM_STRICT"):
        _args(tmp_path, evaluation_strategy="steps")


# --- the command line ---

def _parse(cls, argv):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(cls).parse_args_into_dataclasses(argv, look_for_args_file=False)
    return args


def _argv(tmp_path, *extra):
    cpu = "--use_cpu" if "use_cpu" in {f.name for f in dataclasses.fields(_training_arguments())} else "--no_cuda"
    return ["--output_dir", str(tmp_path), "--report_to", "none", cpu, *extra]


def _training_arguments():
    from transformers import TrainingArguments

    return TrainingArguments


@pytest.mark.parametrize("cls_name", ["TrainingArguments", "SFTConfig"])
def test_command_line_old_spellings(tmp_path, cls_name):
    cls = _training_arguments() if cls_name == "TrainingArguments" else trl.SFTConfig
    args = _parse(cls, _argv(tmp_path, "--evaluation_strategy", "steps", "--eval_steps", "3",
                             "--warmup_ratio", "0.25", "--group_by_length"))
    assert _eval_strategy(args) == "steps"
    assert args.get_warmup_steps(8) == 2
    sampling = args.group_by_length if HAS_GROUP_BY_LENGTH else args.train_sampling_strategy == "group_by_length"
    assert sampling is True


def test_command_line_new_spellings_on_any_release(tmp_path):
    args = _parse(_training_arguments(), _argv(tmp_path, "--eval_strategy", "steps", "--eval_steps", "3",
                                               "--warmup_steps", "0.25"))
    assert _eval_strategy(args) == "steps"
    assert args.get_warmup_steps(8) == 2


def test_command_line_removed_field_is_an_error(tmp_path, capsys):
    if TF < Version("5.0"):
        pytest.skip("save_safetensors is a field of this transformers")
    with pytest.raises(SystemExit):
        _parse(_training_arguments(), _argv(tmp_path, "--save_safetensors", "false"))
    assert "save_safetensors" in capsys.readouterr().err


def test_own_dataclass_subclass(tmp_path):
    """A user's ``@dataclass class MyArgs(TrainingArguments)`` has its own generated ``__init__`` (not the
    wrapped one): the command line translates (the parser row sees every TrainingArguments subclass); the
    constructor translates where the user calls ``translate_training_arguments`` themselves."""
    from trlshim.patches.common.training_args import accepted_fields, translate_training_arguments

    @dataclasses.dataclass
    class MyArgs(_training_arguments()):
        my_option: int = 1

    args = _parse(MyArgs, _argv(tmp_path, "--evaluation_strategy", "steps", "--eval_steps", "3", "--my_option", "4"))
    assert (_eval_strategy(args), args.my_option) == ("steps", 4)
    kw = translate_training_arguments(helpers.training_kwargs(tmp_path, evaluation_strategy="steps", eval_steps=3),
                                      "MyArgs", accepted_fields(MyArgs))
    assert _eval_strategy(MyArgs(**kw)) == "steps"


@pytest.mark.parametrize("old, value, read", [
    ("adafactor", True, lambda a: getattr(a.optim, "value", a.optim) == "adafactor"),
    ("per_gpu_train_batch_size", 3, lambda a: a.train_batch_size == 3),
    ("torchdynamo", "eager", lambda a: (a.torch_compile, a.torch_compile_backend) == (True, "eager")),
])
def test_old_field_keeps_its_meaning(tmp_path, old, value, read):
    """transformers 4 reads these itself; on 5 trlshim moves them: the built arguments say the same."""
    from transformers import TrainingArguments

    kw = helpers.training_kwargs(tmp_path, **{old: value})
    kw.pop("per_device_train_batch_size")  # both spellings with different values would be an error
    assert read(TrainingArguments(**kw))
    assert any(old in m for m in _translations()) is (TF >= Version("5.0"))


@pytest.mark.parametrize("eval_steps", [5, 1])
def test_eval_strategy_without_eval_dataset_fails_at_the_first_evaluation_only(tmp_path, eval_steps):
    """transformers < 4.46 built the trainer and raised only at an evaluation step that came; 4.46+ refuse it at
    build. The old meaning on every release: no evaluation step within max_steps -> trains; one -> the old error."""
    import inspect

    from transformers import TrainingArguments

    spelling = "eval_strategy" if "eval_strategy" in inspect.signature(TrainingArguments.__init__).parameters \
        else "evaluation_strategy"
    args = TrainingArguments(**helpers.training_kwargs(tmp_path, max_steps=2), eval_steps=eval_steps,
                             **{spelling: "steps"})
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=args, train_dataset=helpers.text_dataset(),
                             processing_class=helpers.make_tokenizer())
    assert str(getattr(getattr(trainer.args, spelling), "value", getattr(trainer.args, spelling))) == "steps"
    if eval_steps > 2:
        trainer.train()
        assert trainer.state.global_step == 2
    else:
        with pytest.raises(ValueError, match="evaluation requires an eval_dataset"):
            trainer.train()
        assert trainer.state.global_step == 1  # one step trained, then the first evaluation raised
