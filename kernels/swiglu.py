"""Fused gated activations: SwiGLU ``silu(gate) * up`` and GeGLU ``gelu_tanh(gate) * up``.

One elementwise pass forward, one pass backward that recomputes the activation from the saved
``gate``/``up`` instead of storing ``act(gate)``. Math is float32, rounded to the tensor dtype
exactly where transformers' ``act_fn(gate) * up`` and its autograd backward round (after the
activation, after each product), so bf16 runs follow stock numbers, not only the formula.
"""
from __future__ import annotations

import torch

from ._common import HAS_TRITON, jit, tl, triton, use_triton
from ._launch import launch
from .reference import GELU_K0, GELU_K1, geglu_ref, swiglu_ref

BLOCK = 2048

if HAS_TRITON:

    @jit
    def _tanh(x):
        return 1.0 - 2.0 / (tl.exp(tl.minimum(2.0 * x, 80.0)) + 1.0)

    @jit
    def _glu_fwd(A, B, C, n, GELU: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(A + offs, mask=m, other=0.0).to(tl.float32)
        b = tl.load(B + offs, mask=m, other=0.0).to(tl.float32)
        if GELU:
            act = 0.5 * a * (1.0 + _tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))
        else:
            act = a / (1.0 + tl.exp(tl.minimum(-a, 80.0)))
        act = act.to(C.dtype.element_ty).to(tl.float32)  # transformers: act(gate) is its own op
        tl.store(C + offs, (act * b).to(C.dtype.element_ty), mask=m)

    @jit
    def _glu_bwd(DC, A, B, DA, DB, C, n, GELU: tl.constexpr, STORE_C: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        dc = tl.load(DC + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.load(A + offs, mask=m, other=0.0).to(tl.float32)
        b = tl.load(B + offs, mask=m, other=0.0).to(tl.float32)
        if GELU:
            th = _tanh(0.7978845608028654 * (a + 0.044715 * a * a * a))
            act = 0.5 * a * (1.0 + th)
            dact = 0.5 * (1.0 + th) + 0.5 * a * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 0.134145 * a * a)
        else:
            s = 1.0 / (1.0 + tl.exp(tl.minimum(-a, 80.0)))
            act = a * s
            dact = s * (1.0 + a * (1.0 - s))
        # rounded where transformers' autograd rounds: act(gate), d act = dc * up, then d gate
        act = act.to(DB.dtype.element_ty).to(tl.float32)
        g_act = (dc * b).to(DA.dtype.element_ty).to(tl.float32)
        tl.store(DA + offs, (g_act * dact).to(DA.dtype.element_ty), mask=m)
        tl.store(DB + offs, (dc * act).to(DB.dtype.element_ty), mask=m)
        if STORE_C:  # recomputed forward output (may alias DC: same element, read above)
            tl.store(C + offs, (act * b).to(C.dtype.element_ty), mask=m)


def forward_launch(a, b, c, n, gelu, go=launch):
    """The kernels' launches (``go=_launch.warm`` compiles only; tensors may then be dtypes)."""
    go(_glu_fwd, (triton.cdiv(n, BLOCK),))(a, b, c, n, GELU=gelu, BLOCK=BLOCK, num_warps=8)


def backward_launch(dc, a, b, da, db, c, n, gelu, store_c, go=launch):
    go(_glu_bwd, (triton.cdiv(n, BLOCK),))(dc, a, b, da, db, c, n, GELU=gelu, STORE_C=store_c, BLOCK=BLOCK,
                                           num_warps=8)


def glu_forward(a: torch.Tensor, b: torch.Tensor, gelu: bool) -> torch.Tensor:
    """``act(a) * b`` of two contiguous tensors, as a new tensor (no autograd)."""
    c = torch.empty_like(a)
    n = a.numel()
    if n:
        forward_launch(a, b, c, n, gelu)
    return c


def glu_backward_in_place(dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gelu: bool) -> None:
    """One pass over contiguous tensors: ``a`` <- d gate, ``b`` <- d up, ``dc`` <- the recomputed ``act(a) * b``."""
    n = a.numel()
    if n:
        backward_launch(dc, a, b, a, b, dc, n, gelu, True)


class GLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, gelu):
        a, b = gate.contiguous(), up.contiguous()
        c = glu_forward(a, b, gelu)
        ctx.save_for_backward(a, b)
        ctx.gelu = gelu
        return c

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        dc = dc.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        if n:
            backward_launch(dc, a, b, da, db, dc, n, ctx.gelu, False)
        return da, db, None


def once(ctx) -> None:
    """A backward that overwrites its saved tensors in place can run once per forward: a second one (a
    ``retain_graph=True`` backward run again) would read gradients where activations were - refuse it."""
    if getattr(ctx, "backward_ran", False):
        raise RuntimeError("trlshim_kernels: this fused MLP's backward overwrites what it saved and cannot run twice "
                           "for one forward (retain_graph=True then backward again); run the forward again, or "
                           "turn the swiglu kernel off")
    ctx.backward_ran = True


class GLUMLPFunction(torch.autograd.Function):
    """``down(glu(x @ Wg^T, x @ Wu^T))`` for bias-free Linear weights, saving x, gate and up only:
    the product fed to ``down`` (intermediate-size, like gate/up) is recomputed in backward by the
    same kernel that makes the gate/up gradients (written in place over the saved gate/up).
    ``expect`` (a recompute whose output nobody reads, see ``offload.mlp_output_unread``): the product and
    ``down`` are not computed, the output is zeros, and backward checks that the gradient it gets is ``expect``."""

    @staticmethod
    def forward(ctx, x, wg, wu, wd, gelu, expect=None):
        x2 = x.reshape(-1, x.shape[-1])
        a = torch.mm(x2, wg.t())
        b = torch.mm(x2, wu.t())
        if expect is None:
            y = torch.mm(glu_forward(a, b, gelu), wd.t())
        else:
            y = x2.new_zeros(x2.shape[0], wd.shape[0])
        ctx.save_for_backward(x2, wg, wu, wd, a, b)
        ctx.gelu, ctx.expect = gelu, expect
        return y.view(*x.shape[:-1], wd.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        once(ctx)
        x2, wg, wu, wd, a, b = ctx.saved_tensors
        check_expected(dy, ctx.expect)
        dy2 = dy.reshape(-1, dy.shape[-1])
        dc = torch.mm(dy2, wd)
        glu_backward_in_place(dc, a, b, ctx.gelu)  # a <- d gate, b <- d up, dc <- recomputed glu output
        nx, ng, nu, nd = ctx.needs_input_grad[:4]
        dwd = torch.mm(dy2.t(), dc) if nd else None
        del dc
        dx = torch.mm(a, wg).addmm_(b, wu).view(*dy.shape[:-1], wg.shape[1]) if nx else None
        dwg = torch.mm(a.t(), x2) if ng else None
        dwu = torch.mm(b.t(), x2) if nu else None
        return dx, dwg, dwu, dwd, None, None


def check_expected(grad: torch.Tensor, expect) -> None:
    """A node that skipped making its output (nobody was to read it) must get exactly the gradient the recompute
    knew; anything else means something did read it: stop (asynchronously, no host sync) rather than train on it."""
    if expect is None:
        return
    if grad.shape != expect.shape:
        raise RuntimeError("trlshim_kernels: an MLP output the recompute skipped was read (gradient shape "
                           f"{tuple(grad.shape)}, expected {tuple(expect.shape)})")
    torch._assert_async((grad == expect).all())


def glu_mlp(x, gate_weight, up_weight, down_weight, gelu: bool = False, expect=None):
    """Fused-activation MLP ``down(act(gate(x)) * up(x))`` with plain (bias-free) weights. ``expect``: see
    :class:`GLUMLPFunction` (ignored where the fused path does not run)."""
    if not use_triton(x, gate_weight) or not (x.dtype == gate_weight.dtype == up_weight.dtype == down_weight.dtype):
        g, u = x @ gate_weight.t(), x @ up_weight.t()
        return ((geglu_ref if gelu else swiglu_ref)(g, u)) @ down_weight.t()
    return GLUMLPFunction.apply(x, gate_weight, up_weight, down_weight, bool(gelu), expect)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` (Llama/Mistral/Qwen MLP), fused forward and backward."""
    if not use_triton(gate, up) or gate.shape != up.shape or gate.dtype != up.dtype:
        return swiglu_ref(gate, up)
    return GLUFunction.apply(gate, up, False)


def geglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(gate) * up`` (Gemma MLP), fused forward and backward."""
    if not use_triton(gate, up) or gate.shape != up.shape or gate.dtype != up.dtype:
        return geglu_ref(gate, up)
    return GLUFunction.apply(gate, up, True)


assert abs(3 * GELU_K1 - 0.134145) < 1e-12 and abs(GELU_K0 - 0.7978845608028654) < 1e-15
