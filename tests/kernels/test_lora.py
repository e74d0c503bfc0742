import pytest
import torch

pytest.importorskip("triton")
from kernels_testutil import leaf, rel  # noqa: E402
from trlshim_kernels import lora_glu_mlp, lora_linear  # noqa: E402
from trlshim_kernels.reference import geglu_ref, swiglu_ref  # noqa: E402

H, MID, R = 24, 40, 4


def _adapter(out, inp, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(R, inp, generator=g, dtype=torch.float32).to(dtype) * 0.3,
            torch.randn(out, R, generator=g, dtype=torch.float32).to(dtype) * 0.3)


def _ref_linear(x, w, bias, a, b, s):
    out = x @ w.T + s * ((x @ a.T) @ b.T)
    return out if bias is None else out + bias


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("train_base", [False, True])
def test_lora_linear_vs_float64(dtype, tol, with_bias, train_base):
    x = torch.randn(2, 5, H, dtype=dtype)
    w = torch.randn(MID, H, dtype=dtype) * 0.2
    bias = torch.randn(MID, dtype=dtype) if with_bias else None
    a, b = _adapter(MID, H)  # float32 adapters beside a bf16 base: PEFT's autocast_adapter_dtype
    xs, al, bl = leaf(x), leaf(a), leaf(b)
    ws = leaf(w) if train_base else w
    bs = leaf(bias) if with_bias else None
    y = lora_linear(xs, ws, bs, al, bl, 0.5)
    assert y.dtype == dtype and y.shape == (2, 5, MID)
    g = torch.randn_like(y)
    ins = [t for t in (xs, ws, bs, al, bl) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(y, ins, g)
    refs = [leaf(t, torch.float64) if isinstance(t, torch.Tensor) else None for t in (x, w, bias, a, b)]
    yr = _ref_linear(*refs, 0.5)
    rins = [r for r, t in zip(refs, (xs, ws, bs, al, bl)) if isinstance(t, torch.Tensor) and t.requires_grad]
    rgrads = torch.autograd.grad(yr, rins, g.double())
    assert rel(y, yr) < tol
    for got, want, t in zip(grads, rgrads, ins):
        assert got.dtype == t.dtype and got.shape == t.shape  # float32 adapters get float32 gradients
        assert rel(got, want) < tol


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_lora_mlp_vs_float64(gelu, dtype, tol):
    x = torch.randn(2, 7, H, dtype=dtype)
    ws = [torch.randn(MID, H, dtype=dtype) * 0.2, torch.randn(MID, H, dtype=dtype) * 0.2,
          torch.randn(H, MID, dtype=dtype) * 0.2]
    ads = [_adapter(MID, H, seed=1), _adapter(MID, H, seed=2), _adapter(H, MID, seed=3)]
    scal = (0.5, 2.0, 1.0)
    xs = leaf(x)
    leaves = [(leaf(a), leaf(b)) for a, b in ads]
    y = lora_glu_mlp(xs, ws, [(a, b, s) for (a, b), s in zip(leaves, scal)], gelu=gelu)
    g = torch.randn_like(y)
    ins = [xs] + [t for pair in leaves for t in pair]
    grads = torch.autograd.grad(y, ins, g)
    xr = leaf(x, torch.float64)
    wr = [w.double() for w in ws]
    rl = [(leaf(a, torch.float64), leaf(b, torch.float64)) for a, b in ads]
    act = geglu_ref if gelu else swiglu_ref
    h = act(_ref_linear(xr, wr[0], None, *rl[0], scal[0]), _ref_linear(xr, wr[1], None, *rl[1], scal[1]))
    yr = _ref_linear(h, wr[2], None, *rl[2], scal[2])
    rgrads = torch.autograd.grad(yr, [xr] + [t for pair in rl for t in pair], g.double())
    assert rel(y, yr) < tol
    for got, want, t in zip(grads, rgrads, ins):
        assert got.dtype == t.dtype and got.shape == t.shape
        assert rel(got, want) < tol


def _saved(fn):
    """Shapes of the tensors autograd keeps for backward while ``fn()`` runs."""
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, shapes


def test_lora_mlp_keeps_x_gate_up_only():
    """What the fused node keeps: two intermediate-size tensors (gate, up), not the activation output (a third)
    nor float32 copies of x; the composed ops keep three or more."""
    x = torch.randn(3, 5, H, dtype=torch.bfloat16, requires_grad=True)
    ws = [torch.randn(MID, H, dtype=torch.bfloat16), torch.randn(MID, H, dtype=torch.bfloat16),
          torch.randn(H, MID, dtype=torch.bfloat16)]
    ads = [(leaf(a), leaf(b), 1.0) for a, b in (_adapter(MID, H), _adapter(MID, H), _adapter(H, MID))]
    _, fused = _saved(lambda: lora_glu_mlp(x, ws, ads))
    wide = [s for s in fused if s == (15, MID)]
    assert len(wide) == 2, fused
    _, composed = _saved(lambda: lora_linear(swiglu_ref(lora_linear(x, ws[0], None, *ads[0]),
                                                        lora_linear(x, ws[1], None, *ads[1])),
                                             ws[2], None, *ads[2]))
    assert len([s for s in composed if s[-1] == MID and s[0] * (s[1] if len(s) == 3 else 1) == 15]) >= 3, composed


def test_lora_mlp_second_backward_refused():
    """The backward overwrites gate/up in place: running it twice (retain_graph) would read gradients as
    activations - a clear error instead."""
    x = torch.randn(4, H, requires_grad=True)
    ws = [torch.randn(MID, H), torch.randn(MID, H), torch.randn(H, MID)]
    ads = [(leaf(a), leaf(b), 1.0) for a, b in (_adapter(MID, H), _adapter(MID, H), _adapter(H, MID))]
    y = lora_glu_mlp(x, ws, ads).sum()
    y.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot run twice"):
        y.backward()


def _peft_llama(dtype):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101)
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg).to(dtype)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return pm


def test_trainer_autocast_takes_the_fused_lora_mlp(monkeypatch):
    """The Trainer's bf16=True runs the forward under autocast: a bf16 model with (float32) LoRA adapters must
    still take the one-node MLP and projections (autocast casts nothing there) and give PEFT's numbers."""
    from trlshim_kernels import apply_to_model
    from trlshim_kernels import models as routed

    pm = _peft_llama(torch.bfloat16)
    ids = torch.randint(0, 101, (2, 19), generator=torch.Generator().manual_seed(3))

    def run():
        pm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = pm(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach().float(), {n: p.grad.float().clone() for n, p in pm.named_parameters() if p.grad is not None}

    ref_loss, ref_g = run()
    calls = {"mlp": 0, "linear": 0}
    real_mlp, real_lin = routed.lora_glu_mlp, routed.lora_linear

    def spy_mlp(*a, **k):
        calls["mlp"] += 1
        return real_mlp(*a, **k)

    def spy_lin(*a, **k):
        calls["linear"] += 1
        return real_lin(*a, **k)

    monkeypatch.setattr(routed, "lora_glu_mlp", spy_mlp)
    monkeypatch.setattr(routed, "lora_linear", spy_lin)
    h = apply_to_model(pm)
    loss, g = run()
    assert calls == {"mlp": 2, "linear": 8}  # per layer: one MLP node, q/k/v/o one node each
    assert abs(loss.item() - ref_loss.item()) < 2e-2 * abs(ref_loss.item())
    assert set(g) == set(ref_g) and all(g[n].dtype == torch.float32 for n in g)
    assert all(rel(g[n], ref_g[n]) < 5e-2 for n in g), {n: rel(g[n], ref_g[n]) for n in g}
    h.undo()
    calls.update(mlp=0, linear=0)
    run()
    assert calls == {"mlp": 0, "linear": 0}


def test_autocast_to_another_dtype_keeps_peft_forward(monkeypatch):
    """Autocast to a dtype other than the weights' (a float32 model under bf16 autocast) must be left to
    autocast: the projections are called as modules."""
    from trlshim_kernels import apply_to_model
    from trlshim_kernels import models as routed

    pm = _peft_llama(torch.float32)
    calls = []
    monkeypatch.setattr(routed, "lora_glu_mlp", lambda *a, **k: calls.append(1))
    apply_to_model(pm)
    ids = torch.randint(0, 101, (1, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pm(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss) and calls == []


def test_full_finetune_mlp_fused_under_autocast(monkeypatch):
    """Full fine-tuning of a bf16 model under the Trainer's autocast takes the fused MLP (glu_mlp)."""
    transformers = pytest.importorskip("transformers")
    from trlshim_kernels import apply_to_model
    from trlshim_kernels import models as routed

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    real = routed.glu_mlp
    calls = []
    monkeypatch.setattr(routed, "glu_mlp", lambda *a, **k: calls.append(1) or real(*a, **k))
    apply_to_model(model)
    ids = torch.randint(0, 101, (1, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    assert len(calls) == 2


def test_lora_mlp_without_triton_same_numbers(monkeypatch):
    """Where Triton cannot run (CPU without the interpreter), the same formula through autograd."""
    import trlshim_kernels.lora as lora_mod

    x = torch.randn(2, 5, H)
    ws = [torch.randn(MID, H) * 0.2, torch.randn(MID, H) * 0.2, torch.randn(H, MID) * 0.2]
    ads = [(*_adapter(o, i, seed=s), sc)
           for (o, i, s, sc) in ((MID, H, 1, 0.5), (MID, H, 2, 2.0), (H, MID, 3, 1.0))]
    fused = lora_glu_mlp(leaf(x), ws, ads)
    monkeypatch.setattr(lora_mod, "use_triton", lambda *t: False)
    xs = leaf(x)
    plain = lora_glu_mlp(xs, ws, ads)
    assert type(fused.grad_fn).__name__ == "LoRAGLUMLPFunctionBackward"
    assert type(plain.grad_fn).__name__ == "LoRALinearFunctionBackward" and rel(plain, fused) < 1e-5
