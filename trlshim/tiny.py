"""A tiny Llama and a tokenizer trained in-process (no hub): for ``trlshim demo`` and the tests."""
from __future__ import annotations

import json
import random
from importlib import resources

# A ChatML-like template with {% generation %} markers around assistant turns (assistant-only loss).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + eos_token }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]


def demo_texts() -> list:
    """The demo dataset shipped in the package (one {"text": ...} object per line)."""
    lines = resources.files("trlshim").joinpath("data/demo.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def tokenizer_json(corpus, vocab_size: int = 300) -> str:
    """A byte-level BPE trained on ``corpus`` with the special tokens above, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok.to_str()


def make_tokenizer(corpus_json: str, chat_template: str = CHAT_TEMPLATE, model_max_length: int = 512):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(corpus_json),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=SPECIALS[4:],
    )
    tok.chat_template = chat_template
    tok.model_max_length = model_max_length
    return tok


def make_model(vocab_size: int = 320, seed: int = 0, hidden: int = 32, layers: int = 2, tie: bool = False):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=tie,
    )
    cfg._attn_implementation = "eager"
    return LlamaForCausalLM(cfg)


def sentences(n: int, seed: int, words, n_min: int = 4, n_max: int = 14) -> list:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(n_min, n_max))) for _ in range(n)]
