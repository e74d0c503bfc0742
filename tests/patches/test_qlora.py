"""Issue 15: a 4-bit (bitsandbytes nf4) base with LoRA adapters, routed to trlshim's kernels on CPU
(Triton's interpreter). Which kernels apply: RMSNorm, RoPE, the SwiGLU activation (the projections are
the quantized layers and are called as they are), the fused LM-head cross-entropy on the unquantized
head; the fused LoRA forward is NOT routed over a quantized base (PEFT's own forward, reason reported).
Losses and LoRA gradients equal the same run without kernels.

Needs peft and bitsandbytes (CI installs bitsandbytes for the newest matrix release only); skips with
the reason where either is missing or bitsandbytes cannot quantize on this machine."""
from __future__ import annotations

import helpers
import pytest
from packaging.version import Version

import trlshim
from trlshim import report

U32 = 2.0 ** -24  # float32 unit roundoff
N = 4 * 16  # tokens per batch: every loss/gradient here is a sum over at most N token terms


@pytest.fixture
def qlora_model(tmp_path):
    """A fresh nf4-quantized tiny Llama (float32 compute) with LoRA r=8 on every linear layer."""
    pytest.importorskip("peft", reason="peft is not installed")
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    kernels = pytest.importorskip("trlshim_kernels")
    if not (kernels.HAS_TRITON and kernels.interpreting()):
        pytest.skip("needs triton and TRITON_INTERPRET=1 (the kernels on CPU)")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = tmp_path / "base"
    helpers.make_model(hidden=64).save_pretrained(path)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)

    def build():
        try:
            base = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map="cpu")
        except Exception as e:  # the precise reason, e.g. a bitsandbytes build without CPU 4-bit support
            pytest.skip(f"bitsandbytes cannot load a 4-bit model on CPU here: {type(e).__name__}: {e}")
        if "Linear4bit" not in {type(m).__name__ for m in base.modules()}:
            pytest.skip("bitsandbytes loaded the model without 4-bit layers on CPU")
        torch.manual_seed(0)
        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(base, cfg)
        for n, p in model.named_parameters():  # B starts at zero: give the adapters a real contribution
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
        return model.train()  # from_pretrained returns eval mode; the fused head runs in training only

    return build


def _trl():
    from importlib.metadata import version

    return Version(Version(version("trl")).base_version)


def _batch():
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.randint(4, 320, (4, 16), generator=g)


def test_which_kernels_apply_over_a_4bit_base_and_same_numbers(qlora_model):
    import trlshim_kernels

    ids = _batch()
    plain = qlora_model()
    loss0 = plain(input_ids=ids, labels=ids).loss
    loss0.backward()
    g0 = {n: p.grad.clone() for n, p in plain.named_parameters() if p.requires_grad}
    routed = qlora_model()
    handle = trlshim_kernels.apply_to_model(routed, rope=True)
    try:
        with trlshim_kernels.rope_scope():  # the router a script would install; here the kernel itself is checked
            loss1 = routed(input_ids=ids, labels=ids).loss
        loss1.backward()
        assert handle.last_stats is not None  # the fused head ran, on the unquantized float lm_head
        g1 = {n: p.grad for n, p in routed.named_parameters() if p.requires_grad}
    finally:
        handle.undo()
    assert handle.applied.get("rms_norm") == 5 and handle.applied.get("swiglu") == 2
    assert handle.applied.get("fused_linear_cross_entropy") == 1 and "lora" not in handle.applied
    assert "Linear4bit x14" in handle.skipped["lora"]  # 2 layers x 7 projections: PEFT's own forward
    # float32 compute both ways; only reduction order differs: gamma_N = N u (relative to the loss / the
    # largest LoRA gradient)
    assert loss1.item() == pytest.approx(loss0.item(), rel=N * U32)
    assert g0.keys() == g1.keys() and len(g0) == 28
    top = max(g.abs().max().item() for g in g0.values())
    assert top > 0 and max((g0[n] - g1[n]).abs().max().item() for n in g0) <= N * U32 * top


def test_qlora_sft_through_trlshim_matches_without_kernels(qlora_model, tmp_path, tokenizer, monkeypatch):
    import trl

    def train(out):
        model = qlora_model()
        args = trl.SFTConfig(**helpers.training_kwargs(out, max_steps=3, learning_rate=1e-2, optim="sgd"),
                             max_length=16)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=helpers.text_dataset(),
                                 processing_class=tokenizer)
        trainer.train()
        return trainer, [h["loss"] for h in trainer.state.log_history if "loss" in h]

    monkeypatch.setenv("TRLSHIM_KERNELS", "0")
    _, plain = train(tmp_path / "plain")
    monkeypatch.delenv("TRLSHIM_KERNELS")
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")
    # TRL >= 1.15: the LM head stays TRL's in both runs. Ours rounds its gradient tile to bf16 on its own (under
    # TRL's default bf16 autocast): a bf16-level difference, outside this float32-level bound; the head route has
    # its own test (test_logprob_head, float32, the same gradients at every step)
    monkeypatch.setenv("TRLSHIM_KERNELS_HEAD", "0")
    trainer, routed = train(tmp_path / "routed")
    handle = trainer._trlshim_kernels
    try:
        assert handle.applied.get("rms_norm") == 5 and handle.applied.get("swiglu") == 2 and handle.applied.get("rope")
        assert "lora" not in handle.applied and "Linear4bit" in handle.skipped["lora"]
        line = next(m for m in report.applied() if m.startswith("trlshim: Triton kernels routed"))
        assert "lora not routed: LoRA over non-plain base layers (Linear4bit x14)" in line
        # our fused head (on the float head) only where the release's loss path has none of its own
        expect_fused = _trl() < Version("1.15") and getattr(trainer.args, "loss_type", None) in (None, "nll")
        assert ("fused_linear_cross_entropy" in handle.applied) == expect_fused, handle.skipped
        assert (handle.last_stats is not None) == expect_fused
    finally:
        trlshim.unpatch()
        trlshim.patch()
    # SGD (no Adam normalisation, which could turn a rounding-level gradient difference into a full
    # lr-sized step): each step's loss stays within gamma_N of the other run's, growing at most
    # linearly with the steps already taken (the updates differ by lr x a rounding-level gradient);
    # transformers < 5 rounds the logged loss to 4 decimals (abs)
    assert len(plain) == len(routed) == 3
    for step, (a, b) in enumerate(zip(plain, routed), start=1):
        assert b == pytest.approx(a, rel=step * N * U32, abs=1e-4)
