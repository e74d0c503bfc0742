"""Auto padding-free through trlshim's variable-length attention (``patches/sft/varlen.py``) and the decision
that selects it (``packing.py``, ``lengths.py``). The kernel itself is CUDA's; on CPU the same function runs its
per-sequence SDPA reference, so these tests check everything around the kernel by what the model computes and
is fed: boundaries, layout, unpadding, the switch during ``train()``, and the loss against the padded run."""
from __future__ import annotations

import helpers
import pytest
import torch

from trlshim import report
from trlshim.patches.sft import lengths, packing, varlen

needs_registry = pytest.mark.skipif(varlen.registries() is None,
                                    reason="transformers < 4.53 has no AttentionInterface/AttentionMaskInterface")


def _model(attn):
    model = helpers.make_model(vocab_size=64, hidden=32, layers=2)
    model.config._attn_implementation = attn
    return model.eval()


def _rows():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(4, 64, (n,), generator=g) for n in (7, 3, 11)]


@needs_registry
@pytest.mark.parametrize("route", ["position_ids", "cu_seq_lens", "padding_mask"])
def test_varlen_attention_equals_each_example_alone(route):
    """Each example's logits through trlshim_varlen (flattened or padded) equal that example run alone (SDPA)."""
    varlen.register()
    try:
        alone = [_model("sdpa")(input_ids=r[None]).logits[0] for r in _rows()]
        model = _model(varlen.NAME)
        rows = _rows()
        if route == "padding_mask":
            width = max(len(r) for r in rows)
            ids = torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=3) for r in rows])
            mask = torch.stack([torch.arange(width) < len(r) for r in rows]).long()
            logits = model(input_ids=ids, attention_mask=mask).logits
            got = [logits[i, :len(r)] for i, r in enumerate(rows)]
        else:
            ids = torch.cat(rows)[None]
            pos = torch.cat([torch.arange(len(r)) for r in rows])[None]
            extra = {}
            if route == "cu_seq_lens":  # TRL >= 1.x's collator sends the boundaries (and the model forwards them)
                cu = torch.tensor([0, 7, 10, 21], dtype=torch.int32)
                extra = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=11, max_length_k=11)
            logits = model(input_ids=ids, position_ids=pos, **extra).logits[0]
            got = list(logits.split([len(r) for r in rows]))
        for a, b in zip(got, alone):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    finally:
        varlen.unregister()


def test_boundaries_from_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    cu, longest = varlen.boundaries_from_positions(pos)
    assert cu.tolist() == [0, 3, 5, 9] and cu.dtype == torch.int32 and longest == 4


def test_reference_attention_is_causal_within_each_sequence_only():
    """A later sequence's tokens never see an earlier sequence (changing sequence 1 leaves sequence 2 alone)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(9, 4, 8, generator=g) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    out = varlen.reference(q, k, v, cu, None)
    k2, v2 = k.clone(), v.clone()
    k2[:4] += 1.0
    v2[:4] -= 1.0
    out2 = varlen.reference(q, k2, v2, cu, None)
    assert torch.equal(out[4:], out2[4:]) and not torch.equal(out[:4], out2[:4])


def test_padding_waste():
    assert lengths.padding_waste([100] * 64, 8, None) == 0.0
    assert lengths.padding_waste([10, 100] * 32, 8, None) == pytest.approx(1 - 55 / 100)
    assert lengths.padding_waste([10, 100] * 32, 8, 10) == 0.0  # capped at max_length: all equal
    assert lengths.padding_waste([10, 100, 10], 8, None) == pytest.approx(1 - 120 / 300)  # fewer rows than a batch


def _pretend_cuda(monkeypatch):
    """The decision as it is on a CUDA machine: the variable-length kernel usable for this model."""
    monkeypatch.setattr(varlen, "unusable_reason", lambda model: None)


def _decision():
    found = [m for m in report.applied() if "auto padding-free" in m]
    assert len(found) == 1, found
    return found[0]


def _skewed(n=32):
    rows = [{"text": t} for t in helpers.texts(n, n_min=2, n_max=3)]
    for i in range(0, n, 4):
        rows[i]["text"] = " ".join(helpers.texts(6, seed=i, n_min=8, n_max=12))
    from datasets import Dataset

    return Dataset.from_list(rows)


def test_without_a_variable_length_kernel_it_stays_off(tmp_path, monkeypatch):
    monkeypatch.setattr(varlen, "unusable_reason", lambda model: "the model is on cpu (the kernel is CUDA's)")
    helpers.run_sft(tmp_path, _skewed(), auto_padding_free=None, max_length=64, train=False)
    assert "auto padding-free off" in _decision() and "the model is on cpu" in _decision()


@needs_registry
def test_uniform_lengths_stay_padded(tmp_path, monkeypatch):
    if not packing._counts_shifted_labels():
        pytest.skip("this transformers' Trainer counts loss tokens on unshifted labels (auto padding-free stays off)")
    _pretend_cuda(monkeypatch)
    ds = helpers.text_dataset(32, n_min=10, n_max=10)
    rec, _ = helpers.run_sft(tmp_path, ds, auto_padding_free=None, max_length=64)
    assert "auto padding-free off" in _decision() and "waste only" in _decision()
    assert all("attention_mask" in c for c in rec.calls)


def test_a_user_collator_keeps_it_off(tmp_path, monkeypatch):
    _pretend_cuda(monkeypatch)
    from transformers import DataCollatorForLanguageModeling

    tok = helpers.make_tokenizer()
    helpers.run_sft(tmp_path, _skewed(), tokenizer=tok, auto_padding_free=None, max_length=64, train=False,
                    data_collator=DataCollatorForLanguageModeling(tok, mlm=False), dataset_text_field="text")
    assert "auto padding-free off" in _decision() and "collator" in _decision()


def test_blocked_model_types_stay_off(tmp_path, monkeypatch):
    _pretend_cuda(monkeypatch)
    model = helpers.make_model()
    monkeypatch.setattr(model.config, "model_type", "gemma2", raising=False)
    helpers.run_sft(tmp_path, _skewed(), model=model, auto_padding_free=None, max_length=64, train=False)
    assert "auto padding-free off" in _decision() and "gemma2" in _decision()


@needs_registry
def test_skewed_lengths_train_padding_free_with_the_padded_loss(tmp_path, monkeypatch):
    """On (as on a GPU), the model is fed flattened rows with per-example positions and runs trlshim_varlen in
    every training forward, during train() only. Its first loss (same weights, same rows) equals the padded
    run's within the difference transformers' own eager and SDPA attention show on that padded batch (float32;
    measured 0 to 1e-5 relative). Later steps are not compared: TRL 1.4-1.14's chunked LM head gives gradients
    that depend on the batch layout (grad norm 3.175 vs 3.176 at step 2 on TRL 1.10, attention aside)."""
    if not packing._counts_shifted_labels():
        pytest.skip("this transformers' Trainer counts loss tokens on unshifted labels (auto padding-free stays off)")
    _pretend_cuda(monkeypatch)
    ds = _skewed()

    def run(path, attn="eager", **cfg):
        model = helpers.make_model()
        model.config._attn_implementation = attn
        seen, losses = [], []
        model.register_forward_pre_hook(lambda m, a: seen.append(m.config._attn_implementation))
        model.register_forward_hook(lambda m, a, out: losses.append(out.loss.item()) if m.training else None)
        rec, _ = helpers.run_sft(path, ds, model=model, steps=2, max_length=64, **cfg)
        return rec, losses, seen, model

    rec, on, seen, model = run(tmp_path / "on", auto_padding_free=None)
    decision = _decision()
    assert "auto padding-free on" in decision and varlen.NAME in decision and "waste" in decision
    assert set(seen) == {varlen.NAME}  # every training forward ran on the variable-length attention
    assert model.config._attn_implementation == "eager"  # restored when training ended
    for call in rec.calls:  # flattened rows, positions restarting per example, no padding
        assert call["input_ids"].shape[0] == 1 and "position_ids" in call
        assert (call["position_ids"][0] == 0).sum() == 4
    # train() ending by an exception (a user's callback raising: on_train_end never runs) restores it too
    from transformers import TrainerCallback

    class Boom(Exception):
        pass

    class Raising(TrainerCallback):
        def on_step_end(self, *a, **k):
            raise Boom()

    model = helpers.make_model()
    model.config._attn_implementation = "eager"
    _, trainer = helpers.run_sft(tmp_path / "raising", ds, model=model, steps=2, max_length=64, train=False,
                                 auto_padding_free=None)
    trainer.add_callback(Raising())
    seen_raising = []
    model.register_forward_pre_hook(lambda m, a: seen_raising.append(m.config._attn_implementation))
    with pytest.raises(Boom):
        trainer.train()
    assert seen_raising and set(seen_raising) == {varlen.NAME}
    assert model.config._attn_implementation == "eager"
    off_rec, off, _, _ = run(tmp_path / "off", auto_padding_free=False)
    _, off_sdpa, _, _ = run(tmp_path / "sdpa", attn="sdpa", auto_padding_free=False)
    assert [ids for ids, _ in helpers.fed_examples(rec)] == [ids for ids, _ in helpers.fed_examples(off_rec)]
    noise = abs(off_sdpa[0] - off[0])
    assert abs(on[0] - off[0]) <= max(2 * noise, 1e-6 * abs(off[0])), (on[0], off[0], off_sdpa[0])


def test_doctor_shows_the_decision_inputs(capsys):
    from trlshim import cli

    cli.doctor()
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "variable-length attention" in x)
    missing = varlen.environment_reason()
    assert ("available" in line and missing is None) or missing in line
    assert f"{packing.MIN_WASTE:.0%}" in out
