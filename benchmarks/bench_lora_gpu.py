"""TRL SFTTrainer at its defaults (gradient checkpointing on), LoRA r16 on all linear layers and full fine-tune:
stock TRL, TRL + Liger, TRL through trlshim with and without offloaded checkpoints, side by side in one run.

The workload of ``../shared/bench/lora_sft.py`` and ``../shared/bench/unsloth_sft.py`` (Llama-3.2-1B shape, random
weights, bf16, 4x2048 pre-tokenized random rows, 18 steps, lr 1e-5), so Unsloth's numbers from that script,
run in the same call, sit beside these. Each variant runs in a fresh subprocess. Per variant: median step
tok/s (steps 3-18), TRL's own count (train_runtime, cold start included), peak GiB over the whole run and the
peak of the forward and of the backward+optimizer separately (reset between them), the first losses.

    python benchmarks/bench_lora_gpu.py OUT.json [lora:stock,lora:liger,lora:ours,lora:ours_keep,full:...]
    SMALL=1 python benchmarks/bench_lora_gpu.py /tmp/x.json   # CPU smoke test of the script
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

SMALL = os.environ.get("SMALL") == "1"
DEFAULT = "lora:stock,lora:liger,lora:ours,lora:ours_keep,lora:ours_chunk,full:stock,full:liger,full:ours,full:ours_keep"
# ours: trlshim's default (offloaded checkpoints); ours_keep: TRLSHIM_OFFLOAD_CHECKPOINTS=0; ours_chunk: offload plus
# the MLP backward in token chunks (TRLSHIM_OFFLOAD_MLP_CHUNKS=1). BENCH_PROFILE=1: one steady step profiled;
# BENCH_TRACE=DIR also writes its timeline there (trace_MODE_VARIANT.json.gz), with the Trainer's phases labelled;
# BENCH_PROFILE=gpu records kernels and their launches only (a timeline whose gaps the profiler does not widen).
# BENCH_COLD=1: each variant with its own empty TRITON_CACHE_DIR (what a fresh machine compiles).


def child(mode: str, variant: str) -> dict:
    if os.environ.get("BENCH_COLD") == "1":  # an empty Triton cache for this run (what a fresh machine compiles)
        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-cold-")
    if variant.startswith("ours"):
        if variant == "ours_keep":
            os.environ["TRLSHIM_OFFLOAD_CHECKPOINTS"] = "0"
        os.environ["TRLSHIM_AUTO_PADDING_FREE"] = "0"  # fixed-length rows: nothing to gain, same batches as stock
        if variant == "ours_chunk":  # offload with the MLP backward in token chunks in the recompute (opt-in)
            os.environ["TRLSHIM_OFFLOAD_MLP_CHUNKS"] = "1"
        import trlshim_kernels.models as routed

        import trlshim  # noqa: F401

        for item in filter(None, os.environ.get("BENCH_ROUTE", "").split(",")):  # e.g. lora_linear=0
            key, _, val = item.partition("=")
            routed.ROUTE[key] = val != "0"
        if os.environ.get("BENCH_KEEP_TAIL"):  # keep exactly that many last layers unrecomputed (a sweep)
            import trlshim_kernels

            offload = trlshim_kernels.offload_checkpoints
            trlshim_kernels.offload_checkpoints = lambda model, **kw: offload(
                model, **{**kw, "keep_tail": int(os.environ["BENCH_KEEP_TAIL"])})
    import datasets
    import torch
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

    cuda = torch.cuda.is_available()
    if SMALL:
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=1000)
        b, t, steps = 2, 32, 4
    else:
        cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                          max_position_embeddings=8192, rope_theta=500000.0)
        b, t, steps = 4, 2048, 18
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    if cuda:
        model = model.cuda()
    tk = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    g = torch.Generator().manual_seed(0)
    ds = datasets.Dataset.from_list([{"input_ids": torch.randint(4, cfg.vocab_size, (t,), generator=g).tolist()}
                                     for _ in range(b * (steps + 2))])
    phases = {"forward": 0.0, "backward": 0.0}
    stamps = []

    def after_forward(module, inputs, output):
        if cuda and module.training:
            phases["forward"] = max(phases["forward"], torch.cuda.max_memory_allocated() / 2**30)
            torch.cuda.reset_peak_memory_stats()

    prof = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            if os.environ.get("BENCH_PROFILE") and len(stamps) == 6:  # one steady step under the profiler
                acts = [torch.profiler.ProfilerActivity.CUDA]  # BENCH_PROFILE=gpu: kernels and launches only
                if os.environ["BENCH_PROFILE"] != "gpu":  # host ops too (their recording slows the host)
                    acts.append(torch.profiler.ProfilerActivity.CPU)
                prof["p"] = torch.profiler.profile(activities=acts)
                prof["p"].__enter__()

        def on_step_end(self, *a, **k):
            if "p" in prof and len(stamps) == 6:
                if cuda:
                    torch.cuda.synchronize()
                prof["p"].__exit__(None, None, None)
                p = prof.pop("p")
                if os.environ.get("BENCH_TRACE"):  # the step's timeline (GPU gaps, what the host did meanwhile)
                    import gzip

                    raw = os.path.join(os.environ["BENCH_TRACE"], f"trace_{mode}_{variant}.json")
                    p.export_chrome_trace(raw)
                    with open(raw, "rb") as src, gzip.open(raw + ".gz", "wb") as dst:
                        dst.write(src.read())
                    os.remove(raw)
                ka = p.key_averages()
                print(ka.table(sort_by="self_cuda_time_total", row_limit=18), file=sys.stderr)
                print(ka.table(sort_by="self_cpu_time_total", row_limit=12), file=sys.stderr)
            if cuda:
                phases["backward"] = max(phases["backward"], torch.cuda.max_memory_allocated() / 2**30)
                torch.cuda.reset_peak_memory_stats()

    args = trl.SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=b, max_steps=steps, logging_steps=1,
                         report_to=[], bf16=cuda, save_strategy="no", learning_rate=1e-5, max_length=t,
                         use_liger_kernel=variant == "liger", dataloader_num_workers=0)
    peft = None
    if mode == "lora":
        from peft import LoraConfig

        peft = LoraConfig(r=16, lora_alpha=16, task_type="CAUSAL_LM", target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    built = time.perf_counter()
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()],
                             peft_config=peft)
    trainer.model.register_forward_hook(after_forward)
    if os.environ.get("BENCH_TRACE"):
        label_phases(trainer)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out = trainer.train()
    if cuda:
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    dts = sorted(y - x for x, y in zip(stamps[2:], stamps[3:]))
    kernels = sys.modules.get("trlshim_kernels")
    lm = kernels.unwrap_model(trainer.model) if kernels else None
    return {
        "mode": mode, "variant": variant, "trl": trl.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "median_step_tok_s": b * t / dts[len(dts) // 2],
        "first_steps_s": [round(y - x, 3) for x, y in zip(stamps[:3], stamps[1:4])],  # cold start: compiles here
        "trl_count_tok_s": steps * b * t / out.metrics["train_runtime"],
        "build_and_train_s": round(stamps[-1] - built, 3),  # the trainer's construction (routing) to the end
        "compiled_variants": compiled_variants(),
        "compile_ahead": (dict(sys.modules["trlshim_kernels.compile_ahead"].STATS,
                               waited_s=round(sys.modules["trlshim_kernels._launch"].WAITED["s"], 3))
                          if kernels else None),
        "peak_GiB": max(phases.values()), "forward_peak_GiB": phases["forward"], "backward_peak_GiB": phases["backward"],
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e][:4],
        "gradient_checkpointing": args.gradient_checkpointing,
        "offloaded_layer_calls": kernels.offloaded_calls(lm) if kernels else None,
        "kept_layer_calls": kernels.kept_calls(lm) if kernels else None,
        "mlp_backward_now": sys.modules["trlshim_kernels.offload"].COUNTS["mlp_backward_now"] if kernels else None,
        "kernels": dict(trainer._trlshim_kernels.applied) if hasattr(trainer, "_trlshim_kernels") else None,
    }


def compiled_variants() -> dict:
    """How many variants of each trlshim kernel this process holds (Triton's in-memory caches; private API):
    beside ``compile_ahead.planned``, what the run compiled that the plan did not foresee."""
    names = {"rms_norm": ("_rms_fwd", "_rms_bwd"), "rope": ("_rope_kernel",), "swiglu": ("_glu_fwd", "_glu_bwd"),
             "cross_entropy": ("_ce_rows",)}
    out = {}
    for mod, kernels in names.items():
        m = sys.modules.get(f"trlshim_kernels.{mod}")
        for k in kernels if m else ():
            try:
                out[k] = sum(len(c[0]) for c in getattr(m, k).device_caches.values())
            except Exception as e:  # another Triton's internals
                out[k] = repr(e)[:80]
    return out


def label_phases(trainer):
    """Name the Trainer's phases in the profiler's timeline (instance attributes: only this trainer)."""
    import functools

    import torch

    def labelled(name, fn):
        @functools.wraps(fn)
        def run(*a, **k):
            with torch.profiler.record_function(name):
                return fn(*a, **k)
        return run

    for name in ("training_step", "compute_loss", "get_batch_samples", "_prepare_inputs", "_maybe_log_save_evaluate",
                 "floating_point_ops", "_track_num_input_tokens", "_clip_grad_norm", "_get_grad_norm", "log"):
        if hasattr(trainer, name):
            setattr(trainer, name, labelled(f"trainer.{name}", getattr(trainer, name)))
    for name in ("backward", "clip_grad_norm_"):
        setattr(trainer.accelerator, name, labelled(f"accelerator.{name}", getattr(trainer.accelerator, name)))
    cb = trainer.callback_handler
    for name in ("on_step_begin", "on_step_end", "on_log"):
        setattr(cb, name, labelled(f"callbacks.{name}", getattr(cb, name)))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        mode, variant = sys.argv[2].split(":")
        print("RESULT " + json.dumps(child(mode, variant)), flush=True)
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "lora_gpu.json")
    names = (sys.argv[2] if len(sys.argv) > 2 else DEFAULT).split(",")
    res = {}
    for name in names:
        p = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, timeout=400)
        if os.environ.get("BENCH_PROFILE"):
            with open(os.path.join(os.path.dirname(out), f"profile_{name.replace(':', '_')}.txt"), "w") as f:
                f.write(p.stderr[-30000:])
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        key = name if name not in res else f"{name}#{sum(k.split('#')[0] == name for k in res) + 1}"  # a rerun
        res[key] = json.loads(line[7:]) if line else {"error": (p.stderr or p.stdout)[-1500:]}
        print(key, json.dumps(res[key])[:700], flush=True)
    for mode in ("lora", "full"):
        for v in ("ours", "ours_keep", "ours_chunk"):
            mine = res.get(f"{mode}:{v}", {})
            for peer in ("stock", "liger"):
                other = res.get(f"{mode}:{peer}", {})
                for k in ("median_step_tok_s", "trl_count_tok_s", "peak_GiB"):
                    if mine.get(k) and other.get(k):
                        res.setdefault("ratios", {})[f"{mode}:{v}/{peer}:{k}"] = mine[k] / other[k]
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps(res.get("ratios", {}), indent=1))


if __name__ == "__main__":
    main()
