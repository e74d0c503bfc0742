"""Public TRL names old scripts import (``patches/common/removed_names.py``): importable from every path they
had, with the behaviour they had, or a clear ImportError."""
from __future__ import annotations

import importlib
import importlib.util

import helpers
import pytest

import trlshim
from trlshim.patches.common.removed_names import NAMES
from trlshim.versions import trl_in, trl_version

TRL = trl_version()
PAIRS = sorted({(n.name, p) for n in NAMES for p in n.paths})
OLD_PATHS = [  # names every release 0.7-1.16 had somewhere, from their old paths
    ("ConstantLengthDataset", "trl.trainer"), ("ConstantLengthDataset", "trl.trainer.utils"),
    ("setup_chat_format", "trl"), ("setup_chat_format", "trl.models.utils"),
    ("get_kbit_device_map", "trl"), ("get_kbit_device_map", "trl.trainer.utils"),
    ("get_quantization_config", "trl"), ("get_peft_config", "trl"), ("ModelConfig", "trl"),
    ("TrlParser", "trl"), ("TrlParser", "trl.commands"), ("TrlParser", "trl.commands.cli_utils"),
    ("TrlParser", "trl.scripts"), ("TrlParser", "trl.scripts.utils"), ("init_zero_verbose", "trl.commands"),
    ("init_zero_verbose", "trl.scripts.utils"), ("ScriptArguments", "trl"), ("ScriptArguments", "trl.scripts"),
    ("SftScriptArguments", "trl"), ("SftScriptArguments", "trl.commands.cli_utils"),
    ("SFTScriptArguments", "trl"), ("SFTScriptArguments", "trl.commands.cli_utils"),
    ("is_peft_available", "trl.import_utils"), ("is_peft_available", "trl"), ("is_wandb_available", "trl.import_utils"),
    ("is_transformers_greater_than", "trl.import_utils"), ("is_rich_available", "trl.import_utils"),
    ("is_diffusers_available", "trl"), ("is_llm_blender_available", "trl"),  # TRL 0.12's tests/testing_utils.py
]


def _get(path, name):
    return getattr(importlib.import_module(path), name)


@pytest.mark.parametrize("name,path", sorted(set(PAIRS) | set(OLD_PATHS)))
def test_importable_or_clear_error(name, path):
    entries = [n for n in NAMES if n.name == name and path in n.paths]
    removed = [n for n in entries if n.provider.startswith("removed:")]
    if removed and not trl_in(">=0.13"):
        pytest.skip(f"TRL {TRL} has its own {path}: {name} is there or not, as in that release")
    try:
        obj = _get(path, name)
    except ImportError as exc:
        assert removed, f"{path}.{name} should be importable on TRL {TRL}: {exc}"
        assert "removed in TRL" in str(exc) and name in str(exc)
        return
    assert obj is not None
    mod = importlib.import_module(path)
    assert getattr(mod, name) is obj or getattr(getattr(mod, name), "__name__", None) == name


def test_from_import_statement_forms():
    import trl
    from trl.commands.cli_utils import TrlParser as a  # noqa: F401
    from trl.scripts.utils import TrlParser as b  # noqa: F401
    from trl.trainer.utils import ConstantLengthDataset  # noqa: F401

    assert a is b is trl.TrlParser


def test_removed_name_error_names_release_and_replacement():
    if not trl_in(">=0.13"):
        pytest.skip("TRL < 0.13 has YamlConfigParser itself")
    with pytest.raises(ImportError, match="removed in TRL 0.13.*TrlParser"):
        from trl.commands.cli_utils import YamlConfigParser  # noqa: F401


def test_availability_probes_answer_truthfully():
    import trl.import_utils as iu

    for name, module in (("is_peft_available", "peft"), ("is_wandb_available", "wandb"),
                         ("is_rich_available", "rich")):
        assert bool(getattr(iu, name)()) == (importlib.util.find_spec(module) is not None), name
    assert iu.is_transformers_greater_than("1.0") is True
    assert iu.is_transformers_greater_than("999.0") is False


def test_script_arguments_shapes():
    import trl
    from trl.commands.cli_utils import SftScriptArguments

    assert trl.ScriptArguments(dataset_name="d").dataset_train_split == "train"
    old = SftScriptArguments()
    assert (old.max_seq_length, old.packing, old.dataset_train_name) == (512, False, "train")
    assert trl.SFTScriptArguments(dataset_name="d").dataset_train_split == "train"
    parsed = trl.TrlParser((trl.ScriptArguments,)).parse_args_into_dataclasses(["--dataset_name", "x"])[0]
    assert parsed.dataset_name == "x"


def test_get_kbit_device_map_on_cpu():
    import torch
    from trl.trainer.utils import get_kbit_device_map

    expected = None if not torch.cuda.is_available() else {"": 0}
    assert get_kbit_device_map() == expected


def test_setup_chat_format_adds_chatml():
    from trl import setup_chat_format

    tok = helpers.make_tokenizer()
    tok.chat_template = None
    model = helpers.make_model()
    model, tok = setup_chat_format(model, tok)
    assert tok.eos_token == "<|im_end|>" and tok.bos_token == "<|im_start|>" and tok.pad_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)  # TRL resized to the vocabulary
    assert model.config.eos_token_id == tok.eos_token_id
    if trl_in(">=0.12"):  # TRL 0.11+ refuse a tokenizer that has a template already
        with pytest.raises(ValueError, match="already"):
            setup_chat_format(model, tok)


def _cld(tok, seq_length=8, concat=True):
    from trl.trainer import ConstantLengthDataset

    return ConstantLengthDataset(tok, helpers.text_dataset(n=12), dataset_text_field="text", seq_length=seq_length,
                                 shuffle=False, append_concat_token=concat)


def test_constant_length_dataset_rows():
    tok = helpers.make_tokenizer()
    rows = [r["input_ids"].tolist() for r in _cld(tok)]
    texts = helpers.texts(12)
    stream = [i for t in texts for i in tok(t)["input_ids"] + [tok.eos_token_id]]
    assert rows and all(len(r) == 8 for r in rows)
    assert [i for r in rows for i in r] == stream[:len(rows) * 8]
    no_eos = [i for r in _cld(tok, concat=False) for i in r["input_ids"].tolist()]
    assert tok.eos_token_id not in no_eos


def test_constant_length_dataset_as_train_dataset(tmp_path):
    import trl

    tok = helpers.make_tokenizer()
    model = helpers.make_model()
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=2),
                        max_seq_length=8, packing=True, dataset_text_field="text", auto_padding_free=False)
    rec = helpers.Recorder(model)
    trl.SFTTrainer(model=model, args=cfg, train_dataset=_cld(tok, seq_length=12), tokenizer=tok).train()
    rec.remove()
    rows = rec.rows()
    assert rows and all(len(r) == 12 for r in rows)
    texts = helpers.texts(12)
    stream = [i for t in texts for i in tok(t)["input_ids"] + [tok.eos_token_id]]
    cut = [stream[i:i + 12] for i in range(0, len(stream) - 11, 12)]
    assert all(r in cut for r in rows)  # each fed row is a row the old class cut (the sampler shuffles them)


def test_unpatch_removes_virtual_modules():
    import sys

    virtual = "trl.commands" if trl_in(">=0.13") else "trl.scripts"
    importlib.import_module(virtual + (".cli_utils" if virtual == "trl.commands" else ".utils"))
    trlshim.unpatch()
    try:
        assert virtual not in sys.modules
        with pytest.raises(ImportError):
            importlib.import_module(virtual)
    finally:
        trlshim.patch()
    assert importlib.import_module(virtual).TrlParser is importlib.import_module("trl").TrlParser


@pytest.mark.parametrize("spelling", ["torch_dtype", "dtype"])
def test_model_config_dtype_in_both_spellings(spelling):
    from trl import ModelConfig, TrlParser

    cfg = ModelConfig(model_name_or_path="m", **{spelling: "bfloat16"})
    (parsed,) = TrlParser((ModelConfig,)).parse_args_into_dataclasses(
        ["--model_name_or_path", "m", f"--{spelling}", "float16"])
    if trl_in(">=0.23,<0.27"):  # both fields are the release's own: it reads dtype (torch_dtype copied into it)
        assert cfg.dtype == "bfloat16" and parsed.dtype == "float16"
        return
    assert cfg.torch_dtype == cfg.dtype == "bfloat16"
    assert parsed.torch_dtype == parsed.dtype == "float16"


def test_trl_parser_takes_old_sft_option_spellings(tmp_path):
    import trl

    (cfg,) = trl.TrlParser((trl.SFTConfig,)).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--max_seq_length", "7"])
    assert getattr(cfg, "max_length", None) == 7 or getattr(cfg, "max_seq_length", None) == 7
