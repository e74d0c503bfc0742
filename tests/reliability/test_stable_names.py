"""Issue 8 item 5: ``trlshim.SFTTrainer`` runs the same SFT pipeline whether or not ``patch()`` ran,
and exactly once over a patched class. Judged by what the model is fed (a prompt/completion dataset:
on TRL < 0.19 the loss mask is trlshim's emulation step, so a skipped pipeline trains on the prompt)."""
from __future__ import annotations

import pytest
from reliability_support import run_scenario, structural_release

SCENARIO = """
    import tempfile, trlshim, trl, helpers
    from datasets import Dataset
    from reliability_support import *
    import trlshim.pipeline as P

    runs = []
    original = P.Pipeline.run
    def counting(self, wrapped, instance, args, kwargs):
        runs.append(1)
        return original(self, wrapped, instance, args, kwargs)
    P.Pipeline.run = counting

    def fed(cls):
        model = helpers.make_model()
        rec = helpers.Recorder(model)
        cfg = trlshim.SFTConfig(**helpers.training_kwargs(tempfile.mkdtemp(), max_steps=1), max_length=24,
                                auto_padding_free=False)
        cls(model, cfg, None, Dataset.from_list(helpers.prompt_completion_rows()), None, helpers.make_tokenizer()).train()
        rec.remove()
        return helpers.fed_examples(rec)

    r = {"patched": trlshim.is_patched(), "layers": trainer_init_wrappers(), "stable": fed(trlshim.SFTTrainer)}
    r["steps_entered"] = len(runs)
    if r["patched"]:
        r["trl"] = fed(trl.SFTTrainer)
    emit(r)
"""


def test_stable_trainer_runs_the_pipeline_with_and_without_patch():
    if not structural_release():
        pytest.skip("structural check: run on the oldest, a middle and the newest matrix release")
    off = run_scenario(SCENARIO, env={"TRLSHIM_DISABLE": "1"}, timeout=300)
    on = run_scenario(SCENARIO, timeout=300)
    assert not off["patched"] and off["layers"] == [] and on["layers"] == ["sft.pipeline"]
    assert off["stable"] == on["stable"] == on["trl"]
    prompt_free = [labels for _, labels in on["stable"]]
    assert all(labels[0] == -100 for labels in prompt_free)  # the prompt carries no loss
    assert all(any(x != -100 for x in labels) for labels in prompt_free)  # the completion does
    assert off["steps_entered"] == 1  # without patch: the subclass runs it
    assert on["steps_entered"] == 2  # with patch: entered twice, the inner run passes through (steps once)
