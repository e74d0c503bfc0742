"""Issue 9 items 2, 3 and 9: what the user put on a config survives every copy path the ecosystem uses
(``dataclasses.replace``, ``to_dict`` -> constructor, ``deepcopy``, ``pickle``, ``HfArgumentParser``),
late attribute edits in any release's spelling reach the field the installed release reads, and the
command-line parser keeps trlshim's CPU bf16 default. The options trlshim emulates for ORPO/CPO/KTO/DPO/GRPO reach
what the model is fed through ``to_dict``, the command line and a late edit."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import helpers
import pytest

from trlshim import report
from trlshim.patches.sft import config as sft_config

VALUES = {bool: True, float: 0.125, str: "wrapped"}


def _copies():
    from transformers import HfArgumentParser

    def parser_dict(c):
        return HfArgumentParser(type(c)).parse_dict({k: v for k, v in c.to_dict().items() if k in _OWN}
                                                    | {"output_dir": c.output_dir})[0]

    def parser_cli(c):
        argv = []
        for k, v in c.to_dict().items():
            if v is not None and isinstance(v, (bool, int, float, str)) and k in _OWN:
                argv += [f"--{k}", str(v)]
        return HfArgumentParser(type(c)).parse_args_into_dataclasses(argv + ["--output_dir", c.output_dir])[0]

    def to_dict(c):  # transformers masks every `*_token` value as "<NAME>" (hub tokens): not ours to restore
        return type(c)(**{k: v for k, v in c.to_dict().items() if not (k.endswith("_token") and v == f"<{k.upper()}>")})

    return {"replace": dataclasses.replace, "to_dict": to_dict, "deepcopy": copy.deepcopy,
            "pickle": lambda c: pickle.loads(pickle.dumps(c)), "parser_dict": parser_dict, "parser_cli": parser_cli}


def _value(name):
    t = sft_config.OPTION_TYPES[name]
    base = next(b for b in (bool, float, str) if t is b or b in getattr(t, "__args__", ()))
    default = {**sft_config.EMULATED, **sft_config.SHIM_FIELDS}[name]
    return (not default) if base is bool else VALUES[base]


_OWN = sorted(set(sft_config.OPTION_TYPES))


@pytest.mark.parametrize("how", ["replace", "to_dict", "deepcopy", "pickle", "parser_dict", "parser_cli"])
def test_own_options_survive_every_copy(tmp_path, how):
    import trl

    native = sft_config.native_fields(trl.SFTConfig)
    names = [n for n in _OWN if n not in native]  # the options trlshim carries on this release
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), **{n: _value(n) for n in names})
    out = _copies()[how](cfg)
    assert {n: getattr(out, n) for n in names} == {n: _value(n) for n in names}


@pytest.mark.parametrize("how", ["replace", "to_dict", "pickle"])
def test_assistant_only_loss_survives_a_copy_by_what_is_trained(tmp_path, how):
    """The observed failure: the copy lost the option and the model trained on user turns."""
    import trl
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path, max_steps=1), max_length=128, assistant_only_loss=True,
                        auto_padding_free=False)
    cfg = _copies()[how](cfg)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    trl.SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(helpers.chat_rows()),
                   processing_class=tok).train()
    rec.remove()
    user = tok.convert_tokens_to_ids("<|user|>")
    for ids, labels in helpers.fed_examples(rec):
        labelled = [t for t, lab in zip(ids, labels) if lab != -100]
        assert labelled and user not in labelled and len(labelled) < len(ids) - 2  # the user turns carry no loss


@pytest.mark.parametrize("config", ["trl", "trlshim"])
@pytest.mark.parametrize("spelling", ["max_seq_length", "max_length"])
def test_late_edit_in_any_spelling_reaches_the_field(tmp_path, spelling, config):
    import trl

    import trlshim

    cls = trl.SFTConfig if config == "trl" else trlshim.SFTConfig
    cfg = cls(**helpers.training_kwargs(tmp_path), dataset_text_field="text", auto_padding_free=False)
    setattr(cfg, spelling, 8)
    assert getattr(cfg, spelling) == 8
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                             processing_class=helpers.make_tokenizer())
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] <= 8


def test_parser_keeps_the_cpu_bf16_default(tmp_path, monkeypatch):
    """HfArgumentParser passes bf16=None when the command line does not say: that is 'unset'."""
    import trl
    from transformers import HfArgumentParser

    field = trl.SFTConfig.__dataclass_fields__.get("bf16")
    if field is None or field.default is False:
        pytest.skip("this release does not default bf16 on")
    from transformers.utils import is_torch_bf16_gpu_available

    if is_torch_bf16_gpu_available():
        pytest.skip("bf16 is supported here")
    (cfg,) = HfArgumentParser(trl.SFTConfig).parse_args_into_dataclasses(["--output_dir", str(tmp_path)])
    assert cfg.bf16 is False


@pytest.mark.parametrize("spelling", ["max_seq_length", "max_length", "max-seq-length"])
def test_parser_accepts_every_spelling(tmp_path, spelling):
    """Issue 9 item 9: TRL's scripts parse SFTConfig from the command line; any release's spelling works."""
    import trl
    from transformers import HfArgumentParser

    parser = HfArgumentParser(trl.SFTConfig)
    if "-" in spelling and "--output-dir" not in parser._option_string_actions:
        pytest.skip("this transformers' parser has no dashed spellings for any option")
    (cfg,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), f"--{spelling}", "8", "--dataset_text_field", "text", "--use_cpu", "true"])
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                             processing_class=helpers.make_tokenizer())
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] <= 8
    field = "max_length" if "max_length" in trl.SFTConfig.__dataclass_fields__ else "max_seq_length"
    if spelling.replace("-", "_") not in trl.SFTConfig.__dataclass_fields__:  # another release's spelling
        assert any(f"--{spelling} -> --{field}" in m for m in report.applied()), report.applied()


# --- the options trlshim emulates for the other trainers, through the paths a config travels ----------------------
# type(cfg)(**cfg.to_dict()) (TRL's and accelerate's own round trip), the command line (HfArgumentParser, as TRL's
# example scripts parse their config) and a late attribute edit: each must reach what the model is fed.
PATHS = ["to_dict", "parser_cli", "late_edit"]


def _argv(kwargs: dict) -> list:
    argv = []
    for key, value in kwargs.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
    return argv


def _through(how, cls, base: dict, options: dict):
    """A ``cls`` config with ``base`` and the emulated ``options``, built through ``how``."""
    from transformers import HfArgumentParser

    if how == "to_dict":
        values = cls(**base, **options).to_dict()
        if values.get("generation_batch_size") is not None and values.get("steps_per_generation") is not None:
            values.pop("generation_batch_size")  # GRPOConfig derives it, then refuses both (TRL's own round trip)
        return cls(**{k: v for k, v in values.items() if not (k.endswith("_token") and v == f"<{k.upper()}>")})
    if how == "parser_cli":
        (cfg,) = HfArgumentParser(cls).parse_args_into_dataclasses(_argv({**base, **options}))
        return cfg
    cfg = cls(**base)
    for name, value in options.items():
        setattr(cfg, name, value)
    return cfg


def _emulated(spec: str, config: str, names) -> None:
    """Skip where the installed release applies the options itself (the paths are then TRL's own) or lacks them."""
    from trlshim.versions import trl_in

    if not trl_in(spec):
        pytest.skip(f"trlshim does not emulate {config}'s {', '.join(names)} on this release")


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("name", ["ORPO", "CPO"])
def test_pair_prompt_options_reach_the_model_through_every_path(tmp_path, tokenizer, name, how):
    from datasets import Dataset
    from test_pair_prompt_truncation import LIMIT, MAX_LENGTH, _classes, _expected, _rows

    trainer_cls, config_cls = _classes(name)
    options = dict(max_prompt_length=LIMIT, truncation_mode="keep_start")
    _emulated(">=0.28", f"{name}Config", options)
    base = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False,
                                   max_length=MAX_LENGTH)
    cfg = _through(how, config_cls, base, options)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    trainer_cls(model=model, args=cfg, train_dataset=Dataset.from_list(_rows()), processing_class=tokenizer).train()
    rec.remove()
    assert sorted(rec.rows()) == _expected(tokenizer, _rows(), keep_end=False)


@pytest.mark.parametrize("how", PATHS)
def test_kto_prompt_options_reach_the_model_through_every_path(tmp_path, tokenizer, how):
    from datasets import Dataset
    from test_pair_prompt_truncation import LIMIT, MAX_LENGTH, _kto_expected
    from trl import KTOConfig, KTOTrainer

    options = dict(max_prompt_length=LIMIT, truncation_mode="keep_start")
    _emulated(">=0.27", "KTOConfig", options)
    rows = [{"prompt": p, "completion": " " + c, "label": i % 2 == 0} for i, (p, c) in
            enumerate(zip(helpers.texts(4, seed=51, n_min=10, n_max=16), helpers.texts(4, seed=52, n_min=3, n_max=20)))]
    base = helpers.training_kwargs(tmp_path, per_device_train_batch_size=2, max_steps=2, remove_unused_columns=False,
                                   max_length=MAX_LENGTH, loss_type="apo_zero_unpaired")
    cfg = _through(how, KTOConfig, base, options)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    KTOTrainer(model=model, ref_model=helpers.make_model(), args=cfg, train_dataset=Dataset.from_list(rows),
               processing_class=tokenizer).train()
    rec.remove()
    assert sorted(rec.rows()) == _kto_expected(tokenizer, rows, keep_end=False)


@pytest.mark.parametrize("how", PATHS)
def test_dpo_removed_caps_reach_the_model_through_every_path(tmp_path, how):
    import copy as copy_

    import trl
    from test_dpo_trainer import _data, _prompt_tails, _ta_kwargs, _tokenizer

    options = dict(max_prompt_length=4, max_completion_length=3)
    _emulated(">=0.29", "DPOConfig", options)
    cfg = _through(how, trl.DPOConfig, dict(_ta_kwargs(tmp_path), max_length=64), options)
    tok, data, model = _tokenizer(), _data(), helpers.make_model()
    rec = helpers.Recorder(model)
    trl.DPOTrainer(model=model, ref_model=copy_.deepcopy(model), args=cfg, train_dataset=data,
                   processing_class=tok).train()
    rec.remove()
    rows = rec.rows()
    assert rows and all(len(r) == 7 for r in rows)  # the prompt's last 4 tokens, each completion's first 3
    assert all(tuple(r[:4]) in _prompt_tails(tok, data, 4) for r in rows)


@pytest.mark.parametrize("how", PATHS)
def test_grpo_prompt_limit_reaches_generation_through_every_path(tmp_path, how):
    import trl
    from test_grpo_trainer import COMPLETION, LIMIT, _cut_prompt_run

    _emulated(">=0.26", "GRPOConfig", ["max_prompt_length"])
    base = helpers.training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=4, num_generations=2,
                                   max_completion_length=COMPLETION)
    cfg = _through(how, trl.GRPOConfig, base, dict(max_prompt_length=LIMIT))
    fed, tokenized = _cut_prompt_run(tmp_path, "text", config=cfg)
    assert {tuple(row) for row in fed.generated} == {tuple(ids[-LIMIT:]) for ids in tokenized.values()}
