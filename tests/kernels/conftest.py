"""Kernel tests run on CPU through Triton's interpreter; it must be on before the kernels are jitted."""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _interpreter_active():
    pytest.importorskip("triton")
    from trlshim_kernels import _common

    if not _common.use_triton(torch.zeros(1)):
        pytest.skip("trlshim_kernels was imported before TRITON_INTERPRET=1 was set")
    torch.manual_seed(1234)
