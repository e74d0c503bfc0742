"""Test fixtures built in-process: a tiny Llama, a locally trained tokenizer with a chat
template (with ``{% generation %}`` markers), in-memory datasets, and a recorder of what the
model is fed. Nothing comes from a hub."""
from __future__ import annotations

import functools
import inspect
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + eos_token }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)
PLAIN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
WORDS = (
    "the cat dog sat on a mat and ran to house tree big small red blue green fast slow one two three "
    "four five six seven eight nine ten answer question is what why how yes no hello world model data "
    "train token loss learn shim version old new"
).split()


def sentence(rng, n_min=4, n_max=14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max)))


@functools.lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator([sentence(rng) for _ in range(400)], trainer=trainer)
    return tok.to_str()


def make_tokenizer(chat_template: str = CHAT_TEMPLATE):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tok.chat_template = chat_template
    tok.model_max_length = 512
    return tok


def make_model(vocab_size: int = 320, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
    )
    try:
        cfg._attn_implementation = "eager"
    except Exception:
        pass
    return LlamaForCausalLM(cfg)


def texts(n: int = 24, seed: int = 1, n_min: int = 4, n_max: int = 14) -> list:
    rng = random.Random(seed)
    return [sentence(rng, n_min, n_max) for _ in range(n)]


def text_dataset(n: int = 24, field: str = "text", seed: int = 1, **kw):
    from datasets import Dataset

    return Dataset.from_list([{field: t} for t in texts(n, seed, **kw)])


def training_kwargs(output_dir, **overrides) -> dict:
    """TrainingArguments kwargs for a short, deterministic CPU run on any transformers."""
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    kw = dict(
        output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        report_to="none", save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    kw["use_cpu" if "use_cpu" in params else "no_cuda"] = True
    kw.update(overrides)
    return kw


class Recorder:
    """Records the inputs of every forward call of a model (a forward pre-hook)."""

    KEYS = ("input_ids", "labels", "attention_mask", "position_ids")

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not module.training:
            return None
        rec = {}
        if args:
            kwargs = dict(kwargs, input_ids=args[0])
        for key in self.KEYS:
            value = kwargs.get(key)
            if value is not None:
                rec[key] = value.detach().cpu().clone()
        self.calls.append(rec)
        return None

    def remove(self):
        self.handle.remove()

    @property
    def first(self):
        return self.calls[0]

    def rows(self, key="input_ids"):
        """Every training row seen, as lists with padding (per attention mask) removed."""
        out = []
        for call in self.calls:
            ids = call[key]
            mask = call.get("attention_mask")
            for i in range(ids.shape[0]):
                row = ids[i]
                if mask is not None:
                    row = row[mask[i].bool()]
                out.append(row.tolist())
        return out
