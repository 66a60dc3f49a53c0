"""Time-fused leaky integration (numba kernel on the CPU) against ``leaky_integrate`` sequential."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikescan.ops.leaky import parallel
from spikescan.ops.leaky.fused import scan_kernel
from spikescan.ops import leaky_integrate


def leaky_integrate_fused(x, decay, **kw):
    return leaky_integrate(x, decay, backend="fused", **kw)

F64 = torch.float64


def rel_err(a, b):
    return float((a - b).detach().abs().max() / a.detach().abs().max().clamp_min(1e-30))


def params(per_neuron, B, F, g, dtype=torch.float32):
    if per_neuron:
        decay = (0.5 + 0.5 * torch.rand(F, generator=g, dtype=dtype)).requires_grad_()
        scale = (0.5 + torch.rand(B, 1, generator=g, dtype=dtype)).requires_grad_()
    else:
        decay = torch.tensor(0.95, dtype=dtype, requires_grad=True)
        scale = torch.tensor(0.3, dtype=dtype, requires_grad=True)
    v0 = torch.randn(B, F, generator=g, dtype=dtype).requires_grad_()
    return decay, scale, v0


@pytest.mark.parametrize("T", [1, 2, 100, 1000])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_matches_sequential(T, per_neuron):
    g = torch.Generator().manual_seed(T)
    B, F = 3, 16
    x = torch.randn(T, B, F, generator=g).requires_grad_()
    decay, scale, v0 = params(per_neuron, B, F, g)
    u1 = leaky_integrate(x, decay, scale=scale, v0=v0, backend="sequential")
    u2 = leaky_integrate_fused(x, decay, scale=scale, v0=v0)
    assert torch.equal(u1, u2)  # same operations in the same order
    w = torch.randn(u1.shape, generator=g)
    g1 = torch.autograd.grad((u1 * w).sum(), [x, decay, scale, v0])
    g2 = torch.autograd.grad((u2 * w).sum(), [x, decay, scale, v0])
    for a, b in zip(g1, g2):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-4, rel_err(a, b)


def test_defaults_and_partial_grads():
    x = torch.randn(50, 2, 4, requires_grad=True)
    d = torch.rand(4)  # no grad: the kernel skips the decay reduction input
    u1 = leaky_integrate(x, d, backend="sequential")
    u2 = leaky_integrate_fused(x, d)
    assert torch.equal(u1, u2)
    (g1,) = torch.autograd.grad(u1.pow(2).sum(), x)
    (g2,) = torch.autograd.grad(u2.pow(2).sum(), x)
    assert rel_err(g1, g2) <= 1e-5


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 2, 3, generator=g, dtype=F64, requires_grad=True)
    decay, scale, v0 = params(True, 2, 3, g, F64)
    assert torch.autograd.gradcheck(lambda *a: leaky_integrate_fused(a[0], a[1], scale=a[2], v0=a[3]),
                                    (x, decay, scale, v0))


def test_scan_kernel_fits_the_backend_contract():
    """``scan_kernel`` as a ``parallel.SCAN_KERNELS`` forward kernel, with the shared backward."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(40, 2, 5, generator=g, requires_grad=True)
    d = torch.rand(1, 5, generator=g).requires_grad_()
    v0 = torch.randn(2, 5, generator=g).requires_grad_()
    u_ref = parallel.leaky_reference(y, d, v0)
    u = parallel.LinearScan.apply(scan_kernel, y, d, v0, None)
    assert torch.equal(u_ref, u)
    g1 = torch.autograd.grad(u_ref.sum(), [y, d, v0])
    g2 = torch.autograd.grad(u.sum(), [y, d, v0])
    for a, b in zip(g1, g2):
        assert rel_err(a, b) <= 1e-5


@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 15), rest=st.lists(st.integers(1, 5), min_size=0, max_size=3), seed=st.integers(0, 999))
def test_hypothesis_shapes(T, rest, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([T] + rest, generator=g, requires_grad=True)
    decay = torch.rand(rest[-1:], generator=g).requires_grad_() if rest else 0.7
    u1 = leaky_integrate(x, decay, scale=0.5, backend="sequential")
    u2 = leaky_integrate_fused(x, decay, scale=0.5)
    assert u1.shape == u2.shape and torch.equal(u1, u2)
    leaves = [x] + ([decay] if rest else [])
    for a, b in zip(torch.autograd.grad(u1.sum(), leaves), torch.autograd.grad(u2.sum(), leaves)):
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    x = torch.randn(30, 2, 3).to(dtype).requires_grad_()
    u1 = leaky_integrate(x, 0.9, backend="sequential")
    u2 = leaky_integrate_fused(x, 0.9)
    assert u2.dtype == dtype and torch.equal(u1, u2)
    u2.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("call, err, match", [
    (lambda x: leaky_integrate_fused(x, float("inf")), ValueError, "decay must be finite"),
    (lambda x: leaky_integrate_fused(x, -0.1), ValueError, "decay must lie in"),
    (lambda x: leaky_integrate_fused(x, torch.rand(4)), ValueError, "broadcast"),
    (lambda x: leaky_integrate_fused(x, 0.5, scale=float("nan")), ValueError, "scale must be finite"),
    (lambda x: leaky_integrate_fused(x, 0.5, chunk_size=0), ValueError, "chunk_size"),
    (lambda x: leaky_integrate_fused(x.long(), 0.5), TypeError, "floating"),
    (lambda x: leaky_integrate_fused(x.to("meta"), 0.5), ValueError, "CPU .numba. and CUDA"),
    (lambda x: leaky_integrate_fused(x, torch.rand(3, device="meta")), ValueError, "is on meta"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(torch.randn(5, 2, 3))


@pytest.mark.parametrize("shape", [(7, 0, 3), (7, 2, 0), (7, 0)])
def test_empty_batch(shape):
    """No neuron (B = 0 or N = 0): an empty output and grad_x, zero parameter gradients; also the
    bare forward kernel.  Before: "range() arg 3 must not be zero" from the kernels' thread split."""
    x = torch.randn(shape, requires_grad=True)
    per = shape[2:]
    decay, scale, v0 = (torch.full(per, 0.5, requires_grad=True) for _ in range(3))
    u = leaky_integrate_fused(x, decay, scale=scale, v0=v0)
    assert u.shape == x.shape
    grads = torch.autograd.grad(u.sum(), [x, decay, scale, v0])
    assert grads[0].shape == x.shape
    for g, p in zip(grads[1:], (decay, scale, v0)):
        assert torch.equal(g, torch.zeros_like(p))
    assert scan_kernel(x.detach(), decay.detach(), None).shape == x.shape
