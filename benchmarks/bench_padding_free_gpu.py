"""Automatic padding-free on one GPU, side by side in one run: stock TRL padded, TRL + Liger (its defaults),
stock TRL's own padding-free with flex attention, trlshim without padding-free (kernels only), and trlshim's
default (automatic padding-free through torch's variable-length flash kernel under SDPA).

Workload of ../shared/bench/packing_shim.py: Llama-3.2-1B shape, random weights, bf16, batch 8, 30 steps, the
same pre-tokenized rows for every variant; lengths lognormal (mean ~400, max 2047) and uniform 1536-2047.
Throughput counts real (labelled) tokens per second over steps 4-30 (steady) and over the whole train() call
(cold: compilation and autotuning included). Each variant runs in a fresh subprocess.

    python benchmarks/bench_padding_free_gpu.py OUT.json      # probe + every variant
    python benchmarks/bench_padding_free_gpu.py --probe        # the varlen kernel alone: signature, fwd/bwd error
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

SMALL = os.environ.get("SMALL") == "1"  # CPU smoke test of the script itself: tiny model, 6 steps
STEPS, BATCH, N_ROWS = (6, 8, 96) if SMALL else (30, 8, 480)
VARIANTS = {
    "lognormal": ["stock_padded", "liger_padded", "flex_pf", "shim_padded", "shim_auto"],
    "uniform": ["stock_padded", "shim_padded", "shim_auto"],
}


def probe() -> dict:
    """torch's varlen kernel against per-sequence SDPA, forward and backward, bf16, GQA shape of the 1B model."""
    import inspect

    import torch
    import torch.nn.functional as F

    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as e:
        out["varlen"] = f"missing: {e}"
        return out
    out["signature"] = str(inspect.signature(varlen_attn))
    from trlshim.patches.sft import varlen

    torch.manual_seed(0)
    lens = [700, 13, 2047, 256, 90]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device="cuda")
    T = sum(lens)
    q = torch.randn(T, 32, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(T, 8, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(T, 8, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(T, 32, 64, device="cuda", dtype=torch.bfloat16)
    got = varlen._varlen(q, k, v, cu, max(lens), 0.125, 0.0)
    (got * g).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = varlen.reference(qf, kf, vf, cu, 0.125)
    (ref * g.float()).sum().backward()

    def rel(a, b):
        return float((a.float() - b).norm() / b.norm())

    out.update(out_rel=rel(got, ref), dq_rel=rel(grads[0], qf.grad), dk_rel=rel(grads[1], kf.grad),
               dv_rel=rel(grads[2], vf.grad))
    # bf16 SDPA (flash backend) on the longest sequence, the same comparison: the noise floor
    s, e = 700 + 13, 700 + 13 + 2047
    sd = F.scaled_dot_product_attention(q[s:e].transpose(0, 1)[None], k[s:e].transpose(0, 1)[None].repeat_interleave(4, 1),
                                        v[s:e].transpose(0, 1)[None].repeat_interleave(4, 1), is_causal=True, scale=0.125)
    out["sdpa_bf16_out_rel_same_seq"] = rel(sd[0].transpose(0, 1), ref[s:e])
    out["varlen_out_rel_same_seq"] = rel(got[s:e], ref[s:e])
    for _ in range(3):
        varlen._varlen(q, k, v, cu, max(lens), 0.125, 0.0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        varlen._varlen(q, k, v, cu, max(lens), 0.125, 0.0)
    torch.cuda.synchronize()
    out["fwd_ms"] = (time.perf_counter() - t0) / 20 * 1e3
    return out


def child(variant: str, dist: str) -> dict:
    if variant.startswith("shim"):
        if variant == "shim_padded":
            os.environ["TRLSHIM_AUTO_PADDING_FREE"] = "0"
        else:
            os.environ.pop("TRLSHIM_AUTO_PADDING_FREE", None)
        import trlshim  # noqa: F401
        from trlshim import report
    import datasets
    import torch
    import transformers
    import trl
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    V = 1000 if SMALL else 128256
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if SMALL else \
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32)
    cfg = LlamaConfig(**size, num_key_value_heads=size["num_attention_heads"] // 4, vocab_size=V,
                      tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=500000.0)
    cuda = torch.cuda.is_available()
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tk = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    g = torch.Generator().manual_seed(0)
    if dist == "lognormal":
        lens = torch.exp(5.7 + 0.8 * torch.randn(N_ROWS, generator=g)).clamp(16, 2047).long()
    else:
        lens = torch.randint(1536, 2048, (N_ROWS,), generator=g)
    rows = [{"input_ids": torch.randint(3, V, (int(n),), generator=g).tolist()} for n in lens]
    ds = datasets.Dataset.from_list(rows)
    torch.manual_seed(0)
    if variant == "flex_pf":
        cfg._attn_implementation = "flex_attention"
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).cuda() if cuda else LlamaForCausalLM(cfg)

    class Clock(TrainerCallback):
        def __init__(self):
            self.losses, self.t = [], []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.t.append(time.perf_counter())

    clock = Clock()
    kw = dict(padding_free=True, max_length=None) if variant == "flex_pf" else dict(max_length=2048)
    if variant == "liger_padded":
        kw["use_liger_kernel"] = True
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, max_steps=STEPS,
                     logging_steps=1, report_to=[], bf16=cuda, save_strategy="no", learning_rate=1e-5, **kw)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tk, callbacks=[clock])
    fed, attn = [], set()

    def hook(m, a, k):
        labels = k.get("labels")
        fed.append(int((labels != -100).sum()) if labels is not None else 0)
        attn.add(m.config._attn_implementation)

    model.register_forward_pre_hook(hook, with_kwargs=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.train()
    if cuda:
        torch.cuda.synchronize()
    t_end = time.perf_counter()
    steady = (t_end - clock.t[3]) if len(clock.t) > 3 else float("nan")
    out = {
        "variant": variant, "dist": dist, "trl": trl.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__, "tok_s_steady": sum(fed[3:]) / steady, "tok_s_cold": sum(fed) / (t_end - t0),
        "first_step_s": clock.t[1] - clock.t[0] if len(clock.t) > 1 else None,
        "trl_train_runtime_s": result.metrics.get("train_runtime"), "real_tokens": sum(fed),
        "losses": clock.losses, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "attn_during_training": sorted(attn), "attn_after": model.config._attn_implementation,
    }
    if variant.startswith("shim"):
        out["decisions"] = [m for m in report.applied() if "padding-free" in m]
    return out


def main(path: str | None) -> None:
    results = {"probe": None, "runs": []}
    p = subprocess.run([sys.executable, __file__, "--probe"], capture_output=True, text=True, timeout=120)
    if SMALL:
        p = subprocess.CompletedProcess(p.args, 0, "", "")
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    results["probe"] = json.loads(lines[-1][7:]) if lines else {"failed": p.stderr[-1500:]}
    print("probe", json.dumps(results["probe"]), flush=True)
    for dist, variants in VARIANTS.items():
        for variant in variants:
            try:
                p = subprocess.run([sys.executable, __file__, "--child", variant, dist], capture_output=True,
                                   text=True, timeout=int(os.environ.get("BENCH_TIMEOUT", "150")))
                lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
                run = json.loads(lines[-1][7:]) if lines else {"variant": variant, "dist": dist,
                                                              "failed": p.stderr[-2000:]}
            except subprocess.TimeoutExpired:
                run = {"variant": variant, "dist": dist, "failed": "timeout"}
            results["runs"].append(run)
            brief = {k: v for k, v in run.items() if k != "losses"}
            print(json.dumps(brief), flush=True)
            if path:
                with open(path, "w") as f:
                    json.dump(results, f, indent=1)
    summarize(results)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def summarize(results: dict) -> None:
    by = {(r["dist"], r["variant"]): r for r in results["runs"] if "failed" not in r}
    out = {}
    for dist in VARIANTS:
        base = by.get((dist, "stock_padded"))
        for variant in VARIANTS[dist]:
            r = by.get((dist, variant))
            if not r or not base:
                continue
            line = {"steady": r["tok_s_steady"], "cold": r["tok_s_cold"], "peak_gib": r["peak_gib"],
                    "steady_over_stock_padded": r["tok_s_steady"] / base["tok_s_steady"],
                    "cold_over_stock_padded": r["tok_s_cold"] / base["tok_s_cold"]}
            liger = by.get((dist, "liger_padded"))
            if liger:
                line["steady_over_liger"] = r["tok_s_steady"] / liger["tok_s_steady"]
                line["cold_over_liger"] = r["tok_s_cold"] / liger["tok_s_cold"]
            out[f"{dist}.{variant}"] = line
        a, b = by.get((dist, "shim_auto")), by.get((dist, "shim_padded"))
        if a and b and a["losses"] and b["losses"]:
            out[f"{dist}.loss_max_rel_diff.shim_auto_vs_shim_padded"] = max(
                abs(x - y) / abs(y) for x, y in zip(a["losses"], b["losses"]))
        s, li = by.get((dist, "stock_padded")), by.get((dist, "liger_padded"))
        if s and li and s["losses"] and li["losses"]:
            out[f"{dist}.loss_max_rel_diff.liger_vs_stock (bf16 noise reference)"] = max(
                abs(x - y) / abs(y) for x, y in zip(li["losses"], s["losses"]))
    results["summary"] = out
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print("RESULT " + json.dumps(probe()), flush=True)
    elif sys.argv[1:2] == ["--child"]:
        print("RESULT " + json.dumps(child(sys.argv[2], sys.argv[3])), flush=True)
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
