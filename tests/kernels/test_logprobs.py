"""linear_logprobs: per-token log-probabilities, entropy and top-1 of an LM head against float64 autograd, for
every upstream gradient (the uniform one whose gradients the forward makes, per-token weights, the entropy's)."""
import pytest
import torch

pytest.importorskip("triton")
from trlshim_kernels import linear_logprobs  # noqa: E402
from trlshim_kernels.logprobs import COUNTS  # noqa: E402


def reference(h, W, b, t, cap=None):
    z = h.double() @ W.double().t() + (b.double() if b is not None else 0)
    if cap:
        z = cap * torch.tanh(z / cap)
    lp = torch.log_softmax(z, -1)
    return lp.gather(1, t[:, None])[:, 0], -(lp.exp() * lp).sum(-1), z.argmax(-1) == t


LOSSES = {  # each a different upstream gradient into (log_probs, entropy)
    "uniform": lambda lp, ent, w: -lp.sum() / lp.shape[0],
    "per_token": lambda lp, ent, w: -(lp * w.to(lp.dtype)).sum(),
    "masked": lambda lp, ent, w: -(lp * (w > 0.3).to(lp.dtype)).sum(),
    "entropy": lambda lp, ent, w: -lp.sum() / lp.shape[0] + 0.3 * ent.sum(),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cap", [None, 5.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_matches_float64_autograd(dtype, cap, bias, loss):
    N, H, V = 37, 16, 300
    h = torch.randn(N, H).to(dtype).requires_grad_()
    W = (torch.randn(V, H) * 0.3).to(dtype).requires_grad_()
    b = (torch.randn(V) * 0.1).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, V, (N,))
    w = torch.rand(N, dtype=torch.float64)
    before = dict(COUNTS)
    lp, ent, top = linear_logprobs(h, W, t, b, softcap=cap, chunk_size=8)  # 5 chunks: the sums across chunks
    LOSSES[loss](lp, ent, w).backward()
    got = [x.grad for x in (h, W, b) if x is not None]
    ins = [x.detach().double().requires_grad_() for x in (h, W, b) if x is not None]
    rlp, rent, rtop = reference(ins[0], ins[1], ins[2] if bias else None, t, cap)
    LOSSES[loss](rlp, rent, w).backward()
    # float32: summation order only. bf16: the logits and the gradient tile are rounded to bf16 (unit roundoff
    # 2^-8), as in every bf16 head (TRL's included): a relative error of a few 2^-9, bounded here by 2^-6
    tol = 1e-5 if dtype == torch.float32 else 2 ** -6
    for g, x in zip(got, ins):
        assert g.dtype == dtype
        assert (g.double() - x.grad).norm() <= tol * x.grad.norm()
    assert lp.dtype == ent.dtype == torch.float32 and top.dtype == torch.bool
    assert (lp.double() - rlp).abs().max() <= (1e-5 if dtype == torch.float32 else 0.05)
    assert (ent.double() - rent).abs().max() <= (1e-5 if dtype == torch.float32 else 0.05)
    if dtype == torch.float32:
        assert torch.equal(top, rtop)
    path = "scaled" if loss == "uniform" else "recomputed"  # only the uniform gradient uses the forward's work
    assert COUNTS[path] == before[path] + 1 and sum(COUNTS.values()) == sum(before.values()) + 1


def test_float32_weights_under_bf16_autocast_get_unrounded_gradients():
    """bf16 GEMMs, but the gradient of a float32 weight is not rounded to bf16 on its way back."""
    h = torch.randn(20, 16, requires_grad=True)
    W = (torch.randn(64, 16) * 0.3).requires_grad_()
    t = torch.randint(0, 64, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _, _ = linear_logprobs(h, W, t)
    (-lp.sum()).backward()
    assert h.grad.dtype == W.grad.dtype == torch.float32
    assert not torch.equal(W.grad, W.grad.bfloat16().float())  # float32 values, not bf16 ones widened


def test_frozen_head_and_no_grad():
    h = torch.randn(10, 8, requires_grad=True)
    W = torch.randn(40, 8)
    t = torch.randint(0, 40, (10,))
    lp, _, _ = linear_logprobs(h, W, t)
    (-lp.mean()).backward()
    ref = torch.autograd.grad(-torch.log_softmax(h @ W.t(), -1).gather(1, t[:, None]).mean(), h)[0]
    assert torch.allclose(h.grad, ref, atol=1e-6)
    with torch.no_grad():
        lp2, _, _ = linear_logprobs(h, W, t)
    assert torch.allclose(lp2, lp.detach())


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    h = torch.randn(12, 8, requires_grad=True)
    W = torch.randn(30, 8, requires_grad=True)
    lp, _, _ = linear_logprobs(h, W, torch.randint(0, 30, (12,)))
    (-lp.sum()).backward(retain_graph=True)
    first = W.grad.clone()
    W.grad = None
    (-lp.sum()).backward()
    assert torch.equal(first, W.grad)
