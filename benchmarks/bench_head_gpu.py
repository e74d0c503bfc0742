"""The LM head of TRL >= 1.15's ``fused_lm_head=True`` path, side by side: TRL's ``_ChunkedLogProbFunction``
(logits recomputed in the backward: four vocabulary-wide GEMMs with a trained head) against trlshim_kernels'
``linear_logprobs`` (gradients made in the forward: three), forward + backward of ``-log_probs.sum() / N`` with the
entropy and top-1 outputs SFT asks for. Per variant: median ms (CUDA events, 10 after 3 warm-up), peak extra
GiB above the inputs, and each gradient's relative error against a float32 reference of the same bf16 inputs.

    python benchmarks/bench_head_gpu.py OUT.json      # N=8192 H=2048 V=128256 bf16, trained and frozen head
"""
from __future__ import annotations

import functools
import json
import sys

import torch


def _ours(linear_logprobs, t, chunk, h, w):
    return linear_logprobs(h, w, t, chunk_size=chunk)[0]


def _step(fn, h, w, n):
    h.grad = None
    w.grad = None
    (-fn(h, w).sum() / n).backward()


def main():
    import trl
    from trl.trainer import utils as tu
    from trlshim_kernels.logprobs import linear_logprobs

    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/head.json"
    N, H, V = 8192, 2048, 128256
    g = torch.Generator(device="cuda").manual_seed(0)
    h0 = torch.randn(N, H, device="cuda", generator=g).to(torch.bfloat16)
    w0 = (torch.randn(V, H, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    res = {"trl": trl.__version__, "torch": torch.__version__, "device": torch.cuda.get_device_name(), "N": N, "H": H,
           "V": V}

    def ref_grads(train_w):
        h, w = h0.float().requires_grad_(), w0.float().requires_grad_(train_w)
        lp = torch.log_softmax(h @ w.t(), -1).gather(1, t[:, None])[:, 0]
        (-lp.sum() / N).backward()
        return h.grad, (w.grad if train_w else None)

    trl_fn = tu._ChunkedLogProbFunction
    chunk = getattr(tu, "_CHUNKED_LOGPROB_CHUNK_SIZE", 32768)
    variants = {"trl": lambda h, w: trl_fn.apply(h, w, None, t, 1.0, chunk, None, 1.0,
                                                 ("log_probs", "entropy", "is_top1"))[0]}
    variants["ours"] = lambda h, w: linear_logprobs(h, w, t)[0]  # its default tile
    for c in (1024, 2048, 4096):
        variants[f"ours_chunk{c}"] = functools.partial(_ours, linear_logprobs, t, c)
    for train_w in (True, False):
        rh, rw = ref_grads(train_w)
        for name, fn in variants.items():
            h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_(train_w)

            step = functools.partial(_step, fn, h, w, N)
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(10):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                step()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            rec = {"ms": sorted(times)[len(times) // 2],
                   "peak_extra_GiB": (torch.cuda.max_memory_allocated() - base) / 2**30,
                   "grad_h_rel_err": ((h.grad.float() - rh).norm() / rh.norm()).item()}
            if train_w:
                rec["grad_w_rel_err"] = ((w.grad.float() - rw).norm() / rw.norm()).item()
            key = f"{'trained' if train_w else 'frozen'}:{name}"
            res[key] = rec
            print(key, json.dumps(rec), flush=True)
            del h, w
        del rh, rw
        torch.cuda.empty_cache()
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
