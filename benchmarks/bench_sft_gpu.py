"""TRL SFTTrainer on one GPU, side by side in one run: stock TRL, TRL + Liger, TRL through trlshim.

Same model (Llama-3.2-1B shape, random weights, bf16), same data (pre-tokenized random rows),
same SFTConfig as ../shared/bench/peers_gpu.py's ``trl_trainer`` (TRL's defaults otherwise:
gradient checkpointing on in 1.16). Each variant runs in a fresh subprocess so memory and
patches do not leak between them. Prints JSON and a table with ours/stock and ours/Liger.

    python benchmarks/bench_sft_gpu.py            # all three variants
    python benchmarks/bench_sft_gpu.py --variant ours   # (used internally)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

B, T, STEPS = 4, 2048, 16
VARIANTS = ("stock", "liger", "ours")
# "ours": trlshim with TRLSHIM_AUTO_PADDING_FREE=0 (the kernels alone, same batches as stock);
# "ours_pf": trlshim with its automatic padding-free batching on (its default);
# "ours_norope": kernels without RoPE routing (TRLSHIM_KERNELS_ROPE=0).
# Bisection variants: ours with only some kernels ("ours:rms_norm", "ours:swiglu", "ours:rope").
PROFILE = os.environ.get("BENCH_PROFILE") == "1"


def model_cfg(small):
    from transformers import LlamaConfig

    if small:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=1000)
    return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                       max_position_embeddings=8192, rope_theta=500000.0)


def run_variant(variant: str, small: bool) -> dict:
    only = variant.split(":", 1)[1].split("+") if ":" in variant else None
    variant = variant.split(":", 1)[0]
    if variant == "ours_pf":
        os.environ["TRLSHIM_AUTO_PADDING_FREE"] = "1"
    elif variant.startswith("ours"):
        os.environ["TRLSHIM_AUTO_PADDING_FREE"] = "0"
    if variant == "ours_norope":
        os.environ["TRLSHIM_KERNELS_ROPE"] = "0"
    if not variant.startswith("ours"):
        os.environ["TRLSHIM_DISABLE"] = "1"
    import torch

    if variant.startswith("ours"):
        import trlshim  # noqa: F401  (patches TRL in place; routes the kernels when the trainer is built)

        if only is not None:
            import functools

            import trlshim_kernels

            flags = {k: k in only for k in ("rms_norm", "swiglu", "rope")}
            trlshim_kernels.apply_to_model = functools.partial(trlshim_kernels.apply_to_model, **flags)
    import datasets
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

    b, t, steps = (2, 32, 4) if small else (B, T, STEPS)
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tk = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    V = model_cfg(small).vocab_size
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, V, (t,), generator=g).tolist()} for _ in range(b * (steps + 2))]
    ds = datasets.Dataset.from_list(rows)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = LlamaForCausalLM(model_cfg(small)).to(torch.bfloat16)
    extra = {"loss_type": os.environ["BENCH_LOSS_TYPE"]} if os.environ.get("BENCH_LOSS_TYPE") else {}
    cfg = trl.SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=b, max_steps=steps + 2,
                        logging_steps=1, report_to=[], bf16=cuda, use_liger_kernel=variant == "liger",
                        max_length=t, save_strategy="no", learning_rate=1e-5, dataloader_num_workers=0, **extra)
    pf = getattr(cfg, "padding_free", None)
    stamps = []

    prof = None

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            nonlocal prof
            if PROFILE and len(stamps) == 4 and cuda:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                          torch.profiler.ProfilerActivity.CUDA])
                prof.__enter__()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            if prof is not None and len(stamps) == 5:
                prof.__exit__(None, None, None)
                print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14), file=sys.stderr)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8), file=sys.stderr)

    trainer = trl.SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tk, callbacks=[Clock()])
    out = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    logged = {k: [e.get(k) for e in trainer.state.log_history if "loss" in e] for k in ("mean_token_accuracy", "entropy")}
    steady = (len(stamps) - 3) * b * t / (stamps[-1] - stamps[2]) if len(stamps) > 3 else float("nan")
    dts = sorted(y - x for x, y in zip(stamps[2:], stamps[3:]))
    median = b * t / dts[len(dts) // 2] if dts else float("nan")
    handle = getattr(trainer, "_trlshim_kernels", None)
    return {
        "variant": variant, "trl": trl.__version__,
        "tok_s": (steps + 2) * b * t / out.metrics["train_runtime"],  # as peers_gpu.py counts it
        "steady_tok_s": steady,
        "median_step_tok_s": median,
        "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "losses": losses,
        "logged": logged,
        "loss_type": getattr(trainer.args, "loss_type", None),
        "kernels": dict(handle.applied) if handle is not None else None,
        "padding_free": [pf, getattr(trainer.args, "padding_free", None)],
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT") or tempfile.gettempdir())
    a = ap.parse_args()
    if a.variant:
        print("RESULT " + json.dumps(run_variant(a.variant, a.small)), flush=True)
        return
    res = {}
    names = [v for v in os.environ.get("BENCH_VARIANTS", ",".join(VARIANTS)).split(",") if v]
    for v in names:
        cmd = [sys.executable, __file__, "--variant", v] + (["--small"] if a.small else [])
        p = subprocess.run(cmd, capture_output=True, text=True)
        if PROFILE:
            with open(os.path.join(a.out, f"profile_{v.replace(':', '_').replace('+', '_')}.txt"), "w") as f:
                f.write(p.stderr[-20000:])
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        res[v] = json.loads(line[7:]) if line else {"error": (p.stderr or p.stdout)[-1500:]}
        print(v, json.dumps(res[v])[:600], flush=True)
    stock, liger = (res.get(v, {}).get("tok_s") for v in ("stock", "liger"))
    for v in names:
        mine = res[v].get("tok_s") if v.startswith("ours") else None
        if mine and stock:
            res[f"{v}_over_stock"] = mine / stock
        if mine and liger:
            res[f"{v}_over_liger"] = mine / liger
    json.dump(res, open(os.path.join(a.out, "sft_gpu.json"), "w"), indent=1)
    print(json.dumps({k: v for k, v in res.items() if "_over_" in k}))
    for v in names:
        r = res[v]
        if "error" in r:
            print(f"{v:6s} ERROR {r['error'][-300:]}")
        else:
            print(f"{v:11s} {r['tok_s']:10.0f} tok/s  steady {r['steady_tok_s']:10.0f}  median step "
                  f"{r.get('median_step_tok_s', float('nan')):10.0f}  peak {r['peak_GiB']:.2f} GiB  "
                  f"loss0 {r['losses'][0] if r['losses'] else float('nan'):.4f}  kernels {r['kernels']} pf {r.get('padding_free')}")


if __name__ == "__main__":
    main()
