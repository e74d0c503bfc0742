"""``ConstantLengthDataset`` where old scripts put it (``legacy_cld``, step ``sft.constant_length_dataset``):
each value of an ``eval_dataset`` dict, and pre-tokenized rows (TRL 0.13-0.19). What the model is fed,
in training and in each named evaluation, is exactly the rows the old class cuts."""
from __future__ import annotations

import helpers
import pytest

from trlshim.versions import trl_in


class EvalRecorder:
    """The ``input_ids`` rows of every forward call in eval mode (``helpers.Recorder`` keeps training's)."""

    def __init__(self, model):
        self.rows = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not module.training:
            ids = args[0] if args else kwargs["input_ids"]
            self.rows.extend(ids.tolist())


def _cld(tok, dataset, seq_length, **kw):
    from trl.trainer import ConstantLengthDataset

    return ConstantLengthDataset(tok, dataset, seq_length=seq_length, shuffle=False, **kw)


def _cut(tok, token_lists, seq_length):
    """The old class's rows: the token lists joined with EOS after each, cut into full rows of ``seq_length``
    (one buffer: the default num_of_sequences holds all the data)."""
    stream = [i for ids in token_lists for i in list(ids) + [tok.eos_token_id]]
    return [stream[i:i + seq_length] for i in range(0, len(stream) - seq_length + 1, seq_length)]


def _trainer(tmp_path, model, tok, train, eval_dataset=None, **kw):
    import trl

    cfg = trl.SFTConfig(**helpers.training_kwargs(tmp_path, max_steps=2, per_device_train_batch_size=2, **kw),
                        max_seq_length=8, packing=True, dataset_text_field="text", auto_padding_free=False)
    return trl.SFTTrainer(model=model, args=cfg, train_dataset=train, eval_dataset=eval_dataset, tokenizer=tok)


def test_each_constant_length_dataset_of_an_eval_dict_is_evaluated_under_its_name(tmp_path):
    tok = helpers.make_tokenizer()
    model = helpers.make_model()
    texts_a, texts_b = helpers.texts(10, seed=2), helpers.texts(14, seed=3)
    data_a, data_b = helpers.text_dataset(10, seed=2), helpers.text_dataset(14, seed=3)
    evals = {"a": _cld(tok, data_a, 8, dataset_text_field="text"),
             "b": _cld(tok, data_b, 12, dataset_text_field="text")}
    trainer = _trainer(tmp_path, model, tok, _cld(tok, helpers.text_dataset(12), 8, dataset_text_field="text"), evals)
    expected = {"a": _cut(tok, [tok(t)["input_ids"] for t in texts_a], 8),
                "b": _cut(tok, [tok(t)["input_ids"] for t in texts_b], 12)}
    assert all(expected.values()) and expected["a"] != expected["b"][:len(expected["a"])]
    for name in ("a", "b"):
        rec = EvalRecorder(model)
        metrics = trainer.evaluate(eval_dataset=trainer.eval_dataset[name], metric_key_prefix=f"eval_{name}")
        rec.handle.remove()
        assert rec.rows == expected[name], name  # every row, once, in the old class's order, nothing re-cut
        assert f"eval_{name}_loss" in metrics
    metrics = trainer.evaluate()  # the dict itself: one loss per name
    assert {"eval_a_loss", "eval_b_loss"} <= set(metrics)


def _token_lists(tok, n=10, seed=4):
    return [tok(t)["input_ids"] for t in helpers.texts(n, seed=seed)]


def _pretokenized(tok, seq_length):
    from datasets import Dataset

    return _cld(tok, Dataset.from_dict({"input_ids": _token_lists(tok)}), seq_length,
                formatting_func=lambda example: example["input_ids"])


@pytest.mark.skipif(trl_in("<0.13"), reason="TRL < 0.13's own ConstantLengthDataset (left as the release has it) "
                    "takes texts only: pre-tokenized rows came in 0.13")
def test_pretokenized_rows_are_joined_as_they_are(tmp_path):
    tok = helpers.make_tokenizer()
    rows = [r["input_ids"].tolist() for r in _pretokenized(tok, 8)]
    assert rows == _cut(tok, _token_lists(tok), 8)


@pytest.mark.skipif(trl_in("<0.13"), reason="TRL < 0.13's own ConstantLengthDataset takes texts only")
def test_pretokenized_constant_length_dataset_trains_on_its_rows(tmp_path):
    tok = helpers.make_tokenizer()
    model = helpers.make_model()
    rec = helpers.Recorder(model)
    _trainer(tmp_path, model, tok, _pretokenized(tok, 12)).train()
    rec.remove()
    fed = rec.rows()
    cut = _cut(tok, _token_lists(tok), 12)
    assert len(fed) == 4 and all(r in cut for r in fed)  # whole rows of the old class (the sampler shuffles them)
    assert rec.rows("labels") == fed


@pytest.mark.skipif(trl_in("<0.19"), reason="TRL < 0.19 packs each dataset itself, the iterable as it is")
def test_a_plain_dataset_beside_constant_length_rows_is_reported_unpacked(tmp_path):
    from trlshim import report

    tok = helpers.make_tokenizer()
    report.reset()
    _trainer(tmp_path, helpers.make_model(), tok, _cld(tok, helpers.text_dataset(12), 8, dataset_text_field="text"),
             {"cut": _cld(tok, helpers.text_dataset(6, seed=5), 8, dataset_text_field="text"),
              "plain": helpers.text_dataset(6, seed=6)})
    assert any("eval_dataset['plain'] is fed unpacked" in m for m in report.applied()), report.applied()
