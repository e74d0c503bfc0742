"""Issue 15 item 1 (CPU part): trlshim under data-parallel training. A TRL-0.8-style SFT script
(tests/distributed/legacy_sft_worker.py) runs as two gloo processes and as one process at the same
global batch: in every rank the rows are applied and the legacy call translated, each rank is fed its
own half of every global batch, the losses equal the single-process run, and ``unpatch()`` restores
the originals in each rank.

Launched with ``torch.distributed.run`` (torchrun): it sets the environment accelerate reads
(RANK, WORLD_SIZE, MASTER_ADDR...), and accelerate then runs the Trainer as MULTI_CPU over gloo, as
``accelerate launch`` does on GPUs (its own CPU launcher needs MPI). Runs on the oldest, a middle and
the newest matrix release (two process launches cost ~40 s)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import structural_release

WORKER = Path(__file__).resolve().parents[1] / "distributed" / "legacy_sft_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, *launcher, per_device_batch: int) -> list:
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_DISABLED="true")
    proc = subprocess.run([sys.executable, *launcher, str(WORKER), str(out), str(per_device_batch)], env=env,
                          cwd=out, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


def test_two_gloo_processes_train_like_one_process_at_the_same_global_batch(tmp_path):
    if not structural_release():
        pytest.skip("runs on the oldest, a middle and the newest matrix release (CI time)")
    single, = _run(tmp_path / "single", per_device_batch=4)
    ranks = _run(tmp_path / "ddp", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 str(_free_port()), per_device_batch=2)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    for r in ranks:  # every rank patched and translated the legacy call, then unpatched cleanly
        assert r["active_rows"] == single["active_rows"] and "sft.pipeline" in r["active_rows"]
        assert r["translations"] == single["translations"]
        assert r["restored"]
    assert len(single["fed"]) == 3 and all(len(r["fed"]) == 3 for r in ranks)
    for step in range(3):
        a, b = ranks[0]["fed"][step], ranks[1]["fed"][step]
        assert len(a) == len(b) == 2 and sorted(a) != sorted(b)  # each rank its own shard
        assert sorted(a + b) == sorted(single["fed"][step])  # together: the single run's global batch
        assert all(len(row) == 16 for row in a + b)  # max_seq_length=16 reached the data
    for r in ranks:
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-4, abs=1e-5)
    assert single["losses"][-1] < single["losses"][0]
