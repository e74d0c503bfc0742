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

from corpus._support import Recorder, fed_examples  # noqa: F401 - trlshim-free: migrated scripts use them too

from trlshim.tiny import CHAT_TEMPLATE, sentences, tokenizer_json
from trlshim.tiny import make_model as _make_model
from trlshim.tiny import make_tokenizer as _make_tokenizer

PLAIN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
WORDS = (
    "the cat dog sat on a mat and ran to house tree big small red blue green fast slow one two three "
    "four five six seven eight nine ten answer question is what why how yes no hello world model data "
    "train token loss learn shim version old new"
).split()


def sentence(rng, n_min=4, n_max=14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max)))


@functools.cache
def _tokenizer_json() -> str:
    return tokenizer_json(sentences(400, 0, WORDS))


def make_tokenizer(chat_template: str = CHAT_TEMPLATE):
    return _make_tokenizer(_tokenizer_json(), chat_template)


def make_model(vocab_size: int = 320, seed: int = 0, **kw):
    return _make_model(vocab_size=vocab_size, seed=seed, **kw)


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


# --- training-semantics helpers (issue 3) ---------------------------------------------------

def run_sft(tmp_path, dataset, tokenizer=None, model=None, steps=1, data_collator=None, formatting_func=None,
            train=True, batch_size=4, **config):
    """Train ``steps`` steps with trl.SFTTrainer (the patched one) and record what the model is fed.

    ``config`` goes to ``trl.SFTConfig`` (auto padding-free is off unless given). Returns (recorder, trainer).
    """
    import trl

    tokenizer = tokenizer or make_tokenizer()
    model = model or make_model()
    config.setdefault("auto_padding_free", False)
    cfg = trl.SFTConfig(**{**training_kwargs(tmp_path, max_steps=steps, per_device_train_batch_size=batch_size),
                           **config})
    rec = Recorder(model)
    kw = dict(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer)
    if data_collator is not None:
        kw["data_collator"] = data_collator
    if formatting_func is not None:
        kw["formatting_func"] = formatting_func
    trainer = trl.SFTTrainer(**kw)
    if train:
        trainer.train()
    rec.remove()
    return rec, trainer


def chat_rows(n=8, seed=3, key="messages", sharegpt=False):
    """Conversations of user/assistant turns (2 turns each)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        turns = []
        for _t in range(2):
            u, a = sentence(rng, 2, 5), sentence(rng, 2, 5)
            if sharegpt:
                turns += [{"from": "human", "value": u}, {"from": "gpt", "value": a}]
            else:
                turns += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        rows.append({key: turns})
    return rows


def prompt_completion_rows(n=8, seed=4):
    rng = random.Random(seed)
    return [{"prompt": sentence(rng, 3, 6) + " ?", "completion": " " + sentence(rng, 2, 5)} for _ in range(n)]
