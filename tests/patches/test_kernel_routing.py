"""Kernel routing when an SFT trainer is built: CUDA only, instance-level, undone by unpatch,
standing in for a missing Liger."""
from __future__ import annotations

import dataclasses
import math

import helpers
import pytest
from packaging.version import Version

import trlshim
from trlshim import report


def _trl():
    from importlib.metadata import version

    return Version(Version(version("trl")).base_version)


def _train(tmp_path, tokenizer, **cfg):
    import trl

    model = helpers.make_model()
    losses = []
    rec = helpers.Recorder(model)
    steps = cfg.pop("max_steps", 3)
    args = trl.SFTConfig(**helpers.training_kwargs(tmp_path, max_steps=steps), max_length=16, **cfg)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=helpers.text_dataset(), processing_class=tokenizer)
    out = trainer.train()
    for entry in trainer.state.log_history:
        if "loss" in entry:
            losses.append(entry["loss"])
    rec.remove()
    return trainer, model, losses, out


def test_cpu_model_is_left_alone(tmp_path, tokenizer):
    trainer, model, _, _ = _train(tmp_path, tokenizer)
    assert not hasattr(trainer, "_trlshim_kernels")
    assert all("forward" not in vars(m) for m in model.modules() if m is not model)  # TRL 1.15+ patches the top
    assert "trlshim: kernels not routed (the model is not on CUDA)" in report.applied()


def test_routed_kernels_keep_the_loss_and_undo(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")
    monkeypatch.setenv("TRLSHIM_KERNELS", "0")
    _, _, plain, _ = _train(tmp_path / "plain", tokenizer)
    monkeypatch.delenv("TRLSHIM_KERNELS")
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")  # Triton's interpreter on CPU (TRITON_INTERPRET=1)
    trainer, model, routed, _ = _train(tmp_path / "routed", tokenizer)
    handle = trainer._trlshim_kernels
    assert handle.applied.get("rms_norm", 0) >= 5 and handle.applied.get("swiglu", 0) == 2
    # one fused head, never two: ours only where the release's loss path has none of its own (TRL >= 1.15
    # has one; 1.7-1.14 default to loss_type='chunked_nll', TRL's own chunked head) - read off TRL, not trlshim
    loss_type = getattr(trainer.args, "loss_type", None)
    expect_fused = _trl() < Version("1.15") and loss_type in (None, "nll")
    assert ("fused_linear_cross_entropy" in handle.applied) == expect_fused, (loss_type, handle.skipped)
    assert len(plain) == len(routed) == 3
    for a, b in zip(plain, routed):
        assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)
    assert all(("forward" in vars(m)) for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    trlshim.unpatch()
    try:
        assert all("forward" not in vars(m) for m in model.modules() if m is not model)
    finally:
        trlshim.patch()


def test_routed_rope_keeps_the_loss_and_leaves_other_models_alone(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")
    import importlib

    import torch
    import trlshim_kernels.models as KM

    modeling = importlib.import_module("transformers.models.llama.modeling_llama")
    original = modeling.apply_rotary_pos_emb.__wrapped__  # the row's wrapt wrapper is in place
    assert "kernel_routing.rope.llama" in trlshim.hooks.applied()
    calls = []
    kernel = KM._rotary_kernel
    monkeypatch.setattr(KM, "_rotary_kernel", lambda *a: calls.append(a[0].shape) or kernel(*a))
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")  # Triton's interpreter on CPU (TRITON_INTERPRET=1)
    monkeypatch.setenv("TRLSHIM_KERNELS_ROPE", "0")
    _, _, without, _ = _train(tmp_path / "without", tokenizer)
    assert calls == []
    monkeypatch.delenv("TRLSHIM_KERNELS_ROPE")
    trainer, model, routed, _ = _train(tmp_path / "routed", tokenizer)
    handle = trainer._trlshim_kernels
    assert handle.applied.get("rope") == 2  # one attention module per layer of the tiny model
    assert len(calls) >= 2 * 3  # at least one call per layer and step went to our kernel
    assert len(without) == len(routed) == 3
    for a, b in zip(without, routed):
        assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)
    # a second model in the same process, not routed: the original function, bit for bit
    other = helpers.make_model(seed=3).eval()
    ids = torch.randint(0, 320, (2, 9), generator=torch.Generator().manual_seed(0))
    n = len(calls)
    with torch.no_grad():
        logits = other(input_ids=ids).logits
    assert len(calls) == n
    q = torch.randn(2, 4, 9, 8)
    k = torch.randn(2, 2, 9, 8)
    cos, sin = torch.randn(2, 9, 8), torch.randn(2, 9, 8)
    got = modeling.apply_rotary_pos_emb(q, k, cos, sin)  # outside any routed forward
    assert len(calls) == n and all(torch.equal(x, y) for x, y in zip(got, original(q, k, cos, sin)))
    trlshim.unpatch()
    try:
        assert modeling.apply_rotary_pos_emb is original
        assert all("forward" not in vars(m) for m in model.modules() if m is not model)
        with torch.no_grad():
            assert torch.equal(other(input_ids=ids).logits, logits)
    finally:
        trlshim.patch()


def test_missing_liger_is_replaced_not_an_import_error(tmp_path, tokenizer):
    import importlib.util

    import trl

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed: the user's choice is respected")
    fields = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    option = "use_liger_kernel" if "use_liger_kernel" in fields else "use_liger" if "use_liger" in fields else None
    if option is None:
        pytest.skip("this release and its transformers have no Liger option")
    trainer, _, losses, _ = _train(tmp_path, tokenizer, **{option: True})
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert getattr(trainer.args, option) is False
    assert any("liger-kernel is not installed" in m for m in report.applied())


def test_fused_head_logs_trl_metrics(tmp_path, tokenizer, monkeypatch):
    """TRL 0.15-1.14 log mean_token_accuracy (and entropy from 0.22) from the logits. With our fused head
    routed there are no logits: the metrics are still logged, per step, from the kernel's counters, and
    the step's loss is unchanged. (Issue 4 items 5-6.)"""
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")
    if not Version("0.15") <= _trl() < Version("1.15"):
        pytest.skip("TRL < 0.15 logs no logits-based metric; TRL >= 1.15 has its own fused head")
    import trl

    fields = {f.name: f for f in dataclasses.fields(trl.SFTConfig)}
    cfg = {"loss_type": "nll"} if "loss_type" in fields else {}  # 1.7-1.14 default to TRL's own chunked head

    def metrics(trainer):
        return [{k: e[k] for k in ("loss", "mean_token_accuracy", "entropy") if k in e}
                for e in trainer.state.log_history if "loss" in e]

    monkeypatch.setenv("TRLSHIM_KERNELS", "0")
    stock, _, _, _ = _train(tmp_path / "stock", tokenizer, **cfg)
    monkeypatch.delenv("TRLSHIM_KERNELS")
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")  # Triton's interpreter on CPU (TRITON_INTERPRET=1)
    routed, model, _, _ = _train(tmp_path / "routed", tokenizer, **cfg)
    handle = routed._trlshim_kernels
    assert "fused_linear_cross_entropy" in handle.applied
    assert handle.last_stats is not None  # the fused head really ran (the model returned no logits)
    switch = "use_liger" if hasattr(routed.args, "use_liger") and not hasattr(routed.args, "use_liger_kernel") \
        else "use_liger_kernel"
    assert getattr(routed.args, switch) is False  # the switch was set for each call only
    want, got = metrics(stock), metrics(routed)
    assert len(want) == len(got) == 3
    assert "mean_token_accuracy" in want[0]
    for w, g in zip(want, got):
        assert set(w) == set(g), (w, g)  # the same metrics, every step
        assert math.isclose(w["loss"], g["loss"], rel_tol=1e-3, abs_tol=1e-4)
        assert abs(w["mean_token_accuracy"] - g["mean_token_accuracy"]) < 1e-6
        if "entropy" in w:
            # ours averages over tokens with a label; TRL's logits path over every attended position
            assert math.isfinite(g["entropy"]) and math.isclose(w["entropy"], g["entropy"], rel_tol=0.05)


def test_fused_head_refuses_weights_that_are_not_the_whole_matrix():
    """Issue 15: the fused cross-entropy reads ``lm_head.weight`` itself. A ZeRO-3 partition (only this
    rank's slice; ``ds_numel``/``ds_status``), a quantized weight or a non-Linear head is refused with a
    reason - at routing and again per call - never read (FSDP2/DTensor: tests/reliability/test_fsdp.py)."""
    import torch

    kernels = pytest.importorskip("trlshim_kernels")
    lm = helpers.make_model()
    head = lm.lm_head
    assert kernels.head_refusal(head) is None
    head.weight.ds_numel, head.weight.ds_status = head.weight.numel(), "NOT_AVAILABLE"
    try:
        assert "ZeRO-3" in kernels.head_refusal(head)
        handle = kernels.apply_to_model(lm)
        assert "ZeRO-3" in handle.skipped["fused_linear_cross_entropy"]
        assert "fused_linear_cross_entropy" not in handle.applied
        handle.undo()
        del head.weight.ds_numel, head.weight.ds_status
        handle = kernels.apply_to_model(lm)  # routed while whole; partitioned later (deepspeed.initialize)
        head.weight.ds_numel = 0
        lm.train()
        ids = torch.randint(4, 300, (2, 8))
        out = lm(input_ids=ids, labels=ids)
        assert out.logits is not None and "ZeRO-3" in handle.fallbacks["fused_linear_cross_entropy"]
        handle.undo()
    finally:
        for a in ("ds_numel", "ds_status"):
            head.weight.__dict__.pop(a, None)
    assert "quantized" in kernels.weight_refusal(torch.zeros(4, 4, dtype=torch.uint8))
    head.weight.quant_state = object()
    assert "quantized" in kernels.head_refusal(head)


def test_gradient_checkpointing_offloads_layer_inputs(tmp_path, tokenizer, monkeypatch):
    """With gradient checkpointing on (TRL's default from 0.20) the routed model keeps each checkpointed layer
    input in host memory until its backward (trlshim_kernels.offload_checkpoints): every layer call of every
    step goes through the offload, the losses equal the run without it, and unpatch restores transformers'
    own checkpoint functions. (The model is on CPU here: CUDA is faked for the routing decision and the
    offload told to copy CPU tensors; the side-stream copies are measured on the GPU.)"""
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")
    import functools

    from trlshim.patches.sft import kernel_routing

    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")
    monkeypatch.setattr(kernel_routing, "_on_cuda", lambda model: True)
    monkeypatch.setattr(kernels, "offload_checkpoints", functools.partial(kernels.offload_checkpoints, allow_cpu=True))
    apply = kernels.apply_to_model  # the offload alone: no Triton kernel (the interpreter is slow; routed elsewhere)
    monkeypatch.setattr(kernels, "apply_to_model", lambda model, **kw: apply(
        model, rms_norm=False, swiglu=False, rope=False, fused_linear_cross_entropy=False, lora=False))
    monkeypatch.setenv("TRLSHIM_OFFLOAD_CHECKPOINTS", "0")
    _, _, kept, _ = _train(tmp_path / "kept", tokenizer, gradient_checkpointing=True, max_steps=2)
    assert any("checkpointed activations stay on the GPU: TRLSHIM_OFFLOAD_CHECKPOINTS=0" in m for m in report.applied())
    monkeypatch.delenv("TRLSHIM_OFFLOAD_CHECKPOINTS")
    trainer, model, offloaded, _ = _train(tmp_path / "offloaded", tokenizer, gradient_checkpointing=True, max_steps=2)
    layers = model.config.num_hidden_layers
    assert kernels.offloaded_calls(model) == 2 * layers  # 2 steps, one call per layer each, all offloaded
    assert len(kept) == len(offloaded) == 2
    for a, b in zip(kept, offloaded):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    assert any("checkpointed layer inputs offloaded" in m for m in report.applied())
    # opt-in: the last layers run unrecomputed while their activations fit in the unallocated weight gradients (the
    # rule: tests/kernels/test_offload.py; this model's are too small to hold one, so the last layer is forced)
    asked = []
    offload = kernels.offload_checkpoints
    monkeypatch.setattr(kernels, "offload_checkpoints", lambda model, **kw: asked.append(kw["keep_tail"]) or offload(
        model, **{**kw, "keep_tail": 1}))
    monkeypatch.setenv("TRLSHIM_KEEP_TAIL_ACTIVATIONS", "1")
    _, tail_model, tail, _ = _train(tmp_path / "tail", tokenizer, gradient_checkpointing=True, max_steps=2)
    assert asked == [True]
    if "_gradient_checkpointing_func" in vars(tail_model.model.layers[0]):  # each layer holds its function
        assert kernels.kept_calls(tail_model) == 2 and kernels.offloaded_calls(tail_model) == 2 * (layers - 1)
    else:  # older transformers: one function on the model runs every layer - nothing is kept
        assert kernels.kept_calls(tail_model) == 0 and kernels.offloaded_calls(tail_model) == 2 * layers
    for a, b in zip(kept, tail):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    assert any("the last layers skip their recompute" in m for m in report.applied())
    trlshim.unpatch()
    try:
        assert kernels.offloaded_calls(model) == 0  # no layer holds the offloading function any more
        assert "gradient_checkpointing_enable" not in vars(model)
    finally:
        trlshim.patch()


def test_offload_blockers():
    """What keeps checkpointed activations on the GPU, each reason by name (no training needed)."""
    from types import SimpleNamespace

    pytest.importorskip("trlshim_kernels")
    from trlshim.patches.sft import kernel_routing

    model = helpers.make_model()
    trainer = SimpleNamespace(args=SimpleNamespace(gradient_checkpointing=True), accelerator=SimpleNamespace(num_processes=1))
    assert kernel_routing.offload_blocker(trainer, model) == "the model is not on CUDA"
    on_cuda = kernel_routing._on_cuda
    try:
        kernel_routing._on_cuda = lambda m: True
        assert kernel_routing.offload_blocker(trainer, model) is None
        trainer.accelerator.num_processes = 2
        assert "more than one process" in kernel_routing.offload_blocker(trainer, model)
        trainer.accelerator.num_processes = 1
        trainer.args.torch_compile = True
        assert "torch_compile=True" in kernel_routing.offload_blocker(trainer, model)
        trainer.args.gradient_checkpointing = False
        assert kernel_routing.offload_blocker(trainer, model) == "gradient checkpointing is off"
    finally:
        kernel_routing._on_cuda = on_cuda


def test_routed_kernels_compile_ahead_of_the_first_step(tmp_path, tokenizer, monkeypatch):
    """The routed handle goes to ``trlshim_kernels.precompile`` with the Trainer's autocast dtype, logged once;
    ``TRLSHIM_KERNELS_PRECOMPILE=0`` leaves every kernel to compile at its first launch."""
    from types import SimpleNamespace

    import torch

    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")
    from trlshim.patches.sft import kernel_routing

    calls = []
    monkeypatch.setattr(kernels, "precompile", lambda handle, autocast_dtype=None: calls.append(
        (handle, autocast_dtype)) or (12, 4))
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")
    trainer, _, _, _ = _train(tmp_path, tokenizer, max_steps=1)
    expect = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else None  # TRL 1.16: bf16
    assert calls == [(trainer._trlshim_kernels, expect)]
    assert any(m.startswith("trlshim: compiling 12 kernel variants on 4 background threads") for m in report.applied())
    for args, dtype in (({"bf16": True}, torch.bfloat16), ({"fp16": True}, torch.float16), ({}, None)):
        kernel_routing._compile_ahead(SimpleNamespace(args=SimpleNamespace(**args)), "handle")
        assert calls[-1] == ("handle", dtype)
    monkeypatch.setenv("TRLSHIM_KERNELS_PRECOMPILE", "0")
    kernel_routing._compile_ahead(SimpleNamespace(args=SimpleNamespace(bf16=True)), "off")
    assert calls[-1][0] == "handle"


def test_a_failing_compile_ahead_never_stops_the_trainer(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON:
        pytest.skip("triton present but unusable")

    def broken(handle, autocast_dtype=None):
        raise AttributeError("'function' object has no attribute '_rms_fwd'")

    monkeypatch.setattr(kernels, "precompile", broken)
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")
    trainer, _, losses, _ = _train(tmp_path, tokenizer, max_steps=1)
    assert trainer._trlshim_kernels.applied and len(losses) == 1
    assert any(m.startswith("trlshim: kernels compile at first use (compiling ahead failed: AttributeError")
               for m in report.applied())
