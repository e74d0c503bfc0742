# ruff: noqa: F821, B023, E741, E731  (benchmark closures read names deleted after use)
"""trlshim_kernels on a GPU: correctness at real sizes, kernel timings and training throughput,
stock transformers vs Liger-Kernel vs ours, all in one run on one card.

Measuring method follows /work/shared/bench/peers_gpu.py (host timer around a synchronised step,
median of repeats, peak from ``torch.cuda.max_memory_allocated``); kernel timings also with CUDA
events (``triton.testing.do_bench``, median). Llama-3.2-1B shape, random weights, bf16.

    python benchmarks/bench_gpu.py [parts...]   # parts: env ceil check kern conv loop sweep (default: all)
    SMALL=1 TRITON_INTERPRET=1 python benchmarks/bench_gpu.py   # tiny CPU smoke test of the script

Writes $OUT/bench.json (or /tmp) and prints a table last.
"""
import gc
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import trlshim_kernels as K
except ImportError:  # run from a checkout: load kernels/ under its import name
    spec = importlib.util.spec_from_file_location("trlshim_kernels", os.path.join(ROOT, "kernels", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(ROOT, "kernels")])
    K = importlib.util.module_from_spec(spec)
    sys.modules["trlshim_kernels"] = K
    spec.loader.exec_module(K)
from trlshim_kernels import reference as R  # noqa: E402

OUT = os.environ.get("OUT") or tempfile.gettempdir()
SMALL = os.environ.get("SMALL") == "1"  # CPU smoke test of this script (TRITON_INTERPRET=1)
dev = "cpu" if SMALL else "cuda"
N_, H_, V_, I_ = (64, 64, 1000, 128) if SMALL else (8192, 2048, 128256, 8192)
res = {}


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def bench(fn, warm=3, iters=10):
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def bench_ev(fn):
    if SMALL:
        return bench(fn, 1, 2)
    from triton.testing import do_bench

    return do_bench(fn, warmup=50, rep=300, return_mode="median") / 1e3


def kernel_ms(fn, iters=20):
    """GPU kernel time per call (sum of device time in the profiler), free of host launch overhead."""
    if dev != "cuda":
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        sync()
    tot = 0.0
    for e in prof.key_averages():
        tot += getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
    return tot / iters / 1e3


def peak_reset():
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb():
    return torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan")


def mem_gb():
    return torch.cuda.memory_allocated() / 2**30 if dev == "cuda" else 0.0


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def bitexact(ours, hf):
    """Fraction of elements equal bit for bit, per output/gradient (vs stock's bf16 formula)."""
    return [round((a == b).float().mean().item(), 6) for a, b in zip(ours, hf)]


def leaf(t, dtype=None):
    return t.detach().to(dtype or t.dtype).clone().requires_grad_()


def env():
    import transformers
    import triton

    res.update(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__, triton=triton.__version__,
               transformers=transformers.__version__)
    from importlib.metadata import version

    for name in ("peft", "liger-kernel"):
        try:
            res[name.replace("-", "_")] = version(name)
        except Exception as e:  # noqa: BLE001
            res[name.replace("-", "_")] = repr(e)[:80]


def ceilings():
    a = torch.randn(2**20 if SMALL else 2**28, device=dev)
    b = torch.empty_like(a)
    res["copy_GBps"] = 2 * a.numel() * 4 / bench(lambda: b.copy_(a)) / 1e9
    del a, b
    m = 256 if SMALL else 8192
    x = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    y = torch.randn_like(x)
    res["matmul_TFLOPs"] = 2 * m**3 / bench(lambda: x @ y) / 1e12


# ---------------------------------------------------------------- correctness at real sizes
def check():
    torch.manual_seed(0)
    N, H, V, I = N_, H_, V_, I_
    bf = torch.bfloat16
    # RMSNorm (Llama and Gemma forms) vs float32 reference; and bit agreement with HF's bf16 formula
    for off in (0.0, 1.0):
        x = torch.randn(N, H, device=dev, dtype=bf) * 2
        w = (torch.randn(H, device=dev) * 0.1 + 1).to(bf)
        g = torch.randn(N, H, device=dev, dtype=bf)
        xk, wk = leaf(x), leaf(w)
        y = K.rms_norm(xk, wk, 1e-5, off)
        dx, dw = torch.autograd.grad(y, (xk, wk), g)
        xr, wr = leaf(x, torch.float32), leaf(w, torch.float32)
        yr = R.rms_norm_ref(xr, wr, 1e-5, off)
        dxr, dwr = torch.autograd.grad(yr, (xr, wr), g.float())
        tag = "gemma" if off else "llama"
        res[f"chk_rms_{tag}_rel"] = [rel(y, yr), rel(dx, dxr), rel(dw, dwr)]
        xh, wh = leaf(x), leaf(w)
        hf = R.rms_norm_ref(xh, wh, 1e-5, off)  # stock transformers' formula, run in bf16 by autograd
        dxh, dwh = torch.autograd.grad(hf, (xh, wh), g)
        res[f"chk_rms_{tag}_bitexact_frac_vs_hf_bf16"] = bitexact((y, dx, dw), (hf, dxh, dwh))
    # SwiGLU / GeGLU
    a = torch.randn(N, I, device=dev, dtype=bf) * 2
    b = torch.randn_like(a)
    g = torch.randn_like(a)
    for name, fn, ref in (("swiglu", K.swiglu, R.swiglu_ref), ("geglu", K.geglu, R.geglu_ref)):
        ak, bk = leaf(a), leaf(b)
        c = fn(ak, bk)
        da, db = torch.autograd.grad(c, (ak, bk), g)
        ar, br = leaf(a, torch.float32), leaf(b, torch.float32)
        cr = ref(ar, br)
        dar, dbr = torch.autograd.grad(cr, (ar, br), g.float())
        res[f"chk_{name}_rel"] = [rel(c, cr), rel(da, dar), rel(db, dbr)]
        ah, bh = leaf(a), leaf(b)
        ch = ref(ah, bh)
        dah, dbh = torch.autograd.grad(ch, (ah, bh), g)
        res[f"chk_{name}_bitexact_frac_vs_hf_bf16"] = bitexact((c, da, db), (ch, dah, dbh))
    del a, b, g
    # RoPE with packed per-example positions
    B, Hq, Hk, T, D = (2, 4, 2, 16, 8) if SMALL else (4, 32, 8, 2048, 64)
    q = torch.randn(B, T, Hq, D, device=dev, dtype=bf).transpose(1, 2)
    k = torch.randn(B, T, Hk, D, device=dev, dtype=bf).transpose(1, 2)
    pos = torch.cat([torch.arange(T // 3), torch.arange(T - T // 3)]).to(dev)[None].repeat(B, 1)
    inv = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float) / D))
    f = pos[..., None].float() * inv
    emb = torch.cat((f, f), -1)
    cos, sin = emb.cos().to(bf), emb.sin().to(bf)
    qk, kk = leaf(q), leaf(k)
    qo, ko = K.apply_rotary(qk, kk, cos, sin)
    gq, gk = torch.randn_like(qo), torch.randn_like(ko)
    dq, dk = torch.autograd.grad((qo * gq).sum() + (ko * gk).sum(), (qk, kk))
    qr, kr = leaf(q, torch.float32), leaf(k, torch.float32)
    qro, kro = R.rope_ref(qr, kr, cos.float(), sin.float())
    dqr, dkr = torch.autograd.grad((qro * gq.float()).sum() + (kro * gk.float()).sum(), (qr, kr))
    res["chk_rope_rel"] = [rel(qo, qro), rel(ko, kro), rel(dq, dqr), rel(dk, dkr)]
    qh, kh = leaf(q), leaf(k)
    qho, kho = R.rope_ref(qh, kh, cos, sin)
    dqh, dkh = torch.autograd.grad((qho * gq).sum() + (kho * gk).sum(), (qh, kh))
    res["chk_rope_bitexact_frac_vs_hf_bf16"] = bitexact((qo, ko, dq, dk), (qho, kho, dqh, dkh))
    del q, k, qk, kk, qo, ko, dq, dk, qr, kr, qro, kro, dqr, dkr
    # fused linear CE at the real size vs float32 full-logits reference
    h = torch.randn(N, H, device=dev, dtype=bf)
    W = (torch.randn(V, H, device=dev) * 0.02).to(bf)
    lab = torch.randint(0, V, (N,), device=dev)
    lab[::7] = -100
    for cap in (None, 30.0):
        hk, Wk = leaf(h), leaf(W)
        loss, st = K.fused_linear_cross_entropy(hk, Wk, lab, softcap=cap, return_stats=True)
        loss.backward()
        hr, Wr = leaf(h, torch.float32), leaf(W, torch.float32)
        lr, sr = R.linear_cross_entropy_ref(hr, Wr, lab, softcap=cap)
        lr.backward()
        tag = f"cap{int(cap)}" if cap else "plain"
        res[f"chk_ce_{tag}"] = dict(loss=loss.item(), ref=lr.item(), loss_rel=abs(loss.item() - lr.item()) / lr.item(),
                                   dh_rel=rel(hk.grad, hr.grad), dW_rel=rel(Wk.grad, Wr.grad),
                                   hits=[st.n_correct.item(), sr.n_correct.item()],
                                   ent=[st.entropy_sum.item(), sr.entropy_sum.item()],
                                   ntok=[st.n_tokens.item(), sr.n_tokens.item()])
        del hk, Wk, hr, Wr, lr, loss
        peak_reset()
    # stock HF (bf16 logits upcast) loss vs ours, same inputs
    with torch.no_grad():
        stock = torch.nn.functional.cross_entropy((h @ W.t()).float(), lab)
        ours = K.fused_linear_cross_entropy(h, W, lab)
    res["chk_ce_vs_stock_abs"] = abs(stock.item() - ours.item())


# ---------------------------------------------------------------- kernel timings
def kern():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    N, H, V, I = N_, H_, V_, I_
    bf = torch.bfloat16
    liger = {}
    try:
        if SMALL:
            raise RuntimeError("Liger kernels do not run under the Triton interpreter")
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        from liger_kernel.transformers.rms_norm import LigerRMSNorm
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        liger = dict(rms=LigerRMSNorm(H).to(dev, bf), swiglu=LigerSiLUMulFunction.apply,
                     ce=LigerFusedLinearCrossEntropyLoss(), rope=liger_rotary_pos_emb)
    except Exception as e:  # noqa: BLE001
        res["liger_import_error"] = repr(e)[:300]
    # RMSNorm fwd+bwd
    x = torch.randn(N, H, device=dev, dtype=bf, requires_grad=True)
    g = torch.randn(N, H, device=dev, dtype=bf)
    hf = LlamaRMSNorm(H).to(dev, bf)
    w = torch.nn.Parameter(torch.ones(H, device=dev, dtype=bf))
    impls = {"hf": hf, "ours": lambda t: K.rms_norm(t, w, 1e-6)}
    if liger:
        impls["liger"] = liger["rms"]
    for name, mod in impls.items():
        def step():
            x.grad = None
            mod(x).backward(g)

        res[f"rmsnorm_{name}_ms"] = bench(step) * 1e3
        res[f"rmsnorm_{name}_ev_ms"] = bench_ev(step) * 1e3
        res[f"rmsnorm_{name}_kern_ms"] = kernel_ms(step)
        with torch.no_grad():
            res[f"rmsnorm_{name}_fwd_ev_ms"] = bench_ev(lambda: mod(x)) * 1e3
    res["rmsnorm_floor_ms"] = 5 * N * H * 2 / (res.get("copy_GBps", 3000) * 1e9) * 1e3
    del x, g
    # SwiGLU fwd+bwd (8192 x 8192)
    a = torch.randn(N, I, device=dev, dtype=bf, requires_grad=True)
    b = torch.randn(N, I, device=dev, dtype=bf, requires_grad=True)
    g = torch.randn(N, I, device=dev, dtype=bf)
    sw = {"hf": lambda: (torch.nn.functional.silu(a) * b).backward(g), "ours": lambda: K.swiglu(a, b).backward(g)}
    if liger:
        sw["liger"] = lambda: liger["swiglu"](a, b).backward(g)
    for name, fn in sw.items():
        def step(fn=fn):
            a.grad = b.grad = None
            fn()

        res[f"swiglu_{name}_ev_ms"] = bench_ev(step) * 1e3
        res[f"swiglu_{name}_kern_ms"] = kernel_ms(step)
    res["swiglu_floor_ms"] = 7 * N * I * 2 / (res.get("copy_GBps", 3000) * 1e9) * 1e3
    del a, b, g
    # RoPE fwd+bwd (B=4, T=2048, 32/8 heads, D=64)
    B, Hq, Hk, T, D = (2, 4, 2, 16, 8) if SMALL else (4, 32, 8, 2048, 64)
    q = torch.randn(B, T, Hq, D, device=dev, dtype=bf).transpose(1, 2).requires_grad_()
    k = torch.randn(B, T, Hk, D, device=dev, dtype=bf).transpose(1, 2).requires_grad_()
    cos = torch.randn(1, T, D, device=dev, dtype=bf)
    sin = torch.randn(1, T, D, device=dev, dtype=bf)
    ro = {"hf": R.rope_ref, "ours": K.apply_rotary}
    if liger:
        ro["liger"] = liger["rope"]
    for name, fn in ro.items():
        def step(fn=fn):
            q.grad = k.grad = None
            qo, ko = fn(q, k, cos, sin)
            torch.autograd.backward((qo, ko), (torch.ones_like(qo), torch.ones_like(ko)))

        try:
            res[f"rope_{name}_ev_ms"] = bench_ev(step) * 1e3
            res[f"rope_{name}_kern_ms"] = kernel_ms(step)
        except Exception as e:  # noqa: BLE001
            res[f"rope_{name}_err"] = repr(e)[:200]
    del q, k
    # LM-head cross-entropy fwd+bwd, peak memory beyond inputs
    hid = torch.randn(N, H, device=dev, dtype=bf, requires_grad=True)
    W = (torch.randn(V, H, device=dev, dtype=bf) * 0.02).requires_grad_()
    lab = torch.randint(0, V, (N,), device=dev)
    inputs_gb = (hid.numel() + W.numel()) * 2 / 2**30

    def hf_ce():
        hid.grad = W.grad = None
        torch.nn.functional.cross_entropy((hid @ W.t()).float(), lab).backward()

    ces = {"hf": hf_ce, "ours": lambda: (setattr(hid, "grad", None), setattr(W, "grad", None),
                                         K.fused_linear_cross_entropy(hid, W, lab).backward())}
    if liger:
        ces["liger"] = lambda: (setattr(hid, "grad", None), setattr(W, "grad", None),
                                liger["ce"](W, hid, lab).backward())
    for name, fn in ces.items():
        hid.grad = W.grad = None
        peak_reset()
        base = mem_gb()
        res[f"ce_{name}_ms"] = bench(fn, 1, 5) * 1e3
        res[f"ce_{name}_peakGB"] = peak_gb()
        res[f"ce_{name}_beyond_inputs_GB"] = peak_gb() - base
        res[f"ce_{name}_kern_ms"] = kernel_ms(fn, 5)
    res["ce_inputs_GB"] = inputs_gb
    res["ce_flops_floor_ms"] = 6 * N * H * V / (res.get("matmul_TFLOPs", 790) * 1e12) * 1e3
    # ours, LoRA-style (frozen W): 2 matmuls instead of 3
    W.requires_grad_(False)
    res["ce_ours_frozenW_ms"] = bench(lambda: (setattr(hid, "grad", None),
                                              K.fused_linear_cross_entropy(hid, W, lab).backward()), 1, 5) * 1e3
    # chunk-size sweep for ours
    W.requires_grad_(True)
    from trlshim_kernels import cross_entropy as CE

    for mb in (128, 416, 544):
        old = CE.CHUNK_BYTES
        CE.CHUNK_BYTES = mb * 2**20
        hid.grad = W.grad = None
        peak_reset()
        base = mem_gb()
        res[f"ce_ours_chunk{mb}MiB_ms"] = bench(ces["ours"], 1, 5) * 1e3
        res[f"ce_ours_chunk{mb}MiB_beyond_GB"] = peak_gb() - base
        CE.CHUNK_BYTES = old
    del hid, W


def host():
    """Host time per fwd+bwd call on tiny tensors (GPU work ~ a few us): what each implementation costs
    the CPU per call, which bounds a step once launches outrun the GPU (gradient checkpointing)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    bf = torch.bfloat16
    n_rows, H, I = 16, H_, 64
    impl = {"hf": {}, "ours": {}, "liger": {}}
    try:
        if SMALL:
            raise RuntimeError("no Liger under the interpreter")
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        from liger_kernel.transformers.rms_norm import LigerRMSNorm
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        impl["liger"] = dict(rms=LigerRMSNorm(H).to(dev, bf), swiglu=LigerSiLUMulFunction.apply,
                             rope=liger_rotary_pos_emb)
    except Exception as e:  # noqa: BLE001
        res["host_liger_error"] = repr(e)[:200]
    w = torch.nn.Parameter(torch.ones(H, device=dev, dtype=bf))
    impl["hf"] = dict(rms=LlamaRMSNorm(H).to(dev, bf), swiglu=lambda a, b: torch.nn.functional.silu(a) * b,
                      rope=R.rope_ref)
    ours_rope = K.routed_rotary(R.rope_ref)  # as routed inside a model: through route_rotary

    def rope_ours(q, k, c, s):
        with K.rope_scope():
            return ours_rope(q, k, c, s)

    impl["ours"] = dict(rms=lambda t: K.rms_norm(t, w, 1e-6), swiglu=K.swiglu, rope=rope_ours)
    x = torch.randn(n_rows, H, device=dev, dtype=bf, requires_grad=True)
    a = torch.randn(n_rows, I, device=dev, dtype=bf, requires_grad=True)
    b = torch.randn(n_rows, I, device=dev, dtype=bf, requires_grad=True)
    q = torch.randn(1, 4, 32, 2, 64, device=dev, dtype=bf)[:, :, :, 0].transpose(1, 2).requires_grad_()
    k = torch.randn(1, 4, 8, 64, device=dev, dtype=bf).transpose(1, 2).requires_grad_()
    cos = torch.randn(1, 4, 64, device=dev, dtype=bf)
    sin = torch.randn(1, 4, 64, device=dev, dtype=bf)
    calls = {"rms": lambda f: f(x).sum().backward(), "swiglu": lambda f: f(a, b).sum().backward(),
             "rope": lambda f: sum(t.sum() for t in f(q, k, cos, sin)).backward()}
    n = 20 if SMALL else 400
    for name, f in impl.items():
        for op, call in calls.items():
            if op not in f:
                continue
            for _ in range(3):
                call(f[op])
            sync()
            t = time.perf_counter()
            for _ in range(n):
                call(f[op])
            sync()
            res[f"host_{op}_{name}_us"] = (time.perf_counter() - t) / n * 1e6


def sweep():
    """Launch-config sweeps (CUDA-event medians) and a per-op breakdown of one CE chunk."""
    from trlshim_kernels import cross_entropy as CE
    RN = importlib.import_module("trlshim_kernels.rms_norm")

    N, H, V = N_, H_, V_
    bf = torch.bfloat16
    x = torch.randn(N, H, device=dev, dtype=bf, requires_grad=True)
    w = torch.nn.Parameter(torch.ones(H, device=dev, dtype=bf))
    g = torch.randn(N, H, device=dev, dtype=bf)
    out = {}
    for bm in (1, 2, 4, 8):
        for warps in (4, 8, 16):
            RN.TUNE.clear()
            RN.TUNE["fwd"] = (bm, warps)
            with torch.no_grad():
                out[f"fwd bm{bm} w{warps}"] = kernel_ms(lambda: K.rms_norm(x, w), 10)
            for tpp in (1, 2, 4, 8):
                RN.TUNE["bwd"] = (bm, warps, tpp)
                y = K.rms_norm(x, w)

                def bwd():
                    torch.autograd.grad(y, (x, w), g, retain_graph=True)

                try:
                    out[f"bwd bm{bm} w{warps} tpp{tpp}"] = kernel_ms(bwd, 10)
                except Exception as e:  # noqa: BLE001
                    out[f"bwd bm{bm} w{warps} tpp{tpp}"] = repr(e)[:60]
    RN.TUNE.clear()
    res["sweep_rms"] = out
    fw = {k: v for k, v in out.items() if k.startswith("fwd") and isinstance(v, float)}
    bw = {k: v for k, v in out.items() if k.startswith("bwd") and isinstance(v, float)}
    res["sweep_rms_best"] = [min(fw, key=fw.get), min(fw.values()), min(bw, key=bw.get), min(bw.values())]
    del x, g
    # CE: per-op times for one chunk, and the row kernel's block sweep
    hid = torch.randn(N, H, device=dev, dtype=bf)
    W = torch.randn(V, H, device=dev, dtype=bf) * 0.02
    lab = torch.randint(0, V, (N,), device=dev)
    scale = torch.tensor(1.0 / N, device=dev)
    gw = torch.empty_like(W)
    bd = {}
    for C in (1024, 1664, 2048):
        hc = hid[:C]
        buf = torch.empty(C, V, device=dev, dtype=bf)
        gh = torch.empty(C, H, device=dev, dtype=bf)
        lr = torch.empty(C, device=dev)
        ht = torch.empty(C, device=dev, dtype=torch.int32)
        en = torch.empty(C, device=dev)
        bd[f"C{C} logits_mm"] = bench_ev(lambda: torch.mm(hc, W.t(), out=buf)) * 1e3
        for bv, wp in ((2048, 4), (4096, 8), (8192, 8), (8192, 16), (16384, 16)):
            CE.TUNE.update(block_v=bv, warps=wp)
            bd[f"C{C} rowkernel bv{bv} w{wp}"] = bench_ev(
                lambda: CE._row_kernel(buf, lab[:C], scale, lr, ht, en, -100, None, True)) * 1e3
        CE.TUNE.clear()
        bd[f"C{C} gradh_mm"] = bench_ev(lambda: torch.mm(buf, W, out=gh)) * 1e3
        bd[f"C{C} gradW_mm_first"] = bench_ev(lambda: torch.mm(buf.t(), hc, out=gw)) * 1e3
        bd[f"C{C} gradW_addmm"] = bench_ev(lambda: gw.addmm_(buf.t(), hc)) * 1e3
        del buf
    res["sweep_ce"] = bd


# ---------------------------------------------------------------- training loops
def model_cfg():
    from transformers import LlamaConfig

    if SMALL:
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                       max_position_embeddings=8192, rope_theta=500000.0)


def build(kind, lora, seed=0):
    import transformers.models.llama.modeling_llama as ml

    importlib.reload(ml)
    if kind == "liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()
    torch.manual_seed(seed)
    with torch.device(dev):
        model = ml.LlamaForCausalLM(model_cfg()).to(torch.bfloat16)
    model.config._attn_implementation = "sdpa"
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    handle = None
    if kind.startswith("ours"):
        # RoPE: route the module global of this freshly reloaded module (trlshim's registry rows do this
        # in training scripts); "ours_norope" measures the kernels without it; "ours_nolora" without fused LoRA
        if kind != "ours_norope":
            ml.apply_rotary_pos_emb = K.routed_rotary(ml.apply_rotary_pos_emb)
        handle = K.apply_to_model(model, rope=kind != "ours_norope", lora=kind != "ours_nolora")
    return model, handle


def train_loop(kind, lora, B=4, T=2048, steps=6):
    if SMALL:
        B, T, steps = 2, 16, 2
    peak_reset()
    model, handle = build(kind, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, model_cfg().vocab_size, (B, T), device=dev, generator=torch.Generator(dev).manual_seed(1))
    losses = []

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())

    t = bench(step, 2, steps)
    key = f"train_{kind}_{'lora' if lora else 'full'}"
    # where the peak is: after forward / after backward / after the optimizer step
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
        out = model(input_ids=ids, labels=ids)
        pf = peak_gb()
        out.loss.backward()
        pb = peak_gb()
        opt.step()
        opt.zero_grad(set_to_none=True)
        res[key + "_peak_fwd_bwd_opt"] = [pf, pb, peak_gb()]
        del out
    res[key + "_tok_s"] = B * T / t
    res[key + "_peakGB"] = peak_gb()
    res[key + "_loss"] = losses[-1]
    if handle is not None:
        res[key + "_applied"] = handle.applied
        if kind.startswith("ours") and dev == "cuda":  # RoPE really went through our kernel
            import trlshim_kernels.models as KM

            n = []
            kern = KM._rotary_kernel
            KM._rotary_kernel = lambda *a: n.append(1) or kern(*a)
            with torch.no_grad():
                model(input_ids=ids[:, :64])
            KM._rotary_kernel = kern
            res[key + "_rope_kernel_calls"] = len(n)
    del model, opt, handle
    peak_reset()


def conv(steps=32, B=4, T=2048):
    """32 bf16 steps of stock vs ours (and vs Liger, for scale) from the same init and data; per-step
    loss differences. Stock run twice measures its own run-to-run noise."""
    if SMALL:
        steps, B, T = 3, 2, 16
    g = torch.Generator(dev).manual_seed(2)
    data = [torch.randint(0, model_cfg().vocab_size, (B, T), device=dev, generator=g) for _ in range(4)]
    runs = {}
    kinds = ("stock", "stock2", "ours") + (() if SMALL else ("liger",))
    for kind in kinds:
        peak_reset()
        model, handle = build("stock" if kind == "stock2" else kind, False, seed=5)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ls = []
        for i in range(steps):
            ids = data[i % len(data)]  # repeated batches: the loss falls
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ls.append(loss.item())
        runs[kind] = ls
        del model, opt, handle
    for kind in kinds:
        res[f"conv_{kind}"] = runs[kind]
        if kind == "stock":
            continue
        d = [abs(a - b) for a, b in zip(runs["stock"], runs[kind])]
        sfx = "" if kind == "ours" else f"_{kind}"
        res[f"conv_max_abs_diff{sfx}"] = max(d)
        res[f"conv_max_rel_diff{sfx}"] = max(x / abs(a) for x, a in zip(d, runs["stock"]))
        res[f"conv_steps_within_1e-2{sfx}"] = sum(x < 1e-2 for x in d)
    peak_reset()


def table():
    rows = []

    def r(name, s, l_, o, unit, goal=""):
        sv, lv, ov = res.get(s), res.get(l_), res.get(o)
        fmt = (lambda v: f"{v:.4g}" if isinstance(v, float) else "-")
        ratio = (lambda a, b: f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-")
        rows.append(f"| {name} | {fmt(sv)} | {fmt(lv)} | {fmt(ov)} | {ratio(ov, sv)} | {ratio(ov, lv)} | {unit} | {goal} |")

    rows.append(f"card: {res.get('device')}  torch {res.get('torch')}  triton {res.get('triton')}  "
                f"transformers {res.get('transformers')}  liger {res.get('liger_kernel')}")
    rows.append("| what | stock | liger | ours | ours/stock | ours/liger | unit | goal |")
    rows.append("|---|---|---|---|---|---|---|---|")
    r("RMSNorm fwd+bwd (host)", "rmsnorm_hf_ms", "rmsnorm_liger_ms", "rmsnorm_ours_ms", "ms", "<=0.12")
    r("RMSNorm fwd+bwd (events)", "rmsnorm_hf_ev_ms", "rmsnorm_liger_ev_ms", "rmsnorm_ours_ev_ms", "ms", "<=0.12")
    r("RMSNorm fwd+bwd (GPU kernels)", "rmsnorm_hf_kern_ms", "rmsnorm_liger_kern_ms", "rmsnorm_ours_kern_ms", "ms",
      "<=0.12")
    r("SwiGLU fwd+bwd (GPU kernels)", "swiglu_hf_kern_ms", "swiglu_liger_kern_ms", "swiglu_ours_kern_ms", "ms")
    r("RoPE fwd+bwd (GPU kernels)", "rope_hf_kern_ms", "rope_liger_kern_ms", "rope_ours_kern_ms", "ms")
    r("LM-head CE fwd+bwd (GPU kernels)", "ce_hf_kern_ms", "ce_liger_kern_ms", "ce_ours_kern_ms", "ms", "<=21")
    r("SwiGLU fwd+bwd (events)", "swiglu_hf_ev_ms", "swiglu_liger_ev_ms", "swiglu_ours_ev_ms", "ms")
    r("RoPE fwd+bwd (events)", "rope_hf_ev_ms", "rope_liger_ev_ms", "rope_ours_ev_ms", "ms")
    r("LM-head CE fwd+bwd", "ce_hf_ms", "ce_liger_ms", "ce_ours_ms", "ms", "<=21")
    r("LM-head CE peak beyond inputs", "ce_hf_beyond_inputs_GB", "ce_liger_beyond_inputs_GB",
      "ce_ours_beyond_inputs_GB", "GiB", "<=1.0")
    r("full FT tokens/s", "train_stock_full_tok_s", "train_liger_full_tok_s", "train_ours_full_tok_s", "tok/s",
      ">=61k")
    r("full FT peak", "train_stock_full_peakGB", "train_liger_full_peakGB", "train_ours_full_peakGB", "GiB",
      "<=15")
    r("LoRA tokens/s", "train_stock_lora_tok_s", "train_liger_lora_tok_s", "train_ours_lora_tok_s", "tok/s",
      ">=50k")
    r("LoRA peak", "train_stock_lora_peakGB", "train_liger_lora_peakGB", "train_ours_lora_peakGB", "GiB")
    return "\n".join(rows)


if __name__ == "__main__":
    parts = sys.argv[1:] or ["env", "ceil", "check", "kern", "host", "conv", "loop", "sweep"]
    fns = {"env": env, "ceil": ceilings, "check": check, "kern": kern, "host": host, "conv": conv, "sweep": sweep}
    for p in parts:
        t0 = time.time()
        try:
            if p == "loop":
                extra = [v for v in os.environ.get("BENCH_EXTRA", "").split(",") if v]
                for kind in ("stock", "ours", *extra) + (() if SMALL else ("liger",)):  # liger last: patches classes
                    for lora in (False, True):
                        if (kind == "ours_nolora" and not lora) or (kind == "ours_norope" and lora):
                            continue
                        try:
                            train_loop(kind, lora)
                        except Exception as e:  # noqa: BLE001
                            res[f"loop_{kind}_{lora}_err"] = repr(e)[:300]
                            traceback.print_exc()
            else:
                fns[p]()
        except Exception as e:  # noqa: BLE001
            res[f"{p}_err"] = repr(e)[:300]
            traceback.print_exc()
        res[f"time_{p}_s"] = round(time.time() - t0, 1)
        print(json.dumps({k: v for k, v in res.items() if not k.startswith("conv_") or "diff" in k or "within" in k}),
              flush=True)
    json.dump(res, open(os.path.join(OUT, "bench.json"), "w"), indent=1)
    print(table())
