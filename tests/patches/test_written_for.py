"""Issue 12: ``written_for`` - a script gets the defaults of the release it was written for, for every config
field it left unset; the table is generated (scripts/release_defaults.py) and checked here against the
installed release."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

import trlshim
from trlshim import flags, report, versions
from trlshim.patches.common import written_for

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "release_defaults.py"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("TRLSHIM_WRITTEN_FOR", raising=False)
    monkeypatch.setitem(flags.written_for, "release", None)
    report.reset()


def _installed() -> str:
    return str(versions.trl_version())


def test_the_generated_table_matches_the_installed_release():
    """The defaults table says, for the installed release, exactly what its own classes declare (read in a
    process without trlshim)."""
    if _installed() not in written_for.table()["releases"]:
        pytest.skip(f"TRL {_installed()} is not in the generated table")
    env = dict(os.environ, TRLSHIM_DISABLE="1")
    out = subprocess.run([sys.executable, str(SCRIPT), "dump"], env=env, capture_output=True, text=True, check=True)
    dump = json.loads(out.stdout.strip().splitlines()[-1])
    checked = 0
    for cls, fields in written_for.table()["classes"].items():
        actual = dump["classes"][cls]["defaults"] if cls in dump["classes"] else dump["legacy"].get(cls, {})
        for field, points in fields.items():
            assert written_for.value_at(points, _installed()) == actual.get(field, written_for.ABSENT), (cls, field)
            checked += 1
    assert checked > 100


def test_patch_rejects_an_unknown_release():
    with pytest.raises(ValueError, match="0.8.6, 0.9.6"):
        trlshim.patch(written_for="0.7.1")
    with pytest.raises(ValueError, match="not a TRL release"):
        trlshim.patch(written_for="banana")
    assert versions.matrix_release("0.11") == "0.11.4" and versions.matrix_release("v1.16.0") == "1.16.0"


def _sft_config(tmp_path, **kw):
    import trl

    return trl.SFTConfig(**helpers.training_kwargs(tmp_path, **kw))


@pytest.mark.parametrize("release", ["0.11", "0.20", "1.0"])
def test_sft_config_takes_the_written_for_defaults_where_unset(tmp_path, release):
    import trl

    resolved = versions.matrix_release(release)
    cls = trl.SFTConfig
    diffs = {f: (old, new) for f, old, new in written_for.differences("SFTConfig", cls, resolved)}
    own = helpers.training_kwargs(tmp_path)
    # what a script gets by writing each old default itself (TRL's __post_init__ may still adjust it)
    explicit = {f: getattr(_sft_config(tmp_path, **{f: old}), f) for f, (old, new) in diffs.items()
                if new != written_for.ABSENT and f not in own and old is not None and f not in ("bf16", "fp16")}
    trlshim.patch(written_for=release)
    cfg = _sft_config(tmp_path)
    restored = [m for m in report.applied() if f"written_for={resolved}" in m]
    if resolved == _installed() or not diffs:
        assert not restored
    for field, value in explicit.items():
        assert getattr(cfg, field) == value, (field, getattr(cfg, field), value)
        assert any(f"SFTConfig.{field} " in m for m in restored), (field, restored)
    for field, (_old, new) in diffs.items():  # the others are reported, never dropped silently
        if field not in explicit and field not in own and new != written_for.ABSENT:
            assert any(f"SFTConfig.{field} " in m for m in restored), (field, restored)
    # fields the user set are never touched
    kept = _sft_config(tmp_path, learning_rate=3e-3, logging_steps=7)
    assert kept.learning_rate == 3e-3 and kept.logging_steps == 7



def test_written_for_learning_rate_reaches_the_optimizer(tmp_path):
    """SFT written for 0.11 (learning rate 5e-5, TrainingArguments' default then) on releases whose SFTConfig
    defaults to 2e-5: the optimizer built by the trainer uses 5e-5."""
    import trl

    if "learning_rate" not in trl.SFTConfig.__dataclass_fields__:
        pytest.skip("no SFTConfig of its own here")
    default = trl.SFTConfig.__dataclass_fields__["learning_rate"].default
    trlshim.patch(written_for="0.11")
    overrides = {k: v for k, v in helpers.training_kwargs(tmp_path, max_steps=1).items() if k != "learning_rate"}
    cfg = trl.SFTConfig(**overrides)
    trainer = trl.SFTTrainer(model=helpers.make_model(), args=cfg, train_dataset=helpers.text_dataset(8),
                             processing_class=helpers.make_tokenizer())
    trainer.create_optimizer()
    lrs = {g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {5e-5}, (lrs, default)
    if default != 5e-5:
        assert any("SFTConfig.learning_rate" in m for m in report.applied())


def test_without_written_for_nothing_changes(tmp_path):
    import trl

    cfg = _sft_config(tmp_path)
    assert not [m for m in report.applied() if "written_for" in m]
    assert cfg.logging_steps == 1 and cfg.gradient_checkpointing == trl.SFTConfig.__dataclass_fields__[
        "gradient_checkpointing"].default


def test_unpatch_clears_written_for():
    trlshim.patch(written_for="0.11")
    assert written_for.release() == "0.11.4"
    trlshim.unpatch()
    try:
        assert written_for.release() is None
    finally:
        trlshim.patch()


def test_dpo_written_for_0_11_learning_rate_reaches_the_optimizer(tmp_path):
    """DPOConfig's learning rate went 5e-5 -> 1e-6 in TRL 0.12: a DPO script written for 0.11 that sets none
    trains at 5e-5 on every release (the optimizer's learning rate), and at the installed default without
    written_for."""
    import trl
    from datasets import Dataset

    tok = helpers.make_tokenizer()
    rows = [{"prompt": "hello world", "chosen": " yes", "rejected": " no"}] * 4

    def optimizer_lr(**kw):
        overrides = {k: v for k, v in helpers.training_kwargs(tmp_path, max_steps=1).items() if k != "learning_rate"}
        cfg = trl.DPOConfig(**overrides, **kw)
        trainer = trl.DPOTrainer(model=helpers.make_model(), ref_model=helpers.make_model(), args=cfg,
                                 train_dataset=Dataset.from_list(rows), processing_class=tok)
        trainer.create_optimizer()
        return {g["lr"] for g in trainer.optimizer.param_groups}

    stock = optimizer_lr()
    trlshim.patch(written_for="0.11")
    assert optimizer_lr() == {5e-5}
    assert optimizer_lr(learning_rate=2e-4) == {2e-4}  # set by the user: kept
    if stock != {5e-5}:
        assert any("DPOConfig.learning_rate" in m and "-> 5e-05" in m for m in report.applied())


def test_grpo_written_for_0_15_beta_reaches_the_trainer(tmp_path):
    """GRPO's beta went 0.04 -> 0.0 in TRL 0.19 (no KL term, no reference model): a script written for 0.15
    that sets no beta gets 0.04 in the trainer's loss - and with it the reference model the KL term needs."""
    import trl

    from trlshim.versions import trl_in

    if not trl_in(">=0.14"):
        pytest.skip("no GRPO before TRL 0.14")
    tok = helpers.make_tokenizer()
    tok.model_input_names = ["input_ids", "attention_mask"]
    from datasets import Dataset

    data = Dataset.from_list([{"prompt": t} for t in helpers.texts(4, seed=3)])

    def reward(completions, **kw):
        return [float(len(c)) for c in completions]

    saved = tmp_path / "model"  # TRL builds the reference model from the policy's path (beta > 0)
    helpers.make_model().save_pretrained(saved)

    def build():
        from transformers import AutoModelForCausalLM

        base = helpers.training_kwargs(tmp_path, max_steps=1, per_device_train_batch_size=2)
        cfg = trl.GRPOConfig(**base, num_generations=2, max_completion_length=4)
        return trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(saved), reward_funcs=reward, args=cfg,
                               train_dataset=data, processing_class=tok)

    stock = build()
    trlshim.patch(written_for="0.15")
    restored = build()
    assert restored.beta == 0.04 and restored.args.beta == 0.04
    assert getattr(restored, "ref_model", None) is not None  # the KL term's reference exists
    if stock.beta != 0.04:
        assert any("GRPOConfig.beta 0.0 -> 0.04" in m for m in report.applied())


def test_doctor_lists_what_written_for_would_restore(capsys):
    from trlshim import cli

    cli.main(["doctor", "--written-for", "0.11"])
    out = capsys.readouterr().out
    section = out.split("written_for=0.11.4: defaults that differ", 1)[1]
    assert "SFTConfig" in section and "DPOConfig" in section
    if _installed() != "0.11.4" and versions.trl_in(">=0.12"):  # DPO's learning rate moved at 0.12
        assert "learning_rate: 1e-06 -> 5e-05" in section
