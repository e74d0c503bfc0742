import pytest
import torch

pytest.importorskip("triton")
from kernels_testutil import leaf, rel  # noqa: E402
from trlshim_kernels import rms_norm  # noqa: E402
from trlshim_kernels.reference import rms_norm_ref  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("shape", [(1, 7), (37, 67), (3, 5, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_forward_backward_vs_float64(shape, dtype, offset):
    x = torch.randn(shape, dtype=dtype) * 3
    w = torch.randn(shape[-1], dtype=dtype)
    xk, wk = leaf(x), leaf(w)
    y = rms_norm(xk, wk, 1e-6, offset)
    assert y.dtype == dtype and y.shape == x.shape
    g = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (xk, wk), g)
    xr, wr = leaf(x, torch.float64), leaf(w, torch.float64)
    yr = rms_norm_ref(xr, wr, 1e-6, offset)
    dxr, dwr = torch.autograd.grad(yr, (xr, wr), g.double())
    for a, b in ((y, yr), (dx, dxr), (dw, dwr)):
        assert torch.isfinite(a).all()
        assert rel(a, b) < TOL[dtype]


# fp16 here: Triton's CPU interpreter casts float32 -> bfloat16 by truncation (the GPU rounds to
# nearest even), so bit-level agreement with transformers is checked in fp16 on CPU and in bf16
# by benchmarks/bench_gpu.py.
def test_matches_hf_rounding_fp16():
    # Llama form rounds x/rms to the input dtype before the weight multiply, like transformers.
    x = torch.randn(16, 96, dtype=torch.float16)
    w = torch.randn(96, dtype=torch.float16)
    torch.testing.assert_close(rms_norm(x, w, 1e-5), rms_norm_ref(x, w, 1e-5), atol=1e-3, rtol=1e-3)


def test_fp32_weight_half_input_promotes():
    x = torch.randn(9, 33, dtype=torch.float16)
    w = leaf(torch.randn(33))
    y = rms_norm(x, w)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, rms_norm_ref(x, w.detach()), atol=1e-3, rtol=1e-3)
    y.sum().backward()
    assert w.grad.dtype == torch.float32


def test_noncontiguous_input():
    x = leaf(torch.randn(40, 12)[:, :10].T.contiguous().T)  # stride(-1) != 1
    w = leaf(torch.randn(40))
    x = leaf(torch.randn(10, 40)[::2])
    y = rms_norm(x, w)
    assert rel(y, rms_norm_ref(x.detach(), w.detach())) < 1e-6
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
