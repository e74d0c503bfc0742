import pytest
import torch

pytest.importorskip("triton")
from kernels_testutil import leaf, rel  # noqa: E402
from trlshim_kernels import fused_linear_cross_entropy as flce  # noqa: E402
from trlshim_kernels.reference import linear_cross_entropy_ref as ref  # noqa: E402


def make(N, H, V, ignore_every=0, bias=False, dtype=torch.float32):
    h = torch.randn(N, H, dtype=dtype)
    W = torch.randn(V, H, dtype=dtype) * 0.5
    b = torch.randn(V, dtype=dtype) if bias else None
    lab = torch.randint(0, V, (N,))
    if ignore_every:
        lab[::ignore_every] = -100
    return h, W, b, lab


def check(h, W, b, lab, tol=2e-5, **kw):
    ins = [leaf(t) for t in (h, W, b) if t is not None]
    loss, st = flce(ins[0], ins[1], lab, ins[2] if b is not None else None, return_stats=True, **kw)
    grads = torch.autograd.grad(loss * 1.7, ins)
    refs = [leaf(t, torch.float64) for t in (h, W, b) if t is not None]
    kw.pop("chunk_size", None)
    lr, sr = ref(refs[0], refs[1], lab, refs[2] if b is not None else None, **kw)
    rgrads = torch.autograd.grad(lr * 1.7, refs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - lr.item()) <= tol * max(1.0, abs(lr.item()))
    for g, r in zip(grads, rgrads):
        assert torch.isfinite(g).all()
        assert rel(g, r) < tol * 10
    assert st.n_correct.item() == sr.n_correct.item()
    assert st.n_tokens.item() == sr.n_tokens.item()
    assert abs(st.entropy_sum.item() - sr.entropy_sum.item()) <= 1e-4 * max(1.0, sr.entropy_sum.item())
    return loss, st


@pytest.mark.parametrize("N,H,V,chunk", [(1, 8, 13, None), (29, 16, 1031, 7), (64, 24, 257, None), (17, 5, 2, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_vs_float64(N, H, V, chunk, reduction):
    check(*make(N, H, V, ignore_every=3), reduction=reduction, chunk_size=chunk)


def test_bias_and_softcap():
    check(*make(23, 12, 300, ignore_every=4, bias=True), softcap=3.0, chunk_size=5)
    check(*make(23, 12, 300, bias=False), softcap=30.0)


def test_accuracy_counter_counts_hits():
    h, W, _, lab = make(40, 16, 97, ignore_every=5)
    with torch.no_grad():
        am = (h @ W.t()).argmax(-1)
    lab = torch.where(torch.arange(40) % 2 == 0, am, lab)  # half the rows hit
    lab[::5] = -100
    _, st = check(h, W, None, lab)
    expect = ((am == lab) & (lab != -100)).sum().item()
    assert st.n_correct.item() == expect and expect >= 15


def test_all_ignored_is_zero_not_nan():
    h, W, _, lab = make(9, 8, 50)
    lab[:] = -100
    hk, Wk = leaf(h), leaf(W)
    for reduction in ("mean", "sum"):
        loss, st = flce(hk, Wk, lab, reduction=reduction, return_stats=True)
        loss.backward()
        assert loss.item() == 0.0 and st.n_tokens.item() == 0 and st.entropy_sum.item() == 0.0
        assert torch.all(hk.grad == 0) and torch.all(Wk.grad == 0)
        hk.grad = Wk.grad = None


def test_num_items_in_batch_grad_accumulation_equivalence():
    # GA=4 x B=1 with num_items_in_batch == GA=1 x B=4 with mean reduction.
    h, W, _, lab = make(4 * 11, 8, 61, ignore_every=3)
    hk, Wk = leaf(h), leaf(W)
    full = flce(hk, Wk, lab)
    full.backward()
    g_full = (hk.grad.clone(), Wk.grad.clone())
    hk.grad = Wk.grad = None
    n_items = (lab != -100).sum()
    total = 0.0
    for i in range(4):
        sl = slice(11 * i, 11 * (i + 1))
        micro = flce(hk[sl], Wk, lab[sl], num_items_in_batch=n_items)
        micro.backward()
        total += micro.item()
    assert abs(total - full.item()) < 1e-5
    assert rel(hk.grad, g_full[0]) < 1e-5 and rel(Wk.grad, g_full[1]) < 1e-5
    # int num_items_in_batch behaves like the tensor
    assert abs(flce(h, W, lab, num_items_in_batch=int(n_items)).item() - full.item()) < 1e-5


def test_no_grad_and_leading_dims():
    h, W, _, lab = make(12, 8, 40, ignore_every=2)
    with torch.no_grad():
        a = flce(h.view(3, 4, 8), W, lab.view(3, 4))
    b, _ = ref(h.double(), W.double(), lab)
    assert abs(a.item() - b.item()) < 1e-5


def test_half_precision_close():
    h, W, _, lab = make(33, 32, 515, ignore_every=4, dtype=torch.float16)
    hk, Wk = leaf(h), leaf(W)
    loss = flce(hk, Wk, lab, chunk_size=16)
    loss.backward()
    hr, Wr = leaf(h, torch.float64), leaf(W, torch.float64)
    lr, _ = ref(hr, Wr, lab)
    lr.backward()
    assert abs(loss.item() - lr.item()) < 1e-2 * abs(lr.item())
    assert rel(hk.grad, hr.grad) < 1e-2 and rel(Wk.grad, Wr.grad) < 1e-2
