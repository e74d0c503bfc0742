import pytest
import torch

pytest.importorskip("triton")
from kernels_testutil import leaf, rel  # noqa: E402
from trlshim_kernels import geglu, swiglu  # noqa: E402
from trlshim_kernels.reference import geglu_ref, swiglu_ref  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("fn,ref", [(swiglu, swiglu_ref), (geglu, geglu_ref)])
@pytest.mark.parametrize("shape", [(1,), (3, 7, 131), (2053,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_glu_vs_float64(fn, ref, shape, dtype):
    a, b = torch.randn(shape, dtype=dtype) * 4, torch.randn(shape, dtype=dtype)
    ak, bk = leaf(a), leaf(b)
    c = fn(ak, bk)
    assert c.dtype == dtype and c.shape == a.shape
    g = torch.randn_like(c)
    da, db = torch.autograd.grad(c, (ak, bk), g)
    ar, br = leaf(a, torch.float64), leaf(b, torch.float64)
    cr = ref(ar, br)
    dar, dbr = torch.autograd.grad(cr, (ar, br), g.double())
    for x, y in ((c, cr), (da, dar), (db, dbr)):
        assert torch.isfinite(x).all()
        assert rel(x, y) < TOL[dtype]


def test_extreme_values_finite():
    a = leaf(torch.tensor([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4]))
    b = leaf(torch.ones(7))
    for fn in (swiglu, geglu):
        c = fn(a, b)
        c.sum().backward()
        assert torch.isfinite(c).all() and torch.isfinite(a.grad).all()
        a.grad = b.grad = None


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_fused_mlp_vs_float64(gelu, dtype, tol):
    from trlshim_kernels.swiglu import glu_mlp

    x = torch.randn(2, 7, 24, dtype=dtype)
    ws = [torch.randn(40, 24, dtype=dtype) * 0.2, torch.randn(40, 24, dtype=dtype) * 0.2,
          torch.randn(24, 40, dtype=dtype) * 0.2]
    ins = [leaf(x)] + [leaf(w) for w in ws]
    y = glu_mlp(*ins, gelu=gelu)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, ins, g)
    refs = [leaf(t, torch.float64) for t in [x] + ws]
    act = geglu_ref if gelu else swiglu_ref
    yr = act(refs[0] @ refs[1].T, refs[0] @ refs[2].T) @ refs[3].T
    rgrads = torch.autograd.grad(yr, refs, g.double())
    assert rel(y, yr) < tol
    for a, b in zip(grads, rgrads):
        assert a.shape == b.shape and rel(a, b) < tol
