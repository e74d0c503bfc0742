"""Wrong calls, table-driven. Each one gives a clear error (type, the offending name, the closest
valid name where there is one, the installed TRL version) or the documented behaviour; none is
swallowed and none trains on something the caller did not ask for.

Documented behaviour decided here (see ``trlshim.translate.OPTION_TYPES``):
- wrong types for ``max_seq_length``/``max_length``/``packing``/``eval_packing``/``dataset_text_field``
  are a ``TypeError`` from trlshim on every release and in every spelling (stock TRL accepts
  ``packing="no"`` as truthy, i.e. packing on, and ``max_seq_length=True`` as 1 token);
- both spellings of one option with the same value are accepted (one option, given twice);
- packing with a custom collator: either TRL's own error, or the caller's collator really
  receives the packed rows (never silently replaced, packing never silently off).
"""
from __future__ import annotations

import helpers
import pytest
from packaging.version import Version

from trlshim.versions import trl_version

TRL = trl_version()
V = str(TRL)


def _config(tmp_path, **kw):
    import trl

    return trl.SFTConfig(**helpers.training_kwargs(tmp_path), **kw)


def _trainer(tmp_path, tok, *, args=None, n=8, **kw):
    import trl
    from transformers import TrainingArguments

    args = args if args is not None else TrainingArguments(**helpers.training_kwargs(tmp_path))
    kw.setdefault("dataset_text_field", "text")
    return trl.SFTTrainer(model=helpers.make_model(), args=args, train_dataset=helpers.text_dataset(n=n), **kw)


def _legacy(tmp_path, tok, **kw):
    return _trainer(tmp_path, tok, tokenizer=tok, **kw)


def _native(tmp_path, tok, **kw):
    import trl

    spelled = "processing_class" if TRL >= Version("0.12") else "tokenizer"
    return trl.SFTTrainer(model=helpers.make_model(), args=_config(tmp_path, dataset_text_field="text"),
                          train_dataset=helpers.text_dataset(n=8), **{spelled: tok}, **kw)


# id -> (call(tmp_path, tok), exception type, substrings the message must contain, min TRL or None)
ERRORS = {
    "trainer_unknown_kwarg": (lambda p, t: _legacy(p, t, max_seq_length=8, dataset_txt_field="text"),
                              TypeError, ["'dataset_txt_field'", "did you mean 'dataset_text_field'", V], None),
    "config_unknown_kwarg": (lambda p, t: _config(p, max_seq_lenght=8),
                             TypeError, ["'max_seq_lenght'", "did you mean", V], None),
    "config_unknown_kwarg_far": (lambda p, t: _config(p, completely_unknown_option=1),
                                 TypeError, ["'completely_unknown_option'", V], None),
    "trainer_both_tokenizer_spellings": (
        lambda p, t: _legacy(p, t, processing_class=helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)),
        TypeError, ["'processing_class'", "'tokenizer'", "pass only one"], None),
    "trainer_both_length_spellings": (lambda p, t: _legacy(p, t, max_seq_length=8, max_length=16),
                                      TypeError, ["max_length", "max_seq_length", "pass only one"], None),
    "config_both_length_spellings": (lambda p, t: _config(p, max_seq_length=8, max_length=16),
                                     TypeError, ["max_length", "max_seq_length", "pass only one"], None),
    "removed_model_init": (lambda p, t: _native(p, t, model_init=helpers.make_model),
                           TypeError, ["'model_init'", "removed", V, "model="], "0.15"),
    "trainer_max_seq_length_str": (lambda p, t: _legacy(p, t, max_seq_length="8"),
                                   TypeError, ["max_seq_length='8'", "int", V], None),
    "trainer_max_seq_length_float": (lambda p, t: _legacy(p, t, max_seq_length=8.0),
                                     TypeError, ["max_seq_length=8.0", "int", V], None),
    "trainer_max_seq_length_bool": (lambda p, t: _legacy(p, t, max_seq_length=True),
                                    TypeError, ["max_seq_length=True", "int", V], None),
    "trainer_packing_yes": (lambda p, t: _legacy(p, t, max_seq_length=8, packing="yes"),
                            TypeError, ["packing='yes'", "bool", V], None),
    "trainer_packing_no": (lambda p, t: _legacy(p, t, max_seq_length=8, packing="no"),
                           TypeError, ["packing='no'", "bool", V], None),
    "config_packing_no": (lambda p, t: _config(p, packing="no"), TypeError, ["packing='no'", "bool", V], None),
    "config_max_length_str": (lambda p, t: _config(p, max_length="8"), TypeError, ["max_length='8'", V], None),
    "config_text_field_int": (lambda p, t: _config(p, dataset_text_field=1),
                              TypeError, ["dataset_text_field=1", "str", V], None),
    "positional_past_processing_class": (
        lambda p, t: __import__("trl").SFTTrainer(helpers.make_model(), _config(p), None, helpers.text_dataset(n=8),
                                                  None, t, None),
        TypeError, ["keyword", V], None),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_wrong_call_is_a_clear_error(case, tmp_path, tokenizer):
    call, exc_type, parts, since = ERRORS[case]
    if since and TRL < Version(since):
        pytest.skip(f"still a valid option before TRL {since}")
    with pytest.raises(exc_type) as err:
        call(tmp_path, tokenizer)
    msg = str(err.value)
    missing = [p for p in parts if p not in msg]
    assert not missing, f"{missing} not in: {msg}"


def test_missing_text_field_is_trls_own_error(tmp_path, tokenizer):
    # a valid type naming a column the dataset lacks: TRL's own error, not swallowed, no fallback column
    with pytest.raises((KeyError, ValueError)) as err:  # TRL's / datasets' own (a TypeError would be ours)
        _legacy(tmp_path, tokenizer, max_seq_length=8, dataset_text_field="txt")
    assert "txt" in str(err.value)


def test_same_value_under_both_spellings_is_one_option(tmp_path, tokenizer):
    rec_model = helpers.make_model()
    rec = helpers.Recorder(rec_model)
    import trl
    from transformers import TrainingArguments

    trainer = trl.SFTTrainer(model=rec_model, args=TrainingArguments(**helpers.training_kwargs(tmp_path)),
                             train_dataset=helpers.text_dataset(n=8), tokenizer=tokenizer, processing_class=tokenizer,
                             dataset_text_field="text", max_seq_length=7, max_length=7)
    batch = next(iter(trainer.get_train_dataloader()))
    rec_model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")})
    rec.remove()
    assert max(len(r) for r in rec.rows()) == 7


def _conversations(n=8):
    from datasets import Dataset

    rng = __import__("random").Random(5)
    return Dataset.from_list([
        {"messages": [{"role": "user", "content": helpers.sentence(rng)},
                      {"role": "assistant", "content": helpers.sentence(rng)}]} for _ in range(n)
    ])


def _assistant_only_supported() -> bool:
    import dataclasses

    from trlshim.patches.sft import config as sft_config
    from trlshim.patches.sft.arguments import installed_config_class

    cls = installed_config_class()
    native = "assistant_only_loss" in {f.name for f in dataclasses.fields(cls)}
    return native or "assistant_only_loss" in sft_config.EMULATED


def test_assistant_only_loss_without_generation_markers(tmp_path):
    if not _assistant_only_supported():
        pytest.xfail("assistant_only_loss is neither native here nor emulated by trlshim.patches (yet)")
    import trl

    tok = helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    with pytest.raises(Exception) as err:
        trainer = trl.SFTTrainer(model=model, args=_config(tmp_path, assistant_only_loss=True, max_length=32),
                                 train_dataset=_conversations(), processing_class=tok)
        trainer.train()  # an error only here would still be an error; silence is the failure
    rec.remove()
    assert "generation" in str(err.value)
    assert rec.calls == []  # nothing was trained


def test_packing_with_custom_collator(tmp_path, tokenizer):
    """Documented: TRL's own error, or the caller's collator really gets packed rows."""
    from transformers import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    seen = []

    def collator(features):
        seen.append(len(features))
        return base(features)

    n = 16
    try:
        trainer = _legacy(tmp_path, tokenizer, max_seq_length=32, packing=True, data_collator=collator, n=n)
    except (ValueError, TypeError) as exc:  # refused: the message must say why
        assert "collator" in str(exc) or "packing" in str(exc)
        return
    assert trainer.data_collator is collator or getattr(trainer.data_collator, "__wrapped__", None) is collator
    batches = list(trainer.get_train_dataloader())
    assert seen, "the caller's collator was never called"
    rows = sum(b["input_ids"].shape[0] for b in batches)
    # fewer rows than examples (TRL 0.15 packs without EOS between documents, so rows are counted)
    assert rows < n, "packing is off: one example per row"


# --- issue 9 item 10: messages ------------------------------------------------------------------------------


def test_conflicting_spellings_name_the_installed_one(tmp_path, tokenizer):
    import trl
    from packaging.version import Version

    from trlshim.versions import trl_version

    installed = "tokenizer" if trl_version() < Version("0.12") else "processing_class"
    with pytest.raises(TypeError) as err:
        trl.SFTTrainer(model=helpers.make_model(), args=_config(tmp_path, max_length=8),
                       train_dataset=helpers.text_dataset(8), tokenizer=tokenizer,
                       processing_class=helpers.make_tokenizer())
    assert f"spells it {installed!r}" in str(err.value)


def test_dataset_num_proc_must_be_an_int(tmp_path, tokenizer):
    with pytest.raises(TypeError, match="dataset_num_proc='2' must be an int"):
        _legacy(tmp_path, tokenizer, max_seq_length=8, dataset_num_proc="2")


def test_empty_dataset_is_a_clear_error(tmp_path, tokenizer):
    import trl
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"train_dataset is empty \(0 rows"):
        trl.SFTTrainer(model=helpers.make_model(), args=_config(tmp_path, max_length=8),
                       train_dataset=Dataset.from_dict({"text": []}), processing_class=tokenizer)


def test_no_text_column_names_the_columns(tmp_path, tokenizer):
    import trl
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"no column 'text' to train on \(its columns: \['body', 'id'\]\)"):
        trl.SFTTrainer(model=helpers.make_model(), args=_config(tmp_path, max_length=8),
                       train_dataset=Dataset.from_list([{"id": i, "body": t} for i, t in enumerate(helpers.texts(4))]),
                       processing_class=tokenizer)


def test_legacy_config_after_unpatch_raises_instead_of_dropping_fields(tmp_path, tokenizer):
    """Issue 9 item 4 (TRL < 0.9): trlshim's SFTConfig given to the stock trainer after unpatch()."""
    import trl

    import trlshim

    if TRL >= Version("0.9"):
        pytest.skip("TRL >= 0.9 has its own SFTConfig: the fields are the release's own")
    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path), dataset_text_field="text", max_seq_length=16,
                        packing=True)
    stock = trl.SFTTrainer
    trlshim.unpatch()
    try:
        with pytest.raises(RuntimeError, match=r"after trlshim.unpatch\(\).*packing=True, max_seq_length=16"):
            trainer = stock(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                            tokenizer=tokenizer, dataset_text_field="text")
            next(iter(trainer.get_train_dataloader()))
    finally:
        trlshim.patch()
    assert cfg.remove_unused_columns is True  # patched again: a plain field
