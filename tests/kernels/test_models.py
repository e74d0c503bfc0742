import pytest
import torch

pytest.importorskip("triton")
transformers = pytest.importorskip("transformers")
from kernels_testutil import rel  # noqa: E402
from trlshim_kernels import apply_to_model, last_stats, supported_model_types  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=503, max_position_embeddings=128)


def tiny(model_type="llama", seed=0, **over):
    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(model_type, **{**SMALL, **over})
    cfg._attn_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(cfg).float()


def batch(B=2, T=17, V=503, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = ids.clone()
    labels[0, :6] = -100  # prompt masking
    return ids, labels


def loss_and_grads(model, **kw):
    model.zero_grad(set_to_none=True)
    out = model(**kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def instance_state(model):
    return [(m, dict(m.__dict__)) for m in model.modules()]


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_loss_grads_and_undo(model_type):
    model = tiny(model_type)
    before = [(m, m.__dict__.get("forward", None)) for m in model.modules()]
    fwd = model.forward
    ids, labels = batch()
    ref_out, ref_g = loss_and_grads(model, input_ids=ids, labels=labels)
    h = apply_to_model(model)
    assert h.applied["rms_norm"] >= 5 and h.applied["swiglu"] == 2 and h.applied["fused_linear_cross_entropy"] == 1
    out, g = loss_and_grads(model, input_ids=ids, labels=labels)
    assert out.logits is None and type(out) is type(ref_out)
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-4
    assert set(g) == set(ref_g) and all(rel(g[n], ref_g[n]) < 1e-4 for n in g)
    st = last_stats(model)
    assert st is out.kernel_stats and st.n_tokens.item() == (labels[:, 1:] != -100).sum().item()
    # without labels: identical to the original forward, logits returned
    with torch.no_grad():
        lo = model(input_ids=ids).logits
        h.undo()
        lo_ref = model(input_ids=ids).logits
    assert lo.shape == (2, 17, 503) and rel(lo, lo_ref) < 1e-5
    assert model.forward == fwd and "forward" not in model.__dict__
    assert all(m.__dict__.get("forward", None) is f for m, f in before)
    h.undo()  # idempotent


def test_kwargs_paths_match_hf():
    model = tiny()
    ids, labels = batch(B=3, T=9)
    n_items = torch.tensor(11)
    shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    with torch.no_grad():
        ref_a = model(input_ids=ids, labels=labels, num_items_in_batch=n_items).loss
        ref_t = model(input_ids=ids, labels=labels, return_dict=False)
        h = apply_to_model(model)
        a = model(input_ids=ids, labels=labels, num_items_in_batch=n_items).loss
        b = model(input_ids=ids, labels=torch.zeros_like(labels), shift_labels=shift).loss
        t = model(input_ids=ids, labels=labels, return_dict=False)
    h.undo()
    assert abs(a.item() - ref_a.item()) < 1e-5
    assert abs(b.item() - ref_t[0].item()) < 1e-5
    assert isinstance(t, tuple) and abs(t[0].item() - ref_t[0].item()) < 1e-5


def test_peft_wrapped():
    peft = pytest.importorskip("peft")
    model = tiny()
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], lora_dropout=0.0))
    for n, p in pm.named_parameters():  # non-zero LoRA B so the adapters matter
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    ids, labels = batch()
    ref_out, ref_g = loss_and_grads(pm, input_ids=ids, labels=labels)
    h = apply_to_model(pm)
    assert h.applied["lora"] == 14  # 7 adapted linears x 2 layers
    out, g = loss_and_grads(pm, input_ids=ids, labels=labels)
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-4
    assert set(g) == set(ref_g) and all("lora" in n for n in g) and all(rel(g[n], ref_g[n]) < 1e-4 for n in g)
    assert last_stats(pm) is not None
    h.undo()
    assert "forward" not in model.__dict__


def test_guards():
    assert "llama" in supported_model_types()
    model = tiny()
    h = apply_to_model(model, rope=True)
    assert h.applied["rope"] == 2 and "rope" not in h.skipped
    with pytest.raises(RuntimeError):
        apply_to_model(model)
    h.undo()
    apply_to_model(model).undo()
    with pytest.raises(ValueError):
        apply_to_model(tiny("gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=50))


def trajectory(use_kernels, dtype, steps=32):
    """Losses of `steps` AdamW steps of a tiny 1-layer llama, with or without our kernels."""
    ids, labels = batch(B=2, T=16, seed=3)
    model = tiny(seed=7, num_hidden_layers=1).to(dtype)
    h = apply_to_model(model) if use_kernels else None
    if h:
        assert set(h.applied) >= {"rms_norm", "swiglu", "fused_linear_cross_entropy"}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    run = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        run.append(loss.item())
    if h:
        h.undo()
    return run


def drift(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


FP32_DRIFT = 1e-3  # measured 1.1e-5 (reassociation only); a 2^-8 scale error in one norm gives 1.6e-2
BF16_SHARE = 0.25  # measured 0.05; the interpreter truncates to bf16 where the GPU rounds


def convergence_violations(stock32, stock16):
    """What is wrong with our kernels' training, judged against stock runs made on this same machine.

    Principled rather than a fixed margin (issue 8: a fixed 1e-2 bf16 margin passed or failed by
    machine): (1) in float32 the kernels must follow stock's trajectory to within reassociation noise,
    which catches any error in their math; (2) in bf16 their distance from stock must be a small share
    of the distance bf16 itself puts between stock and its float32 run - bf16 training is chaotic and
    that distance is how far rounding alone moves it on this machine."""
    ours32, ours16 = trajectory(True, torch.float32), trajectory(True, torch.bfloat16)
    bf16_error = drift(stock16, stock32)
    out = []
    if not drift(stock32, ours32) < FP32_DRIFT:
        out.append(f"float32 drift {drift(stock32, ours32):.3g} >= {FP32_DRIFT}")
    if not drift(stock16, ours16) < BF16_SHARE * bf16_error:
        out.append(f"bf16 drift {drift(stock16, ours16):.3g} >= {BF16_SHARE} x bf16's own error {bf16_error:.3g}")
    if stock16 == ours16:
        out.append("bf16 losses identical: the kernels did not run")
    return out


@pytest.fixture(scope="module")
def stock_runs():
    return trajectory(False, torch.float32), trajectory(False, torch.bfloat16)


def test_convergence_cpu(stock_runs):
    """Issue 4 item 8 on CPU: 32 steps of a tiny model, kernels on vs off (Triton's interpreter)."""
    stock32, stock16 = stock_runs
    assert stock16[-1] < stock16[0] - 3  # it actually trains (6.2 -> 0.4)
    assert convergence_violations(stock32, stock16) == []


def _eps_1e_3(rms_norm):
    return lambda x, w, eps, offset: rms_norm(x, w, 1e-3, offset)


def _scaled(rms_norm):
    return lambda x, w, eps, offset: rms_norm(x, w, eps, offset) * (1 + 2 ** -8)


def _mlp_scaled(glu_mlp):
    return lambda x, g, u, d, gelu, expect=None: glu_mlp(x, g, u, d, gelu, expect) * (1 + 2 ** -8)


@pytest.mark.parametrize("name, breakage", [("rms_norm", _eps_1e_3), ("rms_norm", _scaled), ("glu_mlp", _mlp_scaled)])
def test_convergence_check_catches_broken_kernels(name, breakage, stock_runs, monkeypatch):
    """The check above fails for kernels that are subtly wrong (a wrong epsilon, a 2^-8 scale error).
    Per-op bf16 rounding is checked against stock by the kernels' own tests; the bf16 bound here
    catches gross rounding faults only."""
    import trlshim_kernels.models as KM

    monkeypatch.setattr(KM, name, breakage(getattr(KM, name)))
    assert convergence_violations(*stock_runs) != []


@pytest.mark.parametrize("model_type", ["llama", "qwen3"])
def test_rope_router_scoped_to_patched_model(model_type, monkeypatch):
    import importlib

    import trlshim_kernels.models as KM

    mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    orig = mod.apply_rotary_pos_emb
    calls = []
    kern = KM._rotary_kernel
    monkeypatch.setattr(KM, "_rotary_kernel", lambda *a: calls.append(1) or kern(*a))
    monkeypatch.setattr(mod, "apply_rotary_pos_emb", KM.routed_rotary(orig))
    ids, labels = batch()
    model, other = tiny(model_type), tiny(model_type)
    ref_out, ref_g = loss_and_grads(model, input_ids=ids, labels=labels)
    h = apply_to_model(model, rope=True, rms_norm=False, swiglu=False, fused_linear_cross_entropy=False)
    out, g = loss_and_grads(model, input_ids=ids, labels=labels)
    assert len(calls) == 2  # one per layer
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-5
    assert all(rel(g[n], ref_g[n]) < 1e-4 for n in ref_g)
    other(input_ids=ids)
    assert len(calls) == 2  # the unpatched model went to the original function
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 2, 5, 16)
    cos, sin = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    with KM.rope_scope():
        qt, kt = q.transpose(1, 2), k.transpose(1, 2)  # (B, T, H, D) with unsqueeze_dim=2: the original
        a = mod.apply_rotary_pos_emb(qt, kt, cos, sin, unsqueeze_dim=2)
        assert len(calls) == 2 and all(torch.equal(x, y) for x, y in zip(a, orig(qt, kt, cos, sin, unsqueeze_dim=2)))
        r = mod.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        assert len(calls) == 3
    b = orig(q, k, cos, sin)
    assert all(rel(x, y) < 1e-5 for x, y in zip(r, b))
    assert not KM.rope_active()
    h.undo()
    assert "forward" not in model.model.layers[0].self_attn.__dict__


def test_rope_router_binds_by_signature(monkeypatch):
    """route_rotary binds each call to the routed function's own signature (read once): keyword and
    positional spellings are routed alike; calls the original would reject reach it and raise its error."""
    import trlshim_kernels.models as KM

    def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        return "orig"

    calls = []
    monkeypatch.setattr(KM, "_rotary_kernel", lambda *a: calls.append(a) or "ours")
    f = KM.routed_rotary(apply_rotary_pos_emb)
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 2, 5, 16)
    cos, sin = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    assert f(q, k, cos, sin) == "orig"  # outside the scope
    with KM.rope_scope():
        for args, kw in [((q, k, cos, sin), {}), ((q, k), dict(sin=sin, cos=cos)), ((q, k, cos, sin, None, 1), {}),
                         ((), dict(q=q, k=k, cos=cos, sin=sin, unsqueeze_dim=1))]:
            assert f(*args, **kw) == "ours"
            assert calls.pop()[2] is cos and not calls  # cos bound by name, wherever it was passed
        assert f(q, k, cos, sin, unsqueeze_dim=2) == "orig"  # a layout our kernel does not take
        for args, kw in [((q, k, cos), {}), ((q, k, cos, sin), dict(bogus=1)), ((q, k, cos, sin), dict(q=q))]:
            with pytest.raises(TypeError):
                f(*args, **kw)
    assert not calls


def test_fused_head_only_in_training():
    """In eval mode (evaluation, prediction: compute_metrics may need them) the logits are kept."""
    model = tiny()
    ids, labels = batch()
    with torch.no_grad():
        ref = model.eval()(input_ids=ids, labels=labels)
    h = apply_to_model(model)
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        assert out.logits is not None and abs(out.loss.item() - ref.loss.item()) < 1e-6
        model.train()
        fused = model(input_ids=ids, labels=labels)
    assert fused.logits is None and abs(fused.loss.item() - ref.loss.item()) < 1e-4
    h.undo()


def test_fused_head_skipped_for_wrapped_lm_head():
    """A wrapped lm_head (PEFT adapter, modules_to_save) cannot be fused: skipped with the reason, logits kept."""
    model = tiny()
    head = model.lm_head
    model.lm_head = torch.nn.Sequential(head)  # stands in for a wrapper module around the Linear
    h = apply_to_model(model)
    assert "fused_linear_cross_entropy" not in h.applied
    assert "not a plain Linear" in h.skipped["fused_linear_cross_entropy"]
    ids, labels = batch()
    assert model(input_ids=ids, labels=labels).logits is not None
    h.undo()
