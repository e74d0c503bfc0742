"""How the corpus scripts are run and what they fed the model, shared by ``test_corpus.py`` (the scripts under
trlshim) and ``test_migrate.py`` (the scripts migrated by ``trlshim migrate``, run WITHOUT trlshim).

This module never imports trlshim (``helpers`` does, through ``trlshim.tiny``: only ``make_env`` uses it, in the
test process), so ``python _support.py OUT.json SCRIPT...`` runs migrated scripts in a clean interpreter and
writes what each one fed the model, and whether anything imported trlshim.
"""
from __future__ import annotations

import json
import os
import random
import runpy
import sys

CORPUS = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = sorted(n for n in os.listdir(CORPUS) if n.endswith(".py") and not n.startswith("_"))
ENV_KEYS = ("CORPUS_MODEL", "CORPUS_DATA", "CORPUS_OUT")


class Recorder:
    """Records the inputs of every forward call of a model (a forward pre-hook)."""

    KEYS = ("input_ids", "labels", "attention_mask", "position_ids")

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not module.training:
            return None
        rec = {}
        if args:
            kwargs = dict(kwargs, input_ids=args[0])
        for key in self.KEYS:
            value = kwargs.get(key)
            if value is not None:
                rec[key] = value.detach().cpu().clone()
        self.calls.append(rec)
        return None

    def remove(self):
        self.handle.remove()

    @property
    def first(self):
        return self.calls[0]

    def rows(self, key="input_ids"):
        """Every training row seen, as lists with padding (per attention mask) removed."""
        out = []
        for call in self.calls:
            ids = call[key]
            mask = call.get("attention_mask")
            for i in range(ids.shape[0]):
                row = ids[i]
                if mask is not None:
                    row = row[mask[i].bool()]
                out.append(row.tolist())
        return out


def call_examples(call, key="labels") -> list:
    """The examples of one forward call as [input_ids, values of ``key``]: padding removed by the attention
    mask, rows split where position_ids restart (packed / padding-free rows)."""
    out = []
    ids, vals = call["input_ids"], call.get(key)
    pos, mask = call.get("position_ids"), call.get("attention_mask")
    for i in range(ids.shape[0]):
        keep = mask[i].bool() if mask is not None else slice(None)
        row_ids = ids[i][keep].tolist()
        row_vals = None if vals is None else vals[i][keep].tolist()
        if pos is None:
            out.append((row_ids, row_vals))
            continue
        row_pos = pos[min(i, pos.shape[0] - 1)][keep].tolist()
        starts = [j for j, p in enumerate(row_pos) if p == 0] + [len(row_ids)]
        if starts[0] != 0:
            starts = [0] + starts
        for a, b in zip(starts, starts[1:]):
            out.append((row_ids[a:b], None if row_vals is None else row_vals[a:b]))
    return out


def fed_examples(rec, key="labels") -> list:
    """Each example the model was fed, over all calls, as (input_ids, values of ``key``)."""
    return [ex for call in rec.calls for ex in call_examples(call, key)]


def fed_per_forward(rec) -> list:
    """What each forward call was fed, as JSON-able [[input_ids, labels], ...] per call."""
    return [[[ids, labels] for ids, labels in call_examples(call)] for call in rec.calls]


# --- the environment: a tiny model and tokenizer as a local "hub" folder, and the datasets -------------------

def make_env(root) -> dict:
    """CORPUS_MODEL / CORPUS_DATA under ``root`` (test process only: builds them with ``helpers``)."""
    import helpers

    model_dir, data_dir = root / "model", root / "data"
    tok = helpers.make_tokenizer(helpers.PLAIN_CHAT_TEMPLATE)  # {% generation %} needs transformers >= 4.42
    helpers.make_model(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data_dir.mkdir()
    rng = random.Random(7)
    _jsonl(data_dir / "train.jsonl", [{"text": t, "content": t} for t in helpers.texts(8, seed=5, n_min=4, n_max=12)])
    _jsonl(data_dir / "chat.jsonl", [{"messages": [{"role": "user", "content": helpers.sentence(rng, 2, 5)},
                                                   {"role": "assistant", "content": helpers.sentence(rng, 2, 5)}]}
                                     for _ in range(4)])
    _jsonl(data_dir / "prompt_completion.jsonl", helpers.prompt_completion_rows(4, seed=8))
    return {"model": str(model_dir), "data": str(data_dir), "tok": tok}


def _jsonl(path, rows):
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def argv(name: str, env: dict, out: str) -> list:
    """The command line a script is run with (only the CLI script takes one)."""
    if name != "cli_sft_v08.py":
        return []
    return ["--model_name_or_path", env["model"], "--dataset_name", env["data"], "--dataset_text_field", "content",
            "--max_seq_length", "8", "--output_dir", out, "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--save_strategy", "no", "--evaluation_strategy", "no", "--report_to", "none", "--use_cpu", "True",
            "--seed", "0", "--torch_dtype", "float32", "--trust_remote_code", "False"]


def environ(env: dict, out: str) -> dict:
    return {"CORPUS_MODEL": env["model"], "CORPUS_DATA": env["data"], "CORPUS_OUT": out}


def run(path, args=()) -> tuple:
    """Run the script at ``path`` as ``__main__`` (as ``python path args...`` would), recording the inputs of the
    model it trains; returns (Recorder, the script's globals). The caller sets the CORPUS_* variables."""
    import transformers

    recorders = []
    original = transformers.Trainer.train

    def train(self, *a, **kw):
        recorders.append(Recorder(self.model))
        return original(self, *a, **kw)

    saved_argv = sys.argv
    transformers.Trainer.train = train
    sys.argv = [str(path), *args]
    try:
        script_globals = runpy.run_path(str(path), run_name="__main__")
    finally:
        transformers.Trainer.train = original
        sys.argv = saved_argv
    assert len(recorders) == 1, "the script trained once"
    recorders[0].remove()
    assert len(recorders[0].calls) == 2, "two optimizer steps, one forward each"
    return recorders[0], script_globals


def reset_accelerate():
    """accelerate's process-wide state singletons cleared (a script's mixed precision must not decide the next's)."""
    try:
        from accelerate.state import AcceleratorState, PartialState
    except ImportError:
        return
    for cls in (AcceleratorState, PartialState):
        reset = getattr(cls, "_reset_state", None)
        if reset is not None:
            try:
                reset(True) if cls is AcceleratorState else reset()
            except TypeError:
                reset()


def main(out_json: str, jobs_json: str) -> None:
    """Run each job ({"path", "argv", "environ"}) in this interpreter; write {path: fed per forward} and whether
    trlshim was imported."""
    with open(jobs_json) as fh:
        jobs = json.load(fh)
    results = {}
    for job in jobs:
        os.environ.update(job["environ"])
        for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:  # one script's precision is not the next's
            del os.environ[key]
        reset_accelerate()
        rec, _ = run(job["path"], job["argv"])
        results[job["path"]] = fed_per_forward(rec)
    with open(out_json, "w") as fh:
        json.dump({"fed": results, "trlshim_imported": sorted(m for m in sys.modules
                                                               if m.split(".")[0] in ("trlshim", "trlshim_kernels"))},
                  fh)


if __name__ == "__main__":
    main(*sys.argv[1:])
