"""pytest plugin for running TRL's own test files offline, with or without trlshim.

``pytest -p transparency_plugin ...`` with ``TRLSHIM_HUB`` (built by ``transparency_hub.py``) and
``HF_HUB_CACHE`` pointing at it. ``TRLSHIM_TRANSPARENCY=shim`` imports trlshim before TRL (the
"with" run); anything else leaves TRL stock. ``datasets.load_dataset`` is redirected to the
local parquet stand-ins for the hub datasets the tests name (before the test modules bind it).
"""
from __future__ import annotations

import os

if os.environ.get("TRLSHIM_TRANSPARENCY") == "shim":
    import trlshim  # noqa: F401  (patches TRL when it is imported)


def _redirect_load_dataset():
    import datasets

    hub = os.environ["TRLSHIM_HUB"]
    original = datasets.load_dataset

    def load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
        local = os.path.join(hub, "datasets", *str(path).split("/"))
        if not os.path.isdir(local):
            return original(path, name, *args, split=split, streaming=streaming, **kwargs)
        folder = os.path.join(local, name) if name else local
        files = {f[: -len(".parquet")]: os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet")}
        return original("parquet", data_files=files, split=split, streaming=streaming)

    datasets.load_dataset = load_dataset


def _cpu_bf16():
    """TRL's tests run on GPUs, where TRL >= 0.19's default ``bf16=True`` is valid. On CPU, stock
    TRL then refuses every config (and trlshim would pass ``bf16=False``): report bf16 as available
    (torch runs bf16 on CPU), so both runs see the same environment."""
    import transformers.training_args as ta
    import transformers.utils as tu

    for module in (tu, ta):
        if hasattr(module, "is_torch_bf16_gpu_available"):
            module.is_torch_bf16_gpu_available = lambda *a, **k: True


def pytest_configure(config):
    _redirect_load_dataset()
    _cpu_bf16()
