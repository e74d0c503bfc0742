"""trlshim's overhead, measured in fresh interpreters (median of several runs); writes overhead.md.

Budgets (issue 5, item 9):
- ``import trlshim`` without TRL: at most 15 ms over a bare interpreter (TRL, wrapt, the patch
  rows are imported only when ``trl`` is);
- patch application after ``import trl`` (``trlshim.patch()`` with everything it imports): at most 50 ms;
- building an SFTTrainer through the shim: at most 5 % slower than stock (same native call,
  ``TRLSHIM_DISABLE=1`` vs patched; the legacy call through the shim is shown for reference).

Usage: ``python benchmarks/overhead.py [--runs 7] [--builds 5] [--out benchmarks/overhead.md]``
with the interpreter of the environment to measure (trlshim importable, TRL installed).
Not a timed test: numbers depend on the machine; run it on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

NOTES = """\
Notes
- Before trlshim 0.1's lazy import, `import trlshim` took ~160 ms (TRL 1.16 venv, wrapt 2.5.2):
  `-X importtime` showed wrapt ~110 ms (wrapt 2.x imports `asyncio` via `wrapt.synchronization` ~49 ms
  and `importlib.metadata` via `wrapt.importer` ~36 ms), the patch rows ~21 ms, `threading` ~8 ms.
  Now `import trlshim` only installs a tiny meta-path finder (`trlshim/__init__.py`,
  `_WhenTrlImported`); wrapt, `packaging`, `logging` and the rows are imported when `trl` is
  (right after trl's own code runs), or at once when trl was imported first.
- The patch cost (row 2) is paid once per process, inside TRL's import (seconds)."""

IMPORT_PROBE = """
import sys, time
t = time.perf_counter()
{stmt}
dt = time.perf_counter() - t
print("RESULT", dt, "trl" in sys.modules, "wrapt" in sys.modules)
"""

PATCH_PROBE = """
import os, sys, time
import trlshim  # TRLSHIM_DISABLE=1: nothing applied
from trl.trainer.sft_trainer import SFTTrainer  # trl and the patch targets fully imported
t = time.perf_counter()
trlshim.patch()
dt = time.perf_counter() - t
from trlshim import hooks
print("RESULT", dt, len(hooks.applied()))
"""

BUILD_PROBE = """
import inspect, os, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
sys.path[:0] = [{tests!r}]
import trlshim
import helpers
from trl.trainer.sft_trainer import SFTTrainer
from transformers import TrainingArguments
tok = helpers.make_tokenizer()
data = helpers.text_dataset(n=32)
out = tempfile.mkdtemp()
params = inspect.signature(SFTTrainer.__init__).parameters
try:
    from trl.trainer.sft_config import SFTConfig
except ImportError:
    SFTConfig = None

def native():
    kw = dict(model=helpers.make_model(), train_dataset=data)
    kw["processing_class" if "processing_class" in params else "tokenizer"] = tok
    if SFTConfig is None:
        kw.update(args=TrainingArguments(**helpers.training_kwargs(out)), dataset_text_field="text", max_seq_length=8)
    else:
        fields = SFTConfig.__dataclass_fields__
        cfg = dict(helpers.training_kwargs(out), dataset_text_field="text")
        cfg["max_length" if "max_length" in fields else "max_seq_length"] = 8
        if "bf16" in fields and fields["bf16"].default is not False:
            cfg["bf16"] = False
        kw["args"] = SFTConfig(**cfg)
    return SFTTrainer(**kw)

def legacy():
    return SFTTrainer(model=helpers.make_model(), args=TrainingArguments(**helpers.training_kwargs(out)),
                      train_dataset=data, tokenizer=tok, dataset_text_field="text", max_seq_length=8)

build = legacy if os.environ.get("BUILD") == "legacy" else native
build()  # warm-up: first-use imports and caches are not the shim's per-build cost
times = []
for _ in range({builds}):
    t = time.perf_counter()
    build()
    times.append(time.perf_counter() - t)
print("RESULT", statistics.median(times))
"""


def run(code: str, env: dict = None) -> list:
    full = dict(os.environ)
    for key in ("TRLSHIM_DISABLE", "TRLSHIM_STRICT", "TRLSHIM_TRL_VERSION"):
        full.pop(key, None)
    full.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return [json.loads(x.lower()) if x in ("True", "False") else float(x) for x in line.split()[1:]]
    raise RuntimeError(f"probe failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def wall(code: str, env: dict = None) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **(env or {})), capture_output=True, check=True)
    return time.perf_counter() - t


def median_of(n, fn):
    return statistics.median(fn() for _ in range(n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh interpreters per measurement")
    ap.add_argument("--builds", type=int, default=5, help="trainer builds per interpreter (median)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("overhead.md")))
    args = ap.parse_args(argv)

    from importlib import metadata

    versions = {p: metadata.version(p) for p in ("trl", "transformers", "torch", "wrapt")}
    rows = []

    # 1. import trlshim without TRL (in-process import time, and whole-interpreter wall time)
    bare = run(IMPORT_PROBE.format(stmt="pass"))
    imp = [run(IMPORT_PROBE.format(stmt="import trlshim")) for _ in range(args.runs)]
    imp_ms = statistics.median(r[0] for r in imp) * 1e3
    pulled = {"trl": any(r[1] for r in imp), "wrapt": any(r[2] for r in imp)}
    wall_bare = median_of(args.runs, lambda: wall("pass"))
    wall_shim = median_of(args.runs, lambda: wall("import trlshim"))
    rows.append(("`import trlshim` (TRL installed, not imported)", f"{imp_ms:.2f} ms",
                 f"{(wall_shim - wall_bare) * 1e3:+.1f} ms interpreter wall time "
                 f"({wall_bare * 1e3:.0f} → {wall_shim * 1e3:.0f} ms); imports trl: {pulled['trl']}, "
                 f"wrapt: {pulled['wrapt']}", "≤ 15 ms", imp_ms <= 15))
    del bare

    # 2. patch application after `import trl`
    pr = [run(PATCH_PROBE, {"TRLSHIM_DISABLE": "1"}) for _ in range(args.runs)]
    patch_ms = statistics.median(r[0] for r in pr) * 1e3
    rows.append(("`trlshim.patch()` after `from trl import SFTTrainer`", f"{patch_ms:.1f} ms",
                 f"{int(pr[0][1])} rows applied; includes importing wrapt and the patch rows", "≤ 50 ms",
                 patch_ms <= 50))

    # 3. building an SFTTrainer: stock vs through the shim (same native call), legacy call for reference
    probe = BUILD_PROBE.format(tests=str(TESTS), builds=args.builds)
    runs = max(3, args.runs // 2)
    stock = statistics.median(run(probe, {"TRLSHIM_DISABLE": "1"})[0] for _ in range(runs))
    shim = statistics.median(run(probe)[0] for _ in range(runs))
    legacy = statistics.median(run(probe, {"BUILD": "legacy"})[0] for _ in range(runs))
    ratio = shim / stock - 1
    rows.append(("SFTTrainer build, native call: stock vs patched", f"{ratio * 100:+.1f} %",
                 f"stock {stock * 1e3:.1f} ms, patched {shim * 1e3:.1f} ms (median of {runs}×{args.builds} builds)",
                 "≤ +5 %", ratio <= 0.05))
    rows.append(("SFTTrainer build, legacy call through the shim (reference)", f"{legacy * 1e3:.1f} ms",
                 f"{(legacy / stock - 1) * 100:+.1f} % vs the stock native call", "-", None))

    lines = [
        "# trlshim overhead",
        "",
        f"Measured by `benchmarks/overhead.py` on {platform.machine()} / Python {platform.python_version()} "
        f"({os.cpu_count()} CPUs, shared), TRL {versions['trl']}, transformers {versions['transformers']}, "
        f"torch {versions['torch']}, wrapt {versions['wrapt']}. Fresh interpreter per run; medians.",
        "",
        "| measurement | result | detail | budget | within |",
        "|---|---|---|---|---|",
    ]
    for name, result, detail, budget, ok in rows:
        lines.append(f"| {name} | {result} | {detail} | {budget} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    lines += ["", NOTES]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0 if all(ok is not False for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
