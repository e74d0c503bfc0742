import pytest
import torch

pytest.importorskip("triton")
from kernels_testutil import rel  # noqa: E402
from trlshim_kernels import apply_rotary  # noqa: E402
from trlshim_kernels.reference import rope_ref  # noqa: E402


def hf_cos_sin(position_ids, dim, base=10000.0, dtype=torch.float32):
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    f = position_ids[..., None].float() * inv
    emb = torch.cat((f, f), -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("B,Hq,Hk,T,D", [(2, 4, 2, 7, 12), (1, 3, 1, 1, 6), (3, 5, 5, 11, 20)])
def test_rope_vs_float64(dtype, tol, B, Hq, Hk, T, D):
    # q in HF layout: projection (B, T, H, D) transposed to (B, H, T, D), non-contiguous.
    q = torch.randn(B, T, Hq, D, dtype=dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(B, T, Hk, D, dtype=dtype).transpose(1, 2).requires_grad_()
    # packed rows: per-example position ids restart inside a row
    pos = torch.cat([torch.arange(T // 2 + 1), torch.arange(T - T // 2 - 1)])[None].repeat(B, 1)
    pos[-1] = torch.arange(T) + 3
    cos, sin = hf_cos_sin(pos, D, dtype=dtype)
    qo, ko = apply_rotary(q, k, cos, sin)
    assert qo.shape == q.shape and ko.shape == k.shape and qo.dtype == dtype
    gq, gk = torch.randn_like(qo), torch.randn_like(ko)
    dq, dk = torch.autograd.grad((qo * gq).sum() + (ko * gk).sum(), (q, k))
    qd, kd = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    qr, kr = rope_ref(qd, kd, cos.double(), sin.double())
    dqr, dkr = torch.autograd.grad((qr * gq.double()).sum() + (kr * gk.double()).sum(), (qd, kd))
    for a, b in ((qo, qr), (ko, kr), (dq, dqr), (dk, dkr)):
        assert rel(a, b) < tol


def test_rope_cos_broadcast_batch_and_general_cos_sin():
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    k = torch.randn(2, 1, 5, 8, requires_grad=True)
    cos, sin = torch.randn(1, 5, 8), torch.randn(1, 5, 8)  # halves differ: general rotation
    qo, ko = apply_rotary(q, k, cos, sin)
    qr, kr = rope_ref(q, k, cos, sin)
    assert rel(qo, qr) < 1e-6 and rel(ko, kr) < 1e-6
    g1 = torch.autograd.grad(qo.sum() + (ko * 2).sum(), (q, k))
    g2 = torch.autograd.grad(qr.sum() + (kr * 2).sum(), (q, k))
    assert all(rel(a, b) < 1e-6 for a, b in zip(g1, g2))


def test_rope_only_q_used():
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    k = torch.randn(1, 2, 3, 4, requires_grad=True)
    cos, sin = hf_cos_sin(torch.arange(3)[None], 4)
    qo, _ = apply_rotary(q, k, cos, sin)
    qo.sum().backward()
    qd = q.detach().requires_grad_()
    qr, _ = rope_ref(qd, k, cos, sin)
    qr.sum().backward()
    assert rel(qo, qr) < 1e-6  # the output of q alone (k's output unused) is right
    assert rel(q.grad, qd.grad) < 1e-6  # and so is its gradient
    assert k.grad is None or not k.grad.any()  # k gets none
