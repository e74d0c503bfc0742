"""``trlshim migrate``: each rewrite, what it leaves with a ``# trlshim:`` comment, the file handling, and the
round trip: a legacy script migrated for the installed release trains, WITHOUT trlshim, on exactly the tokens
the original script trains on under trlshim."""
from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import pytest

import trlshim  # noqa: F401 - the original scripts run patched
from trlshim import migrate
from trlshim.migrate.target import Target, resolve
from trlshim.versions import trl_version

libcst = pytest.importorskip("libcst")
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.version import Version  # noqa: E402

T116, T0122, T086 = (resolve(v) for v in ("1.16", "0.12", "0.8"))
INSTALLED = resolve(None)


def _mig(src: str, target: Target = T116) -> tuple:
    return migrate.migrate_source(textwrap.dedent(src), target)


SFT_08 = """\
from transformers import TrainingArguments
from trl import SFTTrainer

trainer = SFTTrainer(
    model=model,
    args=TrainingArguments(output_dir="out", max_steps=2),  # keep me
    train_dataset=data,
    tokenizer=tok,
    dataset_text_field="text",
    max_seq_length=512,
    packing=True,
)
"""


def test_sft_kwargs_move_onto_the_inline_config_and_comments_survive():
    new, notes = _mig(SFT_08)
    assert not notes
    assert "from trl import SFTConfig, SFTTrainer" in new
    assert ('args=SFTConfig(output_dir="out", max_steps=2, dataset_text_field="text", max_length=512, '
            'packing=True),  # keep me') in new
    assert "processing_class=tok," in new
    for gone in ("tokenizer=", "max_seq_length", "TrainingArguments("):
        assert gone not in new
    again, _ = migrate.migrate_source(new, T116)
    assert again == new  # idempotent


def test_sft_spellings_follow_the_target():
    new, _ = _mig(SFT_08, T0122)  # 0.12: SFTConfig.max_seq_length, processing_class= exists
    assert "max_seq_length=512" in new and "processing_class=tok" in new and "SFTConfig(" in new
    new, notes = _mig(SFT_08, T086)  # 0.8: no SFTConfig, tokenizer=: nothing to do
    assert new == SFT_08 and not notes
    new, _ = _mig("from trl import SFTTrainer\nt = SFTTrainer(model=m, processing_class=tok, max_length=8)\n", T086)
    assert "tokenizer=tok" in new and "max_seq_length=8" in new  # new spellings written back for 0.8


def test_sft_without_args_gets_a_config_with_the_release_default_output_dir():
    src = 'from trl import SFTTrainer\nt = SFTTrainer(model="org/tiny", train_dataset=d, max_seq_length=8)\n'
    new, _ = _mig(src)
    assert 'args=SFTConfig(output_dir="tiny-SFT", max_length=8)' in new
    new, _ = _mig(src, T0122)
    assert 'args=SFTConfig(output_dir="tmp_trainer", max_seq_length=8)' in new
    new, _ = _mig(src.replace("max_seq_length=8", "max_seq_length=8, dataset_batch_size=10"))
    assert 'args=SFTConfig(output_dir="tiny-SFT", max_length=8))' in new  # a no-op 1.16 lacks: dropped


def test_dpo_kwargs_and_positional_beta_move_onto_a_dpo_config():
    src = ("from transformers import TrainingArguments\nfrom trl import DPOTrainer\n"
           "t = DPOTrainer(model, ref, 0.3, args=TrainingArguments(output_dir='o'), tokenizer=tok, max_length=64)\n")
    new, notes = _mig(src)
    assert not notes
    assert "DPOTrainer(model, ref, args=DPOConfig(output_dir='o', beta=0.3, max_length=64), processing_class=tok)" \
        in new
    assert migrate.migrate_source(new, T116)[0] == new


def test_dict_keys_and_moved_imports():
    src = ('from trl import ORPOTrainer\nfrom trl import SFTConfig\n'
           'c = SFTConfig(output_dir="o", model_init_kwargs={"torch_dtype": "bfloat16"})\n')
    new, _ = _mig(src)
    assert "from trl.experimental.orpo import ORPOTrainer" in new and '{"dtype": "bfloat16"}' in new
    new, _ = _mig(src, T0122)  # TRL 0.12 reads torch_dtype and has ORPOTrainer in trl
    assert new == src
    new, _ = _mig("from trl.commands.cli_utils import TrlParser\n", T116)
    assert new == "from trl import TrlParser\n"
    src = "from trl import (\n    SFTTrainer,\n    PPOv2Trainer,  # rl\n)\n"  # names that stay keep the statement
    new, _ = _mig(src, resolve("0.15"))
    assert new == ("from trl import (\n    SFTTrainer,  # rl\n)\n"
                   "from trl.trainer import PPOTrainer as PPOv2Trainer\n"), new
    new, notes = _mig(src)  # deleted in 1.13: unchanged, with the replacement named
    assert new.startswith("# trlshim: PPOv2Trainer was removed in TRL 1.13") and new.endswith(src)


def test_what_cannot_be_followed_gets_a_comment_and_stays():
    src = "from trl import SFTTrainer\nt = SFTTrainer(model=m, args=my_args, tokenizer=tok, max_seq_length=8)\n"
    new, notes = _mig(src)
    assert len(notes) == 1 and "my_args" in notes[0].text and notes[0].line == 2
    assert "# trlshim: move max_seq_length=" in new and "max_seq_length=8)" in new
    assert migrate.migrate_source(new, T116)[0] == new  # the comment is not added twice
    src = ("from trl import DPOTrainer\nfrom transformers import TrainingArguments\n"
           "t = DPOTrainer(m, r, args=TrainingArguments(output_dir='o'), max_length=8, max_prompt_length=4)\n")
    new, notes = _mig(src)  # the TRL <= 0.11 truncation rule has no DPOConfig spelling on 1.16
    assert notes and "max_prompt_length" in notes[0].text and "TrainingArguments(output_dir='o'), max_length=8" in new


def test_what_only_trlshim_provides_or_applies_gets_a_comment():
    """Names trlshim injects, dataset_kwargs keys the target ignores, config fields of other releases: a script
    that would run without trlshim but train differently (or not import) is never written silently."""
    src = "from trl import DataCollatorForCompletionOnlyLM, SFTTrainer\n"
    new, notes = _mig(src)  # TRL 0.20 deleted it; trlshim injects 0.19's
    assert len(notes) == 1 and "DataCollatorForCompletionOnlyLM" in notes[0].text and new.endswith(src)
    assert _mig(src, T0122) == (src, [])
    src = "from trl.commands.cli_utils import SftScriptArguments, TrlParser\n"
    new, notes = _mig(src)  # its alias trl.SftScriptArguments is trlshim's own on 1.16: the import stays
    assert len(notes) == 1 and "SftScriptArguments" in notes[0].text and "from trl import TrlParser\n" in new
    src = ('from trl import SFTConfig\nc = SFTConfig(output_dir="o", packing=True, '
           'dataset_kwargs={"append_concat_token": False})\n')
    new, notes = _mig(src)  # TRL >= 0.15 ignores the key (no EOS between packed texts only through trlshim)
    assert len(notes) == 1 and "append_concat_token" in notes[0].text
    assert _mig(src, T0122) == (src, [])  # 0.12 reads it itself
    assert not _mig(src.replace("append_concat_token", "skip_prepare_dataset"))[1]
    src = 'from trl import SFTConfig\nc = SFTConfig(output_dir="o", completion_only_loss=True)\n'
    new, notes = _mig(src, T0122)  # a field TRL 0.17 added: on 0.12 only trlshim applies it
    assert len(notes) == 1 and "completion_only_loss" in notes[0].text and "completion_only_loss=True" in new
    assert _mig(src) == (src, [])
    fmt = ("from trl import SFTTrainer\n\n\ndef fmt(example):\n    out = []\n    for t in example['q']:\n"
           "        out.append(t)\n    return out\n\n\nt = SFTTrainer(model=m, formatting_func=fmt)\n")
    assert "formatting_func (a batched function)" in _mig(fmt)[1][0].text  # 1.16 calls it per example
    assert not _mig(fmt, T0122)[1]  # 0.12 unpacked calls it batched
    assert _mig(fmt.replace("formatting_func=fmt", "formatting_func=fmt, packing=True"), T0122)[1]  # packed: not
    per_example = "from trl import SFTTrainer\nt = SFTTrainer(model=m, formatting_func=lambda ex: f\"{ex['q']}\")\n"
    assert not _mig(per_example)[1] and _mig(per_example, T0122)[1]
    assert _mig(per_example.replace("lambda ex: f\"{ex['q']}\"", "imported_fmt"))[1]  # unreadable: refused
    new, notes = _mig(SFT_08, resolve("0.15"))  # 0.15's packing puts no EOS between texts (sft.packing.eos_between)
    assert len(notes) == 1 and "packing=" in notes[0].text
    assert not _mig(SFT_08.replace("packing=True", "packing=False"), resolve("0.15"))[1]


def _tree(tmp_path):
    (tmp_path / "a.py").write_text(SFT_08)
    (tmp_path / "bad.py").write_text("def broken(:\n")
    (tmp_path / "ok.py").write_text("x = 1\n")
    return tmp_path


def test_diff_changes_nothing_and_exits_1(tmp_path, capsys):
    root = _tree(tmp_path)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    rc = migrate.run([str(root / "a.py"), str(root / "ok.py")], "1.16", "diff")
    out = capsys.readouterr().out
    assert rc == 1 and "+    processing_class=tok," in out and "-    tokenizer=tok," in out
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert migrate.run([str(root / "a.py")], "1.16") == 0  # a plain run only reports
    assert "would be rewritten for TRL 1.16.0" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert migrate.run([str(root / "ok.py")], "1.16", "diff") == 0


def test_unparsable_skipped_write_and_second_run_clean(tmp_path, capsys):
    root = _tree(tmp_path)
    assert migrate.run([str(root)], "1.16", "write") == 2  # bad.py reported, the rest written
    out = capsys.readouterr().out
    assert "bad.py: cannot parse" in out and (root / "bad.py").read_text() == "def broken(:\n"
    assert "processing_class=tok" in (root / "a.py").read_text()
    (root / "bad.py").unlink()
    assert migrate.run([str(root)], "1.16", "diff") == 0  # idempotent on disk


def test_write_refuses_a_file_changed_during_the_run(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(SFT_08)
    result = migrate.migrate_file(path, T116)
    assert result.changed
    path.write_text(SFT_08 + "# edited meanwhile\n")
    assert "changed on disk" in migrate.write(result)
    assert path.read_text().endswith("# edited meanwhile\n")


def test_cli_without_libcst_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "libcst", None)
    with pytest.raises(SystemExit, match=r"pip install trlshim\[migrate\]"):
        migrate.run(["x.py"], "1.16")


# --- round trip ------------------------------------------------------------------------------------------

PRELUDE = """\
import io
import json
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

ASSETS, OUT = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(ASSETS)
model = AutoModelForCausalLM.from_pretrained(ASSETS)
data = Dataset.from_list(json.loads(Path(ASSETS, "data.json").read_text()))
fed = []


def record(module, args, kwargs):
    if module.training:
        ids = args[0] if args else kwargs.get("input_ids")
        labels = kwargs.get("labels")
        fed.append([ids.tolist(), None if labels is None else labels.tolist()])


model.register_forward_pre_hook(record, with_kwargs=True)
TA = dict(max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, report_to="none", save_strategy="no",
          seed=0, bf16=False, dataloader_num_workers=0, disable_tqdm=True)
"""
SFT_SCRIPT = PRELUDE + """
from trl import SFTTrainer

trainer = SFTTrainer(
    model=model,
    args=TrainingArguments(output_dir=OUT, **TA),
    train_dataset=data,
    tokenizer=tok,
    dataset_text_field="text",
    max_seq_length=8,
    packing=True,
)
trainer.train()
Path(OUT, "fed.json").write_text(json.dumps({"fed": fed, "shim": "trlshim" in sys.modules}))
"""
DPO_SCRIPT = PRELUDE + """
from trl import DPOTrainer

ref = AutoModelForCausalLM.from_pretrained(ASSETS)
trainer = DPOTrainer(
    model,
    ref,
    args=TrainingArguments(output_dir=OUT, remove_unused_columns=False, **TA),
    beta=0.3,
    train_dataset=data,
    tokenizer=tok,
    max_length=64,
)
trainer.train()
Path(OUT, "fed.json").write_text(json.dumps({"fed": fed, "beta": trainer.beta, "shim": "trlshim" in sys.modules}))
"""


def _assets(tmp_path, rows):
    assets = tmp_path / "assets"
    tok = helpers.make_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(assets)
    helpers.make_model().save_pretrained(assets)
    (assets / "data.json").write_text(json.dumps(rows))
    return assets


def _dpo_rows():
    return [{"prompt": helpers.texts(1, seed=i, n_min=12, n_max=14)[0],
             "chosen": " " + helpers.texts(1, seed=100 + i, n_min=10, n_max=12)[0],
             "rejected": " " + helpers.texts(1, seed=200 + i, n_min=10, n_max=12)[0]} for i in range(8)]


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_round_trip_migrated_script_trains_on_the_same_tokens_without_trlshim(tmp_path, monkeypatch, kind):
    script, rows = (SFT_SCRIPT, [{"text": t} for t in helpers.texts(24)]) if kind == "sft" else (DPO_SCRIPT,
                                                                                             _dpo_rows())
    assets = _assets(tmp_path, rows)
    legacy = tmp_path / "legacy.py"
    legacy.write_text(script)
    migrated_src, notes = migrate.migrate_source(script, INSTALLED)
    if kind == "sft" and INSTALLED.version in SpecifierSet(">=0.15,<0.16"):  # only trlshim puts EOS between texts
        assert len(notes) == 1 and "packing=" in notes[0].text and f"# trlshim: {notes[0].text}" in migrated_src
        return
    assert not notes
    if INSTALLED.version >= Version("0.13"):  # the trainer keywords are gone there: the script must change
        assert migrated_src != script and "tokenizer=" not in migrated_src
    migrated = tmp_path / "migrated.py"
    migrated.write_text(migrated_src)

    original_out, migrated_out = tmp_path / "orig", tmp_path / "mig"
    original_out.mkdir()
    migrated_out.mkdir()
    monkeypatch.setattr(sys, "argv", [str(legacy), str(assets), str(original_out)])
    runpy.run_path(str(legacy), run_name="__main__")  # under trlshim (imported above)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRLSHIM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and not Path(p, "trlshim").is_dir())  # not even importable by path
    proc = subprocess.run([sys.executable, str(migrated), str(assets), str(migrated_out)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    original = json.loads((original_out / "fed.json").read_text())
    result = json.loads((migrated_out / "fed.json").read_text())
    assert original["shim"] and not result["shim"]
    assert original["fed"] and result["fed"] == original["fed"]
    if kind == "dpo":
        assert result["beta"] == original["beta"] == 0.3


def test_round_trip_fixture_really_needs_the_shim_where_the_api_changed(tmp_path):
    """The legacy SFT script itself fails without trlshim on releases that removed the trainer keywords, so the
    round trip above really tests the rewrite (not a script that runs anyway)."""
    if trl_version() < Version("0.16"):
        pytest.skip("tokenizer= and the SFT trainer keywords still work on this release")
    assets = _assets(tmp_path, [{"text": t} for t in helpers.texts(8)])
    legacy = tmp_path / "legacy.py"
    legacy.write_text(SFT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRLSHIM_")}
    proc = subprocess.run([sys.executable, str(legacy), str(assets), str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "unexpected keyword argument" in proc.stderr




# --- round trip of the real-world-style corpus (tests/corpus) ----------------------------------------------

from corpus import _support  # noqa: E402

# Per corpus script: the releases on which the codemod MUST produce a script that runs without trlshim (a
# refusal there fails the test), and the constructs a refusal elsewhere may name (a note naming anything else
# fails it). Everywhere, a script migrated without notes must train on the same tokens as the original under
# trlshim, and every note must stand in the migrated source as a ``# trlshim:`` comment.
CORPUS_ROUND_TRIP = {
    # TrainingArguments built elsewhere (not followed), the CLI helpers' script-argument classes
    "cli_sft_v08.py": ("<0.9", ("`training_args`", "SftScriptArguments", "get_kbit_device_map")),
    "notebook_packing_v07.py": ("<0.9", ("`training_args`",)),
    # no SFTConfig before 0.9; dataset_kwargs' append_concat_token ignored from 0.15
    "peft_example_v09.py": (">=0.9,<0.15", ("SFTConfig", "dataset_kwargs")),
    # a batched formatting_func (TRL >= 0.15 calls it per example); TRL 0.20 deleted DataCollatorForCompletionOnlyLM
    "chat_formatting_v08.py": ("<0.15", ("formatting_func", "DataCollatorForCompletionOnlyLM")),
    # no SFTConfig before 0.9, no completion_only_loss before 0.17
    "completion_only_v1.py": (">=0.20", ("SFTConfig", "completion_only_loss")),
}


def test_corpus_table_names_every_script():
    assert sorted(CORPUS_ROUND_TRIP) == _support.SCRIPTS


@pytest.fixture(scope="module")
def corpus_round_trip(tmp_path_factory):
    """Every corpus script migrated for the installed release; the ones migrated without notes run in ONE
    subprocess that never imports trlshim (one interpreter start for all), recording what each fed the model."""
    root = tmp_path_factory.mktemp("corpus_rt")
    env = _support.make_env(root)
    migrated, jobs = {}, []
    for name in _support.SCRIPTS:
        source = Path(_support.CORPUS, name).read_text()
        new, notes = migrate.migrate_source(source, INSTALLED)
        path = root / f"migrated_{name}"
        path.write_text(new)
        migrated[name] = (source, new, notes, str(path))
        if not notes:
            out = str(root / f"out_{name}")
            jobs.append({"path": str(path), "argv": _support.argv(name, env, out), "environ": _support.environ(env, out)})
    result = {"fed": {}, "trlshim_imported": []}
    if jobs:
        (root / "jobs.json").write_text(json.dumps(jobs))
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("TRLSHIM_")}
        # no worktree checkout on the path: only the migrated scripts and the trlshim-free _support
        run_env["PYTHONPATH"] = os.pathsep.join(p for p in run_env.get("PYTHONPATH", "").split(os.pathsep)
                                                if p and not Path(p, "trlshim").is_dir())
        proc = subprocess.run([sys.executable, os.path.join(_support.CORPUS, "_support.py"), str(root / "fed.json"),
                               str(root / "jobs.json")], env=run_env, cwd=root, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-6000:]
        result = json.loads((root / "fed.json").read_text())
    return env, migrated, result


@pytest.mark.parametrize("name", _support.SCRIPTS)
def test_corpus_script_migrated_trains_on_the_same_tokens_without_trlshim_or_says_why_not(
        name, corpus_round_trip, tmp_path, monkeypatch):
    env, migrated, result = corpus_round_trip
    source, new, notes, path = migrated[name]
    must_run, allowed = CORPUS_ROUND_TRIP[name]
    if notes:  # refused: every note stands in the source, names a known construct, and is reported
        assert INSTALLED.version not in SpecifierSet(must_run), [n.text for n in notes]
        for note in notes:
            assert any(a in note.text for a in allowed), note.text
            assert f"# trlshim: {note.text}" in [ln.strip() for ln in new.splitlines()], note.text
        report = io.StringIO()
        migrate.run([os.path.join(_support.CORPUS, name)], None, out=report)  # a plain run writes nothing
        assert all(f":{n.line}: {n.text}" in report.getvalue() for n in notes)  # the report lists each
        return
    assert not result["trlshim_imported"], result["trlshim_imported"]
    fed = result["fed"][path]
    out = str(tmp_path / "out")
    for key, value in _support.environ(env, out).items():
        monkeypatch.setenv(key, value)
    rec, _ = _support.run(os.path.join(_support.CORPUS, name), _support.argv(name, env, out))  # under trlshim
    original = json.loads(json.dumps(_support.fed_per_forward(rec)))
    assert original and fed == original
    if INSTALLED.version >= Version("0.20") and "tokenizer=" in source:  # the spelling is gone: it must change
        assert "tokenizer=" not in new

