"""An offline stand-in for the hub repositories TRL's own SFT tests name.

``python transparency_hub.py HUB_DIR`` builds, in the huggingface_hub cache layout
(``models--org--name/snapshots/<hash>/`` + ``refs/main``), a tiny randomly initialised model of
the same architecture for each model id, with a locally trained tokenizer (no download), and
writes the datasets the tests load (``trl-internal-testing/zen`` configs, ``toolcall``) as
parquet files under ``HUB_DIR/datasets/<org>/<name>/<config>/<split>.parquet``; the pytest plugin
``transparency_plugin`` redirects ``datasets.load_dataset`` to them. Point ``HF_HUB_CACHE`` at
``HUB_DIR`` and set ``HF_HUB_OFFLINE=1``.

The stand-ins are not TRL's files: token ids, vocabulary and chat templates differ, so tests
that assert exact ids can fail, identically with and without trlshim (what the transparency
test compares is the *set* of passing tests).
"""
from __future__ import annotations

import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

REVISION = "0" * 40

# Qwen-style ChatML template with generation markers (what TRL's tiny Qwen tokenizers carry).
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _config(arch: str, vocab: int):
    import transformers as tf

    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512)
    if arch == "Qwen2ForCausalLM":
        return tf.Qwen2Config(**small, tie_word_embeddings=True)
    if arch == "Qwen3ForCausalLM":
        return tf.Qwen3Config(**small, head_dim=4)
    if arch == "Qwen3MoeForCausalLM":
        return tf.Qwen3MoeConfig(**small, head_dim=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8)
    if arch == "GPTNeoXForCausalLM":
        small.pop("num_key_value_heads")
        return tf.GPTNeoXConfig(**small)
    if arch == "LlamaForCausalLM":
        return tf.LlamaConfig(**small)
    if arch == "GPT2LMHeadModel":  # TRL <= 0.12's tests (the crossversion session)
        return tf.GPT2Config(n_embd=16, n_layer=2, n_head=4, n_inner=32, vocab_size=vocab, n_positions=512)
    raise KeyError(arch)


MODELS = {
    "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": "Qwen2ForCausalLM",
    "trl-internal-testing/tiny-Qwen3ForCausalLM": "Qwen3ForCausalLM",
    "trl-internal-testing/tiny-Qwen3MoeForCausalLM": "Qwen3MoeForCausalLM",
    "trl-internal-testing/tiny-GPTNeoXForCausalLM": "GPTNeoXForCausalLM",
    "trl-internal-testing/tiny-LlamaForCausalLM-3.2": "LlamaForCausalLM",
    "Qwen/Qwen3-4B": "Qwen3ForCausalLM",
    "trl-internal-testing/dummy-GPT2-correct-vocab": "GPT2LMHeadModel",
}


def _tokenizer():
    import helpers
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(helpers._tokenizer_json()),
        bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    tok.model_max_length = 512
    return tok


def build_models(hub: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer()
    for repo, arch in MODELS.items():
        snap = os.path.join(hub, "models--" + repo.replace("/", "--"), "snapshots", REVISION)
        if os.path.exists(os.path.join(snap, "config.json")):
            continue
        torch.manual_seed(0)
        try:
            cfg = _config(arch, vocab=len(tok) + 8)
        except AttributeError:  # an architecture this transformers lacks: tests needing it fail both ways
            continue
        cfg.pad_token_id = tok.pad_token_id
        cfg.eos_token_id = tok.eos_token_id
        model = AutoModelForCausalLM.from_config(cfg)
        model.save_pretrained(snap)
        tok.save_pretrained(snap)
        refs = os.path.join(hub, "models--" + repo.replace("/", "--"), "refs")
        os.makedirs(refs, exist_ok=True)
        with open(os.path.join(refs, "main"), "w") as fh:
            fh.write(REVISION)


def _sentence(rng, lo=4, hi=14):
    import helpers

    return " ".join(rng.choice(helpers.WORDS) for _ in range(rng.randint(lo, hi)))


def zen_rows(config: str, n: int, seed: int):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p, c = _sentence(rng), _sentence(rng)
        if config == "standard_language_modeling":
            rows.append({"text": p + " " + c})
        elif config == "conversational_language_modeling":
            rows.append({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]})
        elif config == "standard_prompt_completion":
            rows.append({"prompt": p, "completion": " " + c})
        elif config == "conversational_prompt_completion":
            rows.append({"prompt": [{"role": "user", "content": p}],
                         "completion": [{"role": "assistant", "content": c}]})
        elif config == "standard_prompt_only":
            rows.append({"prompt": p})
        elif config == "conversational_prompt_only":
            rows.append({"prompt": [{"role": "user", "content": p}]})
        else:
            raise KeyError(config)
    return rows


ZEN = ("standard_language_modeling", "conversational_language_modeling", "standard_prompt_completion",
       "conversational_prompt_completion", "standard_prompt_only", "conversational_prompt_only")


def build_datasets(hub: str) -> None:
    from datasets import Dataset

    for config in ZEN:
        for split, n, seed in (("train", 17, 1), ("test", 2, 2)):
            path = os.path.join(hub, "datasets", "trl-internal-testing", "zen", config, f"{split}.parquet")
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Dataset.from_list(zen_rows(config, n, seed)).to_parquet(path)


def main(hub: str) -> None:
    os.makedirs(hub, exist_ok=True)
    build_datasets(hub)
    build_models(hub)


if __name__ == "__main__":
    main(sys.argv[1])
