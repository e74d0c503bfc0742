"""SFTTrainer arguments of every release style, checked by what the model is fed."""
from __future__ import annotations

import warnings

import helpers
import pytest
from packaging.version import Version

import trlshim
from trlshim import report
from trlshim.versions import trl_version

TRL = trl_version()


def _trainer(tmp_path, style, tokenizer, model, max_len=8, packing=False, field="text", n=24, **extra):
    """Build an SFTTrainer the way a script of ``style`` would write it."""
    import trl
    from transformers import TrainingArguments

    data = helpers.text_dataset(n=n, field=field)
    if style == "kwargs":  # TRL 0.7/0.8 style
        return trl.SFTTrainer(
            model=model, args=TrainingArguments(**helpers.training_kwargs(tmp_path)), train_dataset=data,
            tokenizer=tokenizer, dataset_text_field=field, max_seq_length=max_len, packing=packing, **extra,
        )
    if style == "config_old":  # TRL 0.9-0.15 style
        cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field=field, max_seq_length=max_len,
                            packing=packing)
        return trl.SFTTrainer(model=model, args=cfg, train_dataset=data, tokenizer=tokenizer, **extra)
    if style == "config_new":  # TRL 0.16+ style
        cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field=field, max_length=max_len,
                            packing=packing)
        return trl.SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer, **extra)
    if style == "stable":
        cfg = trlshim.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field=field, max_length=max_len,
                                packing=packing)
        return trlshim.SFTTrainer(model, cfg, None, data, None, tokenizer, **extra)
    raise ValueError(style)


def _fed(tmp_path, style, tokenizer, **kw):
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    _trainer(tmp_path, style, tokenizer, model, **kw).train()
    rec.remove()
    return rec


STYLES = ["kwargs", "config_old", "config_new", "stable"]


@pytest.mark.parametrize("style", STYLES)
def test_truncation_length_honoured(tmp_path, tokenizer, style):
    rec = _fed(tmp_path, style, tokenizer, max_len=6)
    rows = rec.rows()
    assert rows and max(len(r) for r in rows) == 6  # the texts are longer than 6 tokens: all cut to 6
    assert rec.first["input_ids"].shape[1] <= 6


@pytest.mark.parametrize("style", STYLES)
def test_packing_really_on(tmp_path, tokenizer, style):
    rec = _fed(tmp_path, style, tokenizer, max_len=32, packing=True)
    for call in rec.calls:
        ids = call["input_ids"]
        if "position_ids" in call and ids.shape[0] == 1:  # padding-free packing: one flattened row
            starts = (call["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
            segments = [b - a for a, b in zip(starts, starts[1:])]
            assert max(segments) <= 32 and ids.shape[1] <= 4 * 32
            assert len(segments) > 4  # more examples than the 4 rows of the batch: packed
        elif ids.shape[0] == 1:  # TRL 0.19 ffd without flash-attention: flattened, no position_ids
            assert 32 < ids.shape[1] <= 4 * 32
        else:  # concatenate-and-chunk packing: full rows of max length, no padding
            assert ids.shape[1] == 32
            assert any((row != tokenizer.pad_token_id).all() for row in ids)  # only a last chunk may be short
            # every example is shorter than a row (< 25 tokens), so a full row holds several of them
            assert max(len(tokenizer(t)["input_ids"]) for t in helpers.texts(24)) < 25


@pytest.mark.parametrize("style", STYLES)
def test_text_field_used(tmp_path, tokenizer, style):
    rec = _fed(tmp_path, style, tokenizer, max_len=64, field="text")
    expected = [tokenizer(t, add_special_tokens=False)["input_ids"][:4] for t in helpers.texts(24)]
    seen = [r for r in rec.rows()]
    # every fed row starts (after an optional BOS) with the tokens of one of our texts
    for row in seen:
        body = row[1:] if row and row[0] == tokenizer.bos_token_id else row
        assert body[:4] in expected


def test_kwarg_and_config_routes_feed_identical_batches(tmp_path, tokenizer):
    a = _fed(tmp_path / "a", "kwargs", tokenizer, max_len=10)
    b = _fed(tmp_path / "b", "config_new", tokenizer, max_len=10)
    assert len(a.calls) == len(b.calls)
    for x, y in zip(a.calls, b.calls):
        assert x["input_ids"].tolist() == y["input_ids"].tolist()
        assert x["labels"].tolist() == y["labels"].tolist()


def test_kwargs_win_over_config(tmp_path, tokenizer):
    import trl

    model = helpers.make_model()
    rec = helpers.Recorder(model)
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), max_length=40, dataset_text_field="text")
    trl.SFTTrainer(model=model, args=cfg, train_dataset=helpers.text_dataset(), processing_class=tokenizer,
                   max_seq_length=5).train()
    assert max(len(r) for r in rec.rows()) == 5
    # the caller's config object is not mutated
    assert getattr(cfg, "max_length", getattr(cfg, "max_seq_length", None)) == 40


def test_translations_reported_once(tmp_path, tokenizer):
    """A call that needs a translation on every release (the tokenizer under the spelling the installed
    release lacks) is reported exactly once, as a warning and in report.applied()."""
    import trl

    lacking = "processing_class" if TRL < Version("0.12") else "tokenizer"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field="text")
            trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(n=8),
                           **{lacking: tokenizer})
    shim = [str(w.message) for w in caught if issubclass(w.category, trlshim.TranslationWarning)]
    named = [m for m in shim if f"SFTTrainer({lacking}=...)" in m]
    assert len(named) == 1, shim
    assert len(shim) == len(set(shim))
    assert set(shim) <= set(report.applied())


def test_strict_mode_turns_translations_into_errors(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("TRLSHIM_STRICT", "1")
    with pytest.raises(trlshim.TranslationError):
        if TRL >= Version("0.12"):
            _trainer(tmp_path, "kwargs", tokenizer, helpers.make_model())
        else:
            _trainer(tmp_path, "config_new", tokenizer, helpers.make_model())


def test_both_spellings_with_different_values_is_an_error(tmp_path, tokenizer):
    import trl

    with pytest.raises(TypeError, match="tokenizer"):
        trl.SFTTrainer(model=helpers.make_model(), args=trl.SFTConfig(**helpers.training_kwargs(tmp_path)),
                       train_dataset=helpers.text_dataset(), tokenizer=tokenizer,
                       processing_class=helpers.make_tokenizer())
    with pytest.raises(TypeError, match="max_seq_length|max_length"):
        trl.SFTConfig(**helpers.training_kwargs(tmp_path), max_seq_length=8, max_length=16)


def test_unknown_argument_names_closest_and_version(tmp_path, tokenizer):
    import trl

    with pytest.raises(TypeError) as err:
        trl.SFTTrainer(model=helpers.make_model(), args=trl.SFTConfig(**helpers.training_kwargs(tmp_path)),
                       train_dataset=helpers.text_dataset(), processing_class=tokenizer, dataset_txt_field="text")
    msg = str(err.value)
    assert "dataset_txt_field" in msg and str(TRL) in msg and "dataset_text_field" in msg


def test_positional_up_to_processing_class(tmp_path, tokenizer):
    import trl

    model = helpers.make_model()
    rec = helpers.Recorder(model)
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), max_length=7)
    trl.SFTTrainer(model, cfg, None, helpers.text_dataset(), None, tokenizer).train()
    assert max(len(r) for r in rec.rows()) == 7
    with pytest.raises(TypeError, match="keyword"):
        trl.SFTTrainer(model, cfg, None, helpers.text_dataset(), None, tokenizer, None)


def test_removed_option_without_equivalent(tmp_path, tokenizer):
    import trl

    if TRL < Version("0.15"):
        pytest.skip("model_init still exists before TRL 0.15")
    with pytest.raises(TypeError, match="model_init"):
        trl.SFTTrainer(model=helpers.make_model(), args=trl.SFTConfig(**helpers.training_kwargs(tmp_path)),
                       train_dataset=helpers.text_dataset(), processing_class=tokenizer, model_init=lambda: None)


def test_noop_option_dropped_with_report(tmp_path, tokenizer):
    rec = _fed(tmp_path, "kwargs", tokenizer, max_len=6, infinite=True) if TRL >= Version("0.13") else None
    if rec is None:
        pytest.skip("infinite is still accepted (and ignored) by this release")
    assert any("infinite" in m for m in report.applied())
