"""kernel_integrate: every backend against the step-by-step reference (values and gradients to x
and the kernel), and against leaky integration when the kernel is beta^j."""

import math

import pytest
import torch

from spikescan.ops import backends, kernel_integrate, leaky_integrate
from spikescan.ops.kernel_integrate import exponential_kernel, kernel_integrate_reference

FAST = ("toeplitz", "fft")


def _case(T, rest, K, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *rest, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    k = torch.randn(K, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    return x, k


def _grads(v, x, k, seed=1):
    gout = torch.randn(v.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(v.dtype)
    return torch.autograd.grad((v * gout).sum(), [x, k])


def test_registered_backends():
    assert set(backends("kernel_integrate")) == {"sequential", "toeplitz", "fft"}


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("T,rest,K", [(1, (3,), 1), (1, (2, 3), 5), (7, (2, 3), 7), (40, (4, 5), 40),
                                      (40, (3,), 9), (33, (2, 2), 50), (300, (2, 3), 300), (17, (), 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backend_matches_the_reference(backend, T, rest, K, dtype):
    x, k = _case(T, rest, K, dtype)
    v = kernel_integrate(x, k, backend=backend)
    ref = kernel_integrate_reference(x, k)
    assert v.shape == x.shape and v.dtype == dtype
    # each output is a sum of at most min(T, K) products of O(1) terms: relative error ~ n eps
    # in the summation order of a GEMM or an FFT (the FFT's error grows with log n, bounded here)
    n = min(T, K)
    eps = torch.finfo(dtype).eps
    tol = 8 * n * eps * (1 + math.log2(max(2 * T, 2)))
    scale = float(ref.detach().abs().max()) + 1.0
    assert float((v - ref).abs().max()) <= tol * scale
    gx, gk = _grads(v, x, k)
    rx, rk = _grads(ref, x, k)
    assert float((gx - rx).abs().max()) <= tol * (float(rx.abs().max()) + 1.0)
    # the kernel's gradient sums over every (t, b, n): T * prod(rest) terms
    m = T * max(1, math.prod(rest))
    assert float((gk - rk).abs().max()) <= 8 * m * eps * (float(rk.abs().max()) + 1.0)


@pytest.mark.parametrize("backend", ("sequential", *FAST))
@pytest.mark.parametrize("beta", [0.0, 0.05, 0.9, 0.999])
def test_exponential_kernel_is_leaky_integration(backend, beta):
    x = torch.randn(64, 3, 5, dtype=torch.float64)
    k = exponential_kernel(beta, 64, 0.3, dtype=torch.float64)
    want = leaky_integrate(x, beta, scale=0.3)
    torch.testing.assert_close(kernel_integrate(x, k, backend=backend), want, rtol=1e-12, atol=1e-12)


def test_short_kernel_forgets_older_inputs():
    x = torch.zeros(10, 1, dtype=torch.float64)
    x[2] = 1.0
    v = kernel_integrate(x, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))
    assert v[:, 0].tolist() == [0, 0, 1.0, 0.5, 0.25, 0, 0, 0, 0, 0]


def test_half_inputs_compute_in_float32():
    x = torch.randn(20, 3).to(torch.bfloat16)
    k = torch.rand(20)
    v = kernel_integrate(x, k)
    assert v.dtype == torch.bfloat16
    torch.testing.assert_close(v.float(), kernel_integrate_reference(x.float(), k), rtol=2e-2, atol=2e-2)


def test_bad_inputs_are_named():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="kernel must be 1-D"):
        kernel_integrate(x, torch.ones(5, 2))
    with pytest.raises(ValueError, match="kernel must be 1-D"):
        kernel_integrate(x, torch.ones(0))
    with pytest.raises(TypeError, match="kernel must be a floating"):
        kernel_integrate(x, torch.ones(5, dtype=torch.long))
    with pytest.raises(TypeError, match="kernel must be a torch.Tensor"):
        kernel_integrate(x, [1.0, 0.5])
    with pytest.raises(ValueError, match="backend"):
        kernel_integrate(x, torch.ones(5), backend="fused")
    with pytest.raises(ValueError, match="non-finite"):
        kernel_integrate(x, torch.tensor([1.0, float("nan")]), check=True)
