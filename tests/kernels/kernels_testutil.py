"""Small helpers shared by the kernel tests."""


def rel(a, b):
    """Relative L2 error of a against b, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def leaf(t, dtype=None):
    return t.detach().to(dtype or t.dtype).clone().requires_grad_()
