"""TRL >= 1.15's fused LM head through trlshim_kernels.linear_logprobs in a routed SFT loss: same loss and same
weights after training as TRL's own head, only inside the SFT loss, only for calls the kernel computes the same way."""
from __future__ import annotations

import math

import helpers
import pytest
import torch
from packaging.version import Version

import trlshim
from trlshim import report


def _trl():
    from importlib.metadata import version

    return Version(Version(version("trl")).base_version)


@pytest.fixture
def kernels(monkeypatch):
    if _trl() < Version("1.15"):
        pytest.skip("TRL < 1.15 has no fused LM head of its own")
    pytest.importorskip("triton")
    kernels = pytest.importorskip("trlshim_kernels")
    if not kernels.HAS_TRITON or not kernels.interpreting():
        pytest.skip("the kernels run on CPU only under TRITON_INTERPRET=1")
    monkeypatch.setenv("TRLSHIM_KERNELS_ON_CPU", "1")
    return kernels


def _spy(monkeypatch):
    import trlshim_kernels

    calls = []
    real = trlshim_kernels.linear_logprobs

    def counted(*a, **k):
        out = real(*a, **k)
        calls.append(out[0].shape[0])
        return out

    monkeypatch.setattr(trlshim_kernels, "linear_logprobs", counted)
    return calls


def _train(tmp_path, tokenizer, edit=None, **cfg):
    import trl
    from transformers import TrainerCallback

    model = helpers.make_model()
    grads = []

    class Grads(TrainerCallback):  # what reached the weights, each step, before the optimizer
        def on_pre_optimizer_step(self, *a, **k):
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    # float32 (TRL >= 1.15 defaults to bf16 autocast): both heads then compute the same float32 numbers, so the
    # comparison below is exact up to summation order (under bf16 each rounds its gradient tile on its own)
    args = trl.SFTConfig(**helpers.training_kwargs(tmp_path, max_steps=3), max_length=16, bf16=False, **cfg)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=helpers.text_dataset(), processing_class=tokenizer,
                             callbacks=[Grads()])
    if edit:
        edit(trainer)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return trainer, grads, losses


@pytest.mark.parametrize("compact", [True, False], ids=["compact_rows", "all_rows"])
def test_kernel_head_keeps_the_loss_and_the_gradients(tmp_path, tokenizer, kernels, monkeypatch, compact):
    """compact_rows: the labelled rows only, as TRL scores them on CUDA - the SFT loss's upstream gradient is the
    same for every row, so the forward's gradients are used; all_rows (TRL's layout elsewhere): the unlabelled rows
    get no gradient, so the backward recomputes with per-row weights. Both: TRL's own head's gradients."""
    from trl.trainer import utils
    from trlshim_kernels import logprobs

    monkeypatch.setattr(utils, "_use_triton", lambda device: compact)  # TRL's choice of layout, nothing else
    before = dict(logprobs.COUNTS)
    monkeypatch.setenv("TRLSHIM_KERNELS_HEAD", "0")
    _, plain_grads, plain = _train(tmp_path / "plain", tokenizer)
    monkeypatch.delenv("TRLSHIM_KERNELS_HEAD")
    calls = _spy(monkeypatch)
    trainer, grads, routed = _train(tmp_path / "routed", tokenizer)
    assert trainer._trlshim_kernels.applied.get("logprob_head") == 1
    assert len(calls) == 3 and all(n > 0 for n in calls)  # every training step's head, no other call
    assert len(plain) == len(routed) == 3
    for a, b in zip(plain, routed):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5), (plain, routed)
    assert len(plain_grads) == len(grads) == 3
    for step, (mine, theirs) in enumerate(zip(grads, plain_grads)):
        assert mine.keys() == theirs.keys() and "lm_head.weight" in mine
        for name, g in theirs.items():
            assert g.norm() > 0, name
            assert (mine[name] - g).norm() <= 1e-5 * g.norm(), (step, name)
    assert any("linear_logprobs" in line for line in report.applied())
    used = {k: logprobs.COUNTS[k] - before[k] for k in before}
    assert used == ({"scaled": 3, "recomputed": 0} if compact else {"scaled": 0, "recomputed": 3})


def test_per_token_weights_keep_trl_head(tmp_path, tokenizer, kernels, monkeypatch):
    """A late edit to loss_type='dft' (per-token weights) is read at the call: TRL's head, TRL's numbers."""
    def dft(trainer):
        trainer.args.loss_type = "dft"

    monkeypatch.setenv("TRLSHIM_KERNELS_HEAD", "0")
    _, _, plain = _train(tmp_path / "plain", tokenizer, edit=dft)
    monkeypatch.delenv("TRLSHIM_KERNELS_HEAD")
    calls = _spy(monkeypatch)
    _, _, routed = _train(tmp_path / "routed", tokenizer, edit=dft)
    assert calls == []
    for a, b in zip(plain, routed):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def test_a_head_only_trl_can_compute_is_left_to_trl(kernels):
    """The route's refusals: what the kernel does not compute the same way stays TRL's call."""
    from trlshim.patches.sft.logprob_head import refusal

    h = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(20, 8, requires_grad=True)
    base = {"hidden": h, "weight": w, "bias": None, "targets": torch.arange(6), "temperature": 1.0,
            "logit_scale": 1.0, "outputs": ("log_probs", "entropy", "is_top1"), "final_logit_softcapping": None}
    assert refusal(kernels, base) is None
    assert "temperature" in refusal(kernels, {**base, "temperature": 0.7})
    assert "logit scale" in refusal(kernels, {**base, "logit_scale": 2.0})
    assert "mean_logits" in refusal(kernels, {**base, "outputs": ("log_probs", "mean_logits")})
    assert "rows" in refusal(kernels, {**base, "hidden": h[:0], "targets": torch.arange(0)})


def test_route_rows_match_this_release():
    """The rows apply exactly where TRL has the head they expect (TRL >= 1.15, its forward's parameters)."""
    import trl.trainer.sft_trainer  # noqa: F401 - rows apply when their module is imported
    import trl.trainer.utils  # noqa: F401

    from trlshim import hooks

    on = _trl() >= Version("1.15")
    assert ("kernel_routing.logprob_head" in hooks.applied()) == on, hooks.skipped()
    assert ("kernel_routing.logprob_head.loss" in hooks.applied()) == on
    trlshim.unpatch()
    try:
        if on:
            from trl.trainer import utils

            assert "apply" not in vars(utils._ChunkedLogProbFunction)  # the exact original again
    finally:
        trlshim.patch()
