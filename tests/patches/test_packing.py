"""Packing strategies, padding-free batching and auto padding-free, checked by what is fed."""
from __future__ import annotations

import helpers
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from trlshim import report
from trlshim.versions import trl_version

TRL = trl_version()
IGNORE = -100


# TRL 0.19-0.22's own padding-free rows keep an all-ones attention mask and do not mask the first
# label of each example (their collator's behaviour, which trlshim leaves alone).
OWN_FLAT_ROWS = Version("0.19") <= TRL < Version("0.23")


def _padding_free_calls(rec):
    def flat(c):
        mask = c.get("attention_mask")
        no_mask = mask is None or (OWN_FLAT_ROWS and bool(mask.all()))
        return "position_ids" in c and c["input_ids"].shape[0] == 1 and no_mask

    return [c for c in rec.calls if flat(c)]


@pytest.mark.parametrize("strategy", [None, "bfd", "ffd", "wrapped", "bfd_split", "bfd-requeue"])
def test_packing_with_any_strategy_name(tmp_path, strategy):
    tok = helpers.make_tokenizer()
    cfg = {} if strategy is None else {"packing_strategy": strategy}
    if strategy in ("bfd_split", "bfd-requeue") and Version("0.19") <= TRL < Version("0.29"):
        with pytest.raises(ValueError, match="no equivalent"):  # the release packs only by truncating or wrapping
            helpers.run_sft(tmp_path, helpers.text_dataset(24), packing=True, max_length=32, train=False, **cfg)
        return
    rec, trainer = helpers.run_sft(tmp_path, helpers.text_dataset(24), tokenizer=tok, packing=True, max_length=32,
                                   **cfg)
    fed = helpers.fed_examples(rec)
    for call in rec.calls:
        if "position_ids" in call:  # padding-free packing: examples kept apart by position_ids
            assert len(fed) > 4 * len(rec.calls)
        else:  # concatenate-and-chunk: full rows of max length
            assert call["input_ids"].shape[1] == 32
    assert max(len(ids) for ids, _ in fed) <= 32
    if hasattr(trainer.train_dataset, "__len__"):
        assert len(trainer.train_dataset) < 24  # fewer rows than examples: rows hold several examples
    if strategy is not None and TRL < Version("0.19"):
        assert any("packing_strategy" in m for m in report.applied())


def test_unknown_strategy_is_an_error(tmp_path):
    with pytest.raises((ValueError, TypeError), match="strategy|packing"):
        helpers.run_sft(tmp_path, helpers.text_dataset(8), packing=True, max_length=32, packing_strategy="nope",
                        train=False)


def test_padding_free_without_packing(tmp_path):
    tok = helpers.make_tokenizer()
    rec, _ = helpers.run_sft(tmp_path, helpers.text_dataset(8), tokenizer=tok, padding_free=True, max_length=8)
    calls = _padding_free_calls(rec)
    assert calls and len(calls) == len(rec.calls)  # flattened rows, no attention mask
    for call in calls:
        ids, pos, labels = call["input_ids"][0], call["position_ids"][0], call["labels"][0]
        assert tok.pad_token_id not in ids.tolist()  # no padding
        starts = (pos == 0).nonzero().flatten().tolist()
        assert len(starts) == 4  # the 4 examples of the batch
        if not OWN_FLAT_ROWS:
            assert all(labels[s].item() == IGNORE for s in starts)
    # max_length still honoured (TRL >= 1.0 refuses padding_free + max_length; trlshim truncates in the collator)
    assert max(len(ids) for ids, _ in helpers.fed_examples(rec)) == 8


def _run_with_losses(tmp_path, ds, **cfg):
    model = helpers.make_model()
    losses = []
    handle = model.register_forward_hook(lambda m, a, out: losses.append(float(out.loss)) if m.training else None)
    rec, _ = helpers.run_sft(tmp_path, ds, model=model, steps=2, max_length=16, **cfg)
    handle.remove()
    return rec, losses


def test_auto_padding_free_off_by_default_without_flash_attention(tmp_path):
    """The tiny model uses eager attention: padding-free would need a (slower) block-diagonal mask."""
    rec, _ = _run_with_losses(tmp_path, helpers.text_dataset(8), auto_padding_free=None)
    assert not _padding_free_calls(rec)
    assert any("auto padding-free off" in m and "variable-length" in m for m in report.applied())


def test_auto_padding_free_keeps_the_loss(tmp_path):
    """Asked for (auto_padding_free=True), it is on where safe; then the loss equals the padded run's (fp32)."""
    ds = helpers.text_dataset(16)
    on_rec, on = _run_with_losses(tmp_path / "a", ds, auto_padding_free=True)
    decisions = [m for m in report.applied() if "auto padding-free" in m]
    assert len(decisions) == 1
    print(decisions[0])
    off_rec, off = _run_with_losses(tmp_path / "b", ds, auto_padding_free=False)
    assert not _padding_free_calls(off_rec)
    if _safe_here():
        assert "auto padding-free on" in decisions[0]
        assert _padding_free_calls(on_rec)
        assert max(len(ids) for ids, _ in helpers.fed_examples(on_rec)) <= 16
        assert len(on) == len(off) == 2
        assert on == pytest.approx(off, abs=1e-5)  # the same loss as the padded run
    else:  # stays off, for the reason that holds on this transformers
        assert not _padding_free_calls(on_rec)
        assert "auto padding-free off" in decisions[0]
        assert "builds no block-diagonal mask" in decisions[0] or "unshifted labels" in decisions[0], decisions[0]


def _safe_here() -> bool:
    """Read off transformers itself (not trlshim's helpers): the eager model builds a block-diagonal mask
    from position_ids (transformers >= 4.53's masking_utils) and the Trainer counts shifted labels."""
    import inspect

    import transformers
    from transformers import Trainer

    packed_mask = hasattr(getattr(transformers, "masking_utils", None), "find_packed_sequence_indices")
    if not packed_mask:
        try:
            from transformers import masking_utils
            packed_mask = hasattr(masking_utils, "find_packed_sequence_indices")
        except ImportError:
            packed_mask = False
    fn = getattr(Trainer, "_get_num_items_in_batch", None)
    return packed_mask and fn is not None and "1:]" in inspect.getsource(fn)


def test_auto_padding_free_turned_off_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRLSHIM_AUTO_PADDING_FREE", "0")
    rec, _ = helpers.run_sft(tmp_path, helpers.text_dataset(8), max_length=16, auto_padding_free=None)
    assert not _padding_free_calls(rec)
    assert any("TRLSHIM_AUTO_PADDING_FREE" in m for m in report.applied())


def test_auto_padding_free_not_with_user_collator(tmp_path):
    from transformers import DataCollatorForLanguageModeling

    tok = helpers.make_tokenizer()
    inner = DataCollatorForLanguageModeling(tokenizer=tok, mlm=False)

    def collator(features):  # the user's collator: pads input_ids, labels from input_ids
        return inner([{"input_ids": f["input_ids"]} for f in features])

    rec, _ = helpers.run_sft(tmp_path, helpers.text_dataset(8), tokenizer=tok, max_length=16, auto_padding_free=None,
                             data_collator=collator, dataset_text_field="text")
    assert not _padding_free_calls(rec)
    assert any("auto padding-free off" in m for m in report.applied())


@pytest.mark.skipif(TRL not in SpecifierSet("==0.15.*"), reason="TRL 0.15 only: its packing puts nothing between examples")
@pytest.mark.parametrize("written_for", [None, "0.15"])
def test_packed_examples_are_separated_by_eos_on_0_15(tmp_path, monkeypatch, written_for):
    """Every other release separates packed examples with EOS; 0.15 did not. Restored unless the script says
    it was written for 0.15."""
    if written_for:
        monkeypatch.setenv("TRLSHIM_WRITTEN_FOR", written_for)
    tok = helpers.make_tokenizer()
    ds = helpers.text_dataset(12)
    rec, _ = helpers.run_sft(tmp_path, ds, tokenizer=tok, packing=True, max_length=32, steps=1)
    stream = [t for row in rec.rows() for t in row]
    eos = stream.count(tok.eos_token_id)
    if written_for:
        assert eos == 0
    else:
        assert eos >= 8  # one after each example of the rows fed (4 rows of 32 tokens hold well over 8 examples)
        assert any("separated by EOS" in m for m in report.applied())
