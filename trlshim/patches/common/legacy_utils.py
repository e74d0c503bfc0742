"""trlshim's own versions of small public TRL helpers that TRL deleted (rows in ``removed_names.py``).

Written from their documented behaviour, not copied: ``setup_chat_format`` (deleted in 0.26),
``get_kbit_device_map`` (deleted in 1.8), the script-argument dataclasses of the TRL CLI examples
(``SftScriptArguments`` 0.8, ``SFTScriptArguments`` 0.9-0.12, ``ScriptArguments`` before 0.12) and the
``is_<package>_available`` probes ``trl.import_utils`` had in some release. Nothing here imports TRL.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
from typing import Optional

# -- is_<package>_available ------------------------------------------------------------------------------
# name -> the distribution/module it looks for (the names some release of trl.import_utils had).
AVAILABILITY = {
    "is_peft_available": "peft", "is_unsloth_available": "unsloth", "is_diffusers_available": "diffusers",
    "is_pil_available": "PIL", "is_bitsandbytes_available": "bitsandbytes", "is_torchvision_available": "torchvision",
    "is_rich_available": "rich", "is_wandb_available": "wandb", "is_sklearn_available": "sklearn",
    "is_liger_kernel_available": "liger_kernel", "is_llmblender_available": "llm_blender",
    "is_llm_blender_available": "llm_blender", "is_deepspeed_available": "deepspeed",
    "is_mergekit_available": "mergekit", "is_vllm_available": "vllm", "is_fastapi_available": "fastapi",
    "is_pydantic_available": "pydantic", "is_requests_available": "requests", "is_uvicorn_available": "uvicorn",
    "is_vllm_ascend_available": "vllm_ascend", "is_joblib_available": "joblib", "is_jmespath_available": "jmespath",
    "is_math_verify_available": "math_verify", "is_weave_available": "weave", "is_aiohttp_available": "aiohttp",
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def availability(name: str):
    """The ``is_<package>_available()`` function for ``name``: True when the package can be imported."""
    module = AVAILABILITY[name]

    def probe(*_args, **_kwargs) -> bool:
        return _importable(module)

    probe.__name__ = probe.__qualname__ = name
    probe.__doc__ = f"trlshim: whether {module!r} can be imported (TRL's {name}, which the installed TRL lacks)."
    return probe


def _version(dist: str):
    from packaging.version import Version

    try:
        return Version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None


def is_transformers_greater_than(current_version: str) -> bool:
    """TRL <= 0.11: the installed transformers is at least ``current_version``."""
    from packaging.version import Version

    have = _version("transformers")
    return have is not None and have >= Version(current_version)


def is_torch_greater_2_0() -> bool:
    """TRL <= 0.11: torch >= 2.0."""
    from packaging.version import Version

    have = _version("torch")
    return have is not None and have >= Version("2.0")


def is_accelerate_greater_20_0() -> bool:
    """TRL <= 0.11: accelerate >= 0.20.0."""
    from packaging.version import Version

    have = _version("accelerate")
    return have is not None and have >= Version("0.20.0")


def is_xpu_available() -> bool:
    """TRL <= 0.9: an Intel XPU is usable (through accelerate)."""
    try:
        from accelerate.utils import is_xpu_available as probe
    except ImportError:
        return False
    return bool(probe())


def is_npu_available() -> bool:
    """TRL <= 0.9: an Ascend NPU is usable (through accelerate)."""
    try:
        from accelerate.utils import is_npu_available as probe
    except ImportError:
        return False
    return bool(probe())


# -- model helpers ------------------------------------------------------------------------------------------

def get_kbit_device_map() -> Optional[dict]:
    """TRL 0.7-1.7: the device map for a k-bit (quantized) model: the whole model on this process's
    accelerator, or None without one."""
    import torch

    xpu = getattr(torch, "xpu", None)
    if not (torch.cuda.is_available() or (xpu is not None and xpu.is_available())):
        return None
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'" + CHATML_START + "' + message['role'] + '\n' + message['content'] + '"
    + CHATML_END + "' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '" + CHATML_START + "assistant\n' }}"
    "{% endif %}"
)


def setup_chat_format(model, tokenizer, format: Optional[str] = "chatml", resize_to_multiple_of: Optional[int] = None):
    """TRL 0.7.11-0.25: give ``tokenizer`` the ChatML template and its two special tokens (``<|im_start|>`` as
    BOS, ``<|im_end|>`` as EOS and PAD), grow ``model``'s embeddings to the new vocabulary and point the model's
    (and its generation config's) special token ids at them. Returns ``(model, tokenizer)``. TRL >= 0.26 has
    ``clone_chat_template`` instead (it copies another model's template)."""
    if getattr(tokenizer, "chat_template", None) is not None:
        raise ValueError("Chat template is already added to the tokenizer. If you want to overwrite it, please set it "
                         "to None")
    if format != "chatml":
        raise ValueError(f"Format {format} not available. Please use one of dict_keys(['chatml'])")
    tokenizer.eos_token = CHATML_END
    tokenizer.pad_token = CHATML_END
    tokenizer.bos_token = CHATML_START
    tokenizer.add_special_tokens({"additional_special_tokens": [CHATML_START, CHATML_END]})
    tokenizer.chat_template = CHATML_TEMPLATE
    model.resize_token_embeddings(new_num_tokens=len(tokenizer.get_vocab()), pad_to_multiple_of=resize_to_multiple_of)
    for cfg in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id = tokenizer.pad_token_id
            cfg.bos_token_id = tokenizer.bos_token_id
            cfg.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


# -- script argument dataclasses of TRL's example scripts -----------------------------------------------

def _help(text):
    return dataclasses.field(default=None, metadata={"help": text})


@dataclasses.dataclass
class ScriptArguments:
    """TRL 0.12's ``ScriptArguments`` (for releases before 0.12, which lack it): which dataset and splits a
    training script uses."""

    dataset_name: Optional[str] = dataclasses.field(default=None, metadata={"help": "the dataset name"})
    dataset_train_split: str = dataclasses.field(default="train", metadata={"help": "the split to train on"})
    dataset_test_split: str = dataclasses.field(default="test", metadata={"help": "the split to evaluate on"})
    config = None  # not a field: every TrlParser reads --config itself, and 0.13+ refuses a field of that name
    gradient_checkpointing_use_reentrant: bool = dataclasses.field(
        default=False, metadata={"help": "whether gradient checkpointing uses the reentrant variant"})
    ignore_bias_buffers: bool = dataclasses.field(
        default=False, metadata={"help": "debug: ignore boolean buffers of the model (DDP)"})


@dataclasses.dataclass
class SFTScriptArguments:
    """TRL 0.9-0.12's ``SFTScriptArguments`` (removed in 0.13; replaced by ``ScriptArguments``)."""

    dataset_name: str = dataclasses.field(default="timdettmers/openassistant-guanaco",
                                          metadata={"help": "the dataset name"})
    dataset_train_split: str = dataclasses.field(default="train", metadata={"help": "the split to train on"})
    dataset_test_split: str = dataclasses.field(default="test", metadata={"help": "the split to evaluate on"})
    config = None  # not a field: every TrlParser reads --config itself, and 0.13+ refuses a field of that name
    gradient_checkpointing_use_reentrant: bool = dataclasses.field(
        default=False, metadata={"help": "whether gradient checkpointing uses the reentrant variant"})


@dataclasses.dataclass
class SftScriptArguments:
    """TRL 0.8's ``SftScriptArguments`` (renamed ``SFTScriptArguments`` in 0.9): note the SFT options
    (``dataset_text_field``, ``max_seq_length``, ``packing``) a 0.8 script passes on to SFTTrainer itself."""

    dataset_name: str = dataclasses.field(default="timdettmers/openassistant-guanaco",
                                          metadata={"help": "the dataset name"})
    dataset_text_field: Optional[str] = _help("the text field of the dataset")
    dataset_train_name: str = dataclasses.field(default="train", metadata={"help": "the training split"})
    dataset_test_name: str = dataclasses.field(default="test", metadata={"help": "the evaluation split"})
    max_seq_length: int = dataclasses.field(default=512, metadata={"help": "the maximum sequence length"})
    packing: bool = dataclasses.field(default=False, metadata={"help": "whether to pack examples"})
    config = None  # not a field: every TrlParser reads --config itself, and 0.13+ refuses a field of that name
    gradient_checkpointing_use_reentrant: bool = dataclasses.field(
        default=False, metadata={"help": "whether gradient checkpointing uses the reentrant variant"})
