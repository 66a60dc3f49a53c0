"""Fused SPSN step against the unfused composition fed with the SAME uniforms, and the RNG."""

import math

import numpy as np
import pytest
import torch

from spikescan.ops._kernels._common import uniforms_reference
from spikescan.ops.firing import gumbel_spike, sigmoid_bernoulli
from spikescan.ops.spsn import fused_spsn, spsn_uniforms
from spikescan.ops import leaky_integrate

F64 = torch.float64


def rel_err(a, b):
    return float((a - b).detach().abs().max() / a.detach().abs().max().clamp_min(1e-30))


def unfused(x, alpha, beta, U, firing, tau=1.0, logit_scale=1.0):
    """The reference composition: two sequential scans, then the firing op with the given noise."""
    i = leaky_integrate(x, alpha, backend="sequential")
    u = leaky_integrate(i, beta, scale=1 - beta, backend="sequential")
    if firing == "sb":
        return sigmoid_bernoulli(u, noise=U), u
    return gumbel_spike(u, tau=tau, logit_scale=logit_scale, noise=torch.logit(U)), u


def case(T, B, F, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (2.0 * torch.randn(T, B, F, generator=g, dtype=dtype)).requires_grad_()
    alpha = (0.5 + 0.49 * torch.rand(F, generator=g, dtype=dtype)).requires_grad_()
    beta = (0.5 + 0.49 * torch.rand(F, generator=g, dtype=dtype)).requires_grad_()
    return x, alpha, beta


@pytest.mark.parametrize("T", [1, 2, 100, 1000])
@pytest.mark.parametrize("firing, tau, logit_scale", [("sb", 1.0, 1.0), ("gs", 1.0, 1.0), ("gs", 0.5, 2.0)])
def test_matches_unfused_with_same_uniforms(T, firing, tau, logit_scale):
    x, alpha, beta = case(T, 2, 24, seed=T)
    seed = 1234 + T
    s = fused_spsn(x, alpha, beta, seed=seed, firing=firing, tau=tau, logit_scale=logit_scale)
    U = spsn_uniforms(seed, x.shape)
    s_ref, u = unfused(x, alpha, beta, U, firing, tau, logit_scale)
    # The integrations are bit-identical; sigmoid/logit of the kernel and of torch may differ in
    # the last bit, which can flip a draw only when it lies within rounding of the boundary.
    if firing == "sb":
        margin = (U - torch.sigmoid(u)).abs()
    else:
        margin = (logit_scale * u + torch.logit(U)).abs()
    differ = s != s_ref
    assert not bool((differ & (margin.detach() > 1e-5)).any())
    assert int(differ.sum()) <= 2
    w = torch.randn(s.shape, generator=torch.Generator().manual_seed(0))
    g_ref = torch.autograd.grad((s_ref * w).sum(), [x, alpha, beta])
    g = torch.autograd.grad((s * w).sum(), [x, alpha, beta])
    for a, b in zip(g_ref, g):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-4, rel_err(a, b)


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_float64_gradients(firing):
    """float64: the gradients agree with the composition to rounding (segments of 32 steps recomputed)."""
    x, alpha, beta = case(75, 2, 3, seed=5, dtype=F64)
    s = fused_spsn(x, alpha, beta, seed=9, firing=firing)
    U = spsn_uniforms(9, x.shape, dtype=F64)
    s_ref, _ = unfused(x, alpha, beta, U, firing)
    assert torch.equal(s, s_ref) and s.dtype == F64
    g_ref = torch.autograd.grad(s_ref.sum(), [x, alpha, beta])
    g = torch.autograd.grad(s.sum(), [x, alpha, beta])
    for a, b in zip(g_ref, g):
        assert rel_err(a, b) <= 1e-10


@pytest.mark.parametrize("T", [33, 35, 70, 96])
@pytest.mark.parametrize("firing", ["sb", "gs"])
@pytest.mark.parametrize("needs", [("x",), ("alpha",), ("x", "beta")], ids="+".join)
def test_gradient_without_parameter_sums(T, firing, needs):
    """The CPU backward skips the alpha/beta sums (and storing the currents they need) when
    neither needs a gradient; whichever leaves do, their gradients equal the composition's.  The
    lengths end the last 32-step segment after 1, 3, 6 and 32 steps (the backward recomputes 4
    and walks back 2 steps at a time, with remainders)."""
    x, alpha, beta = case(T, 2, 9, seed=21)
    leaves = dict(x=x, alpha=alpha, beta=beta)
    for name, t in leaves.items():
        t.requires_grad_(name in needs)
    wanted = [leaves[n] for n in needs]
    s = fused_spsn(x, alpha, beta, seed=5, firing=firing)
    s_ref, _ = unfused(x, alpha, beta, spsn_uniforms(5, x.shape), firing)
    w = torch.randn(s.shape, generator=torch.Generator().manual_seed(1))
    g = torch.autograd.grad((s * w).sum(), wanted)
    g_ref = torch.autograd.grad((s_ref * w).sum(), wanted)
    for a, b in zip(g_ref, g):
        assert rel_err(a, b) <= 1e-4, rel_err(a, b)


def test_scalar_params_and_half_input():
    x = torch.randn(40, 3, 5).to(torch.bfloat16).requires_grad_()
    s = fused_spsn(x, 0.9, 0.8, seed=3)
    assert s.dtype == torch.bfloat16 and s.shape == x.shape
    s.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_seeds():
    x = torch.randn(30, 4, 8)
    a = fused_spsn(x, 0.9, 0.9, seed=1)
    assert torch.equal(a, fused_spsn(x, 0.9, 0.9, seed=1))
    assert not torch.equal(a, fused_spsn(x, 0.9, 0.9, seed=2))
    torch.manual_seed(0)
    b = fused_spsn(x, 0.9, 0.9)
    torch.manual_seed(0)
    assert torch.equal(b, fused_spsn(x, 0.9, 0.9))


def test_uniforms_match_reference_and_dtypes():
    U32 = spsn_uniforms(77, (20, 3, 50))
    U64 = spsn_uniforms(77, (20, 3, 50), dtype=F64)
    ref = uniforms_reference(77, 20, 150).reshape(20, 3, 50)
    assert np.array_equal(U64.numpy(), ref)
    assert torch.equal(U32.double(), U64)  # the same numbers in both dtypes
    assert float(U64.min()) > 0 and float(U64.max()) < 1


def test_uniform_statistics():
    """Mean, uniformity (chi-square over 32 bins) and lag-1 correlations over t and n."""
    U = spsn_uniforms(2024, (200, 5000), dtype=F64)
    n = U.numel()
    assert abs(float(U.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    counts = torch.histc(U, bins=32, min=0.0, max=1.0)
    expected = n / 32
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 70  # 31 dof: P(chi2 > 70) ~ 1e-4
    c = U - 0.5
    for corr in ((c[1:] * c[:-1]).mean() * 12, (c[:, 1:] * c[:, :-1]).mean() * 12):
        assert abs(float(corr)) < 5 / math.sqrt(n)
    # neighbouring seeds are unrelated
    V = spsn_uniforms(2025, (200, 5000), dtype=F64)
    assert abs(float(((U - 0.5) * (V - 0.5)).mean() * 12)) < 5 / math.sqrt(n)


def test_firing_rate_matches_probability():
    """With constant membrane u, SB fires with probability sigmoid(u) (no threshold)."""
    T, N = 400, 500
    # alpha = 0, beta = 0: u = i = x, so a constant input is a constant membrane
    for u0 in (-1.0, 0.0, 2.0):
        s = fused_spsn(torch.full((T, N), u0), 0.0, 0.0, seed=11)
        p = 1 / (1 + math.exp(-u0))
        assert abs(float(s.mean()) - p) < 5 * math.sqrt(p * (1 - p) / (T * N))


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(firing="bernoulli"), ValueError, "firing must be one of"),
    (dict(firing="gs", tau=0.0), ValueError, "tau must be"),
    (dict(logit_scale=float("nan")), ValueError, "logit_scale must be"),
    (dict(alpha=1.5), ValueError, "alpha must lie in"),
    (dict(beta=float("nan")), ValueError, "beta must be finite"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed="1"), TypeError, "seed must be an int"),
])
def test_bad_input(kwargs, err, match):
    kw = dict(alpha=0.9, beta=0.9, seed=0)
    kw.update(kwargs)
    with pytest.raises(err, match=match):
        fused_spsn(torch.randn(5, 2, 3), kw.pop("alpha"), kw.pop("beta"), **kw)


def test_bad_x_and_shapes():
    with pytest.raises(TypeError, match="floating"):
        fused_spsn(torch.ones(4, 2, dtype=torch.int32), 0.9, 0.9, seed=0)
    with pytest.raises(ValueError, match="CPU .numba. and CUDA"):
        fused_spsn(torch.ones(4, 2, device="meta"), 0.9, 0.9, seed=0)
    with pytest.raises(ValueError, match="T >= 1"):
        spsn_uniforms(0, (0, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        spsn_uniforms(0, (2, 3), dtype=torch.float16)


@pytest.mark.parametrize("shape", [(9, 0, 4), (9, 3, 0), (9, 0)])
@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_empty_batch(shape, firing):
    """No neuron (B = 0 or N = 0): empty spikes and grad_x, zero gradients for alpha and beta, and
    empty uniforms.  Before: "range() arg 3 must not be zero" from the kernels' thread split."""
    x = torch.randn(shape, requires_grad=True)
    alpha = torch.full(shape[2:], 0.8, requires_grad=True)
    beta = torch.full(shape[2:], 0.9, requires_grad=True)
    s = fused_spsn(x, alpha, beta, seed=3, firing=firing)
    assert s.shape == x.shape
    gx, ga, gb = torch.autograd.grad(s.sum(), [x, alpha, beta])
    assert gx.shape == x.shape and torch.equal(ga, torch.zeros_like(alpha)) and torch.equal(gb, torch.zeros_like(beta))
    assert spsn_uniforms(3, shape).shape == shape
