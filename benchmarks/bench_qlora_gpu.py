"""QLoRA SFT on one GPU, side by side in one run: stock TRL, TRL + Liger, TRL through trlshim (issue 15).

A bitsandbytes nf4 base (double quantization, bf16 compute) of the Llama-3.2-1B shape with random
weights built from a config (no hub: saved once to a temporary folder, then loaded 4-bit), LoRA r=16
on every linear layer (``target_modules="all-linear"``), TRL 1.16 defaults otherwise (bf16, gradient
checkpointing on, ``prepare_model_for_kbit_training`` by TRL), batch 4 x 2048 random token rows, 15
timed steps after 2 warm-up steps. Each variant runs in its own subprocess (memory and patches do not
leak; a failing variant is recorded with its error, never fatal). Writes JSON to the path given:
per variant median step tokens/s, peak memory, losses, the kernels trlshim routed and what it skipped.

    python3 benchmarks/bench_qlora_gpu.py OUT.json          # stock, liger, ours
    BENCH_VARIANTS=stock,ours python3 benchmarks/bench_qlora_gpu.py OUT.json
    SMALL=1 python benchmarks/bench_qlora_gpu.py /tmp/q.json   # CPU smoke test (tiny shape, no bnb needed)

The GPU image ('cuda': torch 2.11, transformers 5.17, accelerate 1.15, peft, tokenizers, pyarrow,
pandas, xxhash) lacks trl, datasets (and its dill, multiprocess), liger-kernel and bitsandbytes.
Carry them as wheels (Python 3.12, manylinux x86_64), with trlshim itself, in .whl/ of the checkout:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
        -d .whl trl==1.16.0 datasets==5.1.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel bitsandbytes
    pip wheel --no-deps -w .whl .

and on the GPU machine (one call, ~6 min):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
        PYTHONPATH=/tmp/site python3 benchmarks/bench_qlora_gpu.py $OUT/qlora_gpu.json
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

SMALL = os.environ.get("SMALL") == "1"
B, T, STEPS, WARMUP = (2, 64, 3, 1) if SMALL else (4, 2048, 15, 2)
VARIANTS = ("stock", "liger", "ours")
TIMEOUT = 100 if not SMALL else 300  # per variant: three variants fit a ~6 min call


def model_cfg():
    from transformers import LlamaConfig

    if SMALL:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                       max_position_embeddings=8192, rope_theta=500000.0)


def save_base(path: str) -> None:
    """Random bf16 weights of the shape, saved once: every variant loads the same base."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(model_cfg()).to(torch.bfloat16).save_pretrained(path)


def run_variant(variant: str, base: str) -> dict:
    if variant == "ours":
        os.environ.setdefault("TRLSHIM_AUTO_PADDING_FREE", "0")  # the kernels alone: same batches as stock
        import trlshim  # noqa: F401  (patches TRL in place; routes the kernels when the trainer is built)
    else:
        os.environ["TRLSHIM_DISABLE"] = "1"
    import datasets
    import torch
    import trl
    from peft import LoraConfig
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        PreTrainedTokenizerFast,
        TrainerCallback,
    )

    cuda = torch.cuda.is_available()
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tk = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    V = model_cfg().vocab_size
    g = torch.Generator().manual_seed(0)
    ds = datasets.Dataset.from_list(
        [{"input_ids": torch.randint(3, V, (T,), generator=g).tolist()} for _ in range(B * (STEPS + WARMUP))])
    if cuda:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant, device_map={"": 0},
                                                     dtype=torch.bfloat16)
    else:  # smoke test of the script only
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    peft = LoraConfig(r=16, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    cfg = trl.SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=B, max_steps=STEPS + WARMUP,
                        logging_steps=1, report_to=[], bf16=cuda, use_liger_kernel=variant == "liger",
                        max_length=T, save_strategy="no", dataloader_num_workers=0)
    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer = trl.SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tk, peft_config=peft,
                             callbacks=[Clock()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = [stamps[i + 1] - stamps[i] for i in range(0, len(stamps) - 1, 2)][WARMUP:]
    steps.sort()
    handle = getattr(trainer, "_trlshim_kernels", None)
    quantized = sorted({type(m).__name__ for m in trainer.model.modules() if "4bit" in type(m).__name__})
    return {
        "variant": variant, "trl": trl.__version__, "torch": torch.__version__,
        "median_step_tok_s": B * T / steps[len(steps) // 2] if steps else None,
        "step_s": steps,
        "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "gradient_checkpointing": cfg.gradient_checkpointing, "loss_type": getattr(cfg, "loss_type", None),
        "quantized_layers": quantized,
        "kernels": dict(handle.applied) if handle is not None else None,
        "kernels_skipped": dict(handle.skipped) if handle is not None else None,
        "kernels_fallbacks": dict(handle.fallbacks) if handle is not None else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--variant":
        print("RESULT " + json.dumps(run_variant(sys.argv[2], sys.argv[3])), flush=True)
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "qlora_gpu.json")
    res = {"shape": {"batch": B, "seq": T, "steps": STEPS, "warmup": WARMUP}}
    names = [v for v in os.environ.get("BENCH_VARIANTS", ",".join(VARIANTS)).split(",") if v]
    with tempfile.TemporaryDirectory() as base:
        try:
            save_base(base)
        except Exception as e:
            res["error"] = f"building the base model: {type(e).__name__}: {e}"
            names = []
        for v in names:
            try:
                p = subprocess.run([sys.executable, __file__, "--variant", v, base], capture_output=True, text=True,
                                   timeout=TIMEOUT)
                line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
                res[v] = json.loads(line[7:]) if line else {"error": (p.stderr or p.stdout)[-2000:], "rc": p.returncode}
            except subprocess.TimeoutExpired as e:
                res[v] = {"error": f"timed out after {TIMEOUT}s", "stderr": str(e.stderr or "")[-1000:]}
            print(v, json.dumps(res[v])[:600], flush=True)
            with open(out, "w") as f:  # after every variant: a later timeout keeps what was measured
                json.dump(res, f, indent=1)
    for v in ("stock", "liger"):
        mine, theirs = (res.get(k, {}).get("median_step_tok_s") for k in ("ours", v))
        if mine and theirs:
            res[f"ours_over_{v}"] = mine / theirs
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if "_over_" in k}))


if __name__ == "__main__":
    main()
