"""Offloaded gradient checkpointing (trlshim_kernels.offload): the same loss and gradients as plain
checkpointing and as no checkpointing, the layer inputs really leave (copies counted, held on the host,
not referenced by the graph), dropout replayed with the forward's RNG, undo restores transformers' own
functions. On CPU the "host copy" is a clone (``allow_cpu``); the stream path is measured on the GPU
(benchmarks/bench_lora_offload_gpu.py)."""
import gc
import weakref

import pytest
import torch

transformers = pytest.importorskip("transformers")
from trlshim_kernels import offload as offload_mod  # noqa: E402
from trlshim_kernels import offload_checkpoints, offloaded_calls, offloaded_checkpoint_function  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=211, max_position_embeddings=64)


def tiny(seed=0, **over):
    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model("llama", **{**SMALL, **over})
    cfg._attn_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(cfg).float()


def batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 211, (2, 13), generator=g)
    return ids, ids.clone()


def step(model, seed=11):
    ids, labels = batch()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout masks of the forward
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def close(a, b):
    assert torch.allclose(a[0], b[0], rtol=0, atol=0), (a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for n in a[1]:
        assert torch.allclose(a[1][n], b[1][n], rtol=1e-6, atol=1e-7), n


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_offloaded_equals_plain_checkpointing(dropout):
    model = tiny(attention_dropout=dropout).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    plain = step(model)
    before = offload_mod._OFFLOADER.copies
    undo = offload_checkpoints(model, allow_cpu=True)
    offloaded = step(model)
    assert offload_mod._OFFLOADER.copies - before == SMALL["num_hidden_layers"]
    assert offloaded_calls(model) == SMALL["num_hidden_layers"]
    close(plain, offloaded)  # bit-identical loss, grads equal: dropout masks replayed
    undo()
    assert offloaded_calls(model) == 0
    close(plain, step(model))
    if dropout:  # the test can fail: without the RNG replay the recomputed dropout masks differ
        model.gradient_checkpointing_disable()
        other = step(model, seed=12)
        assert not torch.equal(other[0], plain[0])


def test_equals_no_checkpointing_and_survives_a_later_enable():
    model = tiny().train()
    reference = step(model)  # no checkpointing at all
    undo = offload_checkpoints(model, allow_cpu=True)  # before enable: wrapped at enable time
    assert offloaded_calls(model) == 0
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    got = step(model)
    assert offloaded_calls(model) == SMALL["num_hidden_layers"]
    close(reference, got)
    layers = [m for m in model.modules() if "_gradient_checkpointing_func" in m.__dict__]
    assert layers and all(isinstance(m._gradient_checkpointing_func, offload_mod.OffloadingCheckpoint) for m in layers)
    undo()
    assert "gradient_checkpointing_enable" not in model.__dict__
    assert not any(isinstance(m.__dict__.get("_gradient_checkpointing_func"), offload_mod.OffloadingCheckpoint)
                   for m in model.modules())


def test_the_graph_holds_no_layer_input():
    """What the backward keeps of a layer input is the host copy, not the device tensor."""
    layer = torch.nn.Linear(8, 8)
    func = offloaded_checkpoint_function(allow_cpu=True)
    x = torch.randn(4, 8, requires_grad=True)
    h = x * 2  # the layer input: a non-leaf, freed once nothing references it
    ref = weakref.ref(h)
    out = func(layer, h)
    entry = out.grad_fn.entry
    del h
    gc.collect()
    assert ref() is None  # plain checkpointing would keep it alive for the recompute
    assert entry.host.device.type == "cpu"
    out.sum().backward()
    expected = torch.autograd.grad((layer(x * 2)).sum(), x)[0]
    assert torch.allclose(x.grad, expected)


def test_forwards_without_a_backward_leave_no_growing_stack():
    """A loop of grad-mode forwards whose graphs are dropped (no backward) keeps the pending stack bounded."""
    layer = torch.nn.Linear(8, 8)
    func = offloaded_checkpoint_function(allow_cpu=True)
    for _ in range(500):
        func(layer, torch.randn(4, 8, requires_grad=True) * 2)
    assert len(offload_mod._OFFLOADER.stack) <= 2 * 64 + 1


def test_calls_it_cannot_take_go_to_the_wrapped_function():
    seen = []

    def inner(fn, *args, **kwargs):
        seen.append(kwargs)
        return fn(*args)

    func = offloaded_checkpoint_function(inner, allow_cpu=True)
    layer = torch.nn.Linear(4, 4)
    a = torch.randn(2, 4)  # requires no grad
    func(layer, a)
    func(lambda x, y: x + y, torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True))
    with torch.no_grad():
        func(layer, torch.randn(2, 4, requires_grad=True))
    assert len(seen) == 3 and func.offloaded_calls == 0
    sac = offloaded_checkpoint_function(__import__("functools").partial(inner, context_fn=None), allow_cpu=True)
    sac(layer, torch.randn(2, 4, requires_grad=True))
    assert sac.offloaded_calls == 0  # selective checkpointing keeps its own policy


def _routed_step(model_type, chunk, monkeypatch, lora=False, hook=False, **over):
    """Loss and grads of one step of a kernel-routed tiny model under offloaded checkpointing, MLP chunks of
    ``chunk`` tokens (None: plain checkpointing, no offload; 0: offloaded, no chunks)."""
    pytest.importorskip("triton")
    from trlshim_kernels import apply_to_model

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(model_type, **{**SMALL, **over})
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).float().train()
    if lora:
        peft = pytest.importorskip("peft")
        if lora == "bf16":  # bf16 base, float32 adapters (PEFT's autocast_adapter_dtype): cast per projection
            model = model.to(torch.bfloat16)
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=[
            "q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"], init_lora_weights=False))
        model.enable_input_require_grads()
    handle = apply_to_model(model)
    from trlshim_kernels import unwrap_model

    lm = unwrap_model(model)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hook:  # a forward hook on the first layer's MLP: it reads the output, so that layer makes it
        lm.model.layers[0].mlp.register_forward_hook(lambda mod, args, out: None)
    if chunk:
        monkeypatch.setattr(offload_mod, "MLP_CHUNK_TOKENS", chunk)
    if chunk is not None:
        offload_checkpoints(lm, allow_cpu=True, chunk_mlp=bool(chunk))
    try:
        return step(model)
    finally:
        handle.undo()


@pytest.mark.parametrize("model_type,lora", [("llama", False), ("qwen2", False), ("llama", True)])
def test_mlp_backward_in_token_chunks_keeps_grads(model_type, lora, monkeypatch):
    """Inside an offloaded layer's recompute the routed MLP runs forward + backward at once, 5 tokens at a time
    (2 x 13 tokens: 6 chunks): the same loss and gradients as plain checkpointing."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    plain = _routed_step(model_type, None, monkeypatch, lora=lora)
    before = offload_mod.COUNTS["mlp_backward_now"]
    chunked = _routed_step(model_type, 5, monkeypatch, lora=lora)
    assert offload_mod.COUNTS["mlp_backward_now"] - before == SMALL["num_hidden_layers"]
    assert plain[0] == chunked[0]
    assert plain[0] == chunked[0]
    assert plain[1].keys() == chunked[1].keys()
    for n in plain[1]:
        assert torch.allclose(plain[1][n], chunked[1][n], rtol=1e-5, atol=1e-6), n


def test_a_layer_that_reads_the_mlp_output_fails_loudly(monkeypatch):
    """Gemma 2 normalizes the MLP output before the residual add: its MLP output's gradient is not the layer's.
    Were it listed as a residual-MLP layer, the known-gradient check stops the backward (never wrong grads)."""
    monkeypatch.setattr(offload_mod, "RESIDUAL_MLP_LAYERS", offload_mod.RESIDUAL_MLP_LAYERS | {"Gemma2DecoderLayer"})
    with pytest.raises(RuntimeError):
        _routed_step("gemma2", 5, monkeypatch, head_dim=16)


@pytest.mark.parametrize("model_type,lora,hook", [("llama", False, False), ("qwen2", False, False),
                                                  ("llama", "bf16", False), ("llama", False, True)])
def test_the_recompute_skips_the_mlp_output_nobody_reads(model_type, lora, hook, monkeypatch):
    """In an offloaded layer's recompute the MLP output only feeds the residual add, whose result only carries the
    graph: the fused MLP skips its down projection (and the activation output for a full fine-tune) - the same
    loss and gradients as plain checkpointing, one skip per layer (none where a forward hook could read it), and
    LoRA adapters cast once per layer call (the recompute reuses the forward's casts)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from trlshim_kernels import lora as lora_mod

    plain = _routed_step(model_type, None, monkeypatch, lora=lora, hook=hook)
    skips, reused = offload_mod.COUNTS["mlp_output_unread"], lora_mod.COUNTS["casts_reused"]
    offloaded = _routed_step(model_type, 0, monkeypatch, lora=lora, hook=hook)
    layers = SMALL["num_hidden_layers"]
    assert offload_mod.COUNTS["mlp_output_unread"] - skips == layers - hook
    # LoRA on q, v, gate, up, down: 5 adapters x (A, B) per layer, each cast in the forward, reused in the recompute
    assert lora_mod.COUNTS["casts_reused"] - reused == (10 * layers if lora else 0)
    if lora:
        assert {g.dtype for g in offloaded[1].values()} == {torch.float32}  # only the adapters train
    assert plain[0] == offloaded[0]
    assert plain[1].keys() == offloaded[1].keys()
    for n in plain[1]:
        assert torch.allclose(plain[1][n], offloaded[1][n], rtol=1e-5, atol=1e-6), n


def test_a_skipped_mlp_output_that_is_read_fails_loudly(monkeypatch):
    """Gemma 2 normalizes the MLP output before the residual add. Were it listed as a residual-MLP layer, the
    recompute would skip an output that is read: the gradient check in the MLP's backward stops it."""
    monkeypatch.setattr(offload_mod, "RESIDUAL_MLP_LAYERS", offload_mod.RESIDUAL_MLP_LAYERS | {"Gemma2DecoderLayer"})
    with pytest.raises(RuntimeError):
        _routed_step("gemma2", 0, monkeypatch, head_dim=16)


def test_a_reused_cast_follows_in_place_updates():
    """The cast store gives back the same cast only for the same tensor at the same version."""
    from trlshim_kernels import lora as lora_mod

    a = torch.randn(4, 8)
    store = {}
    with lora_mod.reusing_casts(store):
        first = lora_mod.cast(a, torch.bfloat16)
    with lora_mod.reusing_casts(store):
        assert lora_mod.cast(a, torch.bfloat16) is first
        with torch.no_grad():
            a.add_(1.0)  # an optimizer step
        fresh = lora_mod.cast(a, torch.bfloat16)
    assert fresh is not first and torch.equal(fresh, a.to(torch.bfloat16))
    assert lora_mod.cast(a, torch.float32) is a  # same dtype: the tensor itself


def _layer_calls(model):
    """Forward calls per decoder layer (a recomputed layer runs twice a step)."""
    calls = {}
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))
    return calls


def test_the_last_layers_skip_their_recompute_while_the_gradients_are_unallocated():
    """Opt-in (keep_tail=True), a full fine-tune: the last layers run without checkpointing (their activations fit in the weight gradients
    the backward allocates after them) - each runs once a step instead of twice, the rest are offloaded and
    recomputed - and the loss and gradients are plain checkpointing's. Tiny llama, 2 x 13 tokens: per layer at most
    (960 linear in/out + 8 x 64) x 4 bytes x 26 tokens = 153 KB of activations against 148 KB of gradients, so
    the last two of three layers fit (2 x 153 <= 3 x 148), not all three."""
    model = tiny().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    plain = step(model)
    undo = offload_checkpoints(model, allow_cpu=True, keep_tail=True)
    calls = _layer_calls(model)
    got = step(model)
    close(plain, got)
    assert offload_mod.kept_calls(model) == 2 and offloaded_calls(model) == 1
    assert calls == {0: 2, 1: 1, 2: 1}  # layer 0 recomputed in its backward, layers 1-2 kept
    undo()


def test_nothing_is_kept_while_gradients_exist():
    """Gradient accumulation: the second micro-batch's backward adds into gradients already allocated, so keeping
    activations would add to the peak - nothing is kept, and the accumulated gradients are plain checkpointing's.
    LoRA-sized trainable parameters (here: only the norms train) leave no room either."""
    def two_micro_batches(model):
        model.zero_grad(set_to_none=True)
        ids, labels = batch()
        for seed in (11, 12):
            torch.manual_seed(seed)
            model(input_ids=ids, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model = tiny().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    plain = two_micro_batches(model)
    offload_checkpoints(model, allow_cpu=True, keep_tail=True)
    got = two_micro_batches(model)
    assert offload_mod.kept_calls(model) == 2 and offloaded_calls(model) == 1 + 3  # only the first micro-batch keeps
    for n in plain:
        assert torch.allclose(plain[n], got[n], rtol=1e-6, atol=1e-7), n
    model.zero_grad(set_to_none=True)
    for name, p in model.named_parameters():
        p.requires_grad_("norm" in name)
    step(model)
    assert offload_mod.kept_calls(model) == 2  # unchanged: 3 x 64 x 4 bytes of norm gradients hold no layer


@pytest.mark.parametrize("keep", [0, 3])
def test_a_forced_tail(keep):
    """keep_tail=N keeps exactly the last N layers (benchmarks sweep it); 0 keeps none."""
    model = tiny().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    plain = step(model)
    offload_checkpoints(model, allow_cpu=True, keep_tail=keep)
    close(plain, step(model))
    assert offload_mod.kept_calls(model) == keep and offloaded_calls(model) == 3 - keep


def test_a_function_on_the_model_running_every_layer_keeps_none():
    """Older transformers hold one checkpoint function on the model, which runs each layer through it: the plan's
    order (one entry per function) says nothing of which layer is last there, so nothing is kept."""
    import functools

    from torch.utils.checkpoint import checkpoint

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))
            self.gradient_checkpointing = True
            self._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)

        def gradient_checkpointing_enable(self, **kwargs):
            pass

        def forward(self, x):
            for layer in self.layers:
                x = self._gradient_checkpointing_func(layer.__call__, x)
            return x

    model = Stack()
    offload_checkpoints(model, allow_cpu=True, keep_tail=3)
    model(torch.randn(2, 8, requires_grad=True)).sum().backward()
    assert offload_mod.kept_calls(model) == 0 and offloaded_calls(model) == 3


@pytest.mark.parametrize("model_type,dtype", [("llama", torch.float32), ("qwen2", torch.bfloat16),
                                              ("mistral", torch.float32)])
def test_the_activation_bound_holds(model_type, dtype):
    """The bound the plan uses before a CUDA measurement is above what a layer call really keeps for its
    backward (every tensor saved by autograd, counted once per storage, weights excluded, plus the input)."""
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(model_type, **SMALL)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).train()
    layer = model.model.layers[0]
    x = torch.randn(2, 13, SMALL["hidden_size"], dtype=dtype, requires_grad=True)
    pos = torch.arange(13)[None].expand(2, -1)
    emb = model.model.rotary_emb(x, pos)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, position_embeddings=emb, position_ids=pos)
    held = sum(saved.values()) + (0 if x.untyped_storage().data_ptr() in saved else x.numel() * x.element_size())
    bound = offload_mod._bytes_per_token_bound(layer)(x) * 26
    assert held <= bound, (held, bound)
    assert held > bound / 4  # a bound, not a guess off by an order of magnitude
