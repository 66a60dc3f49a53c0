"""FastSNN first-spike extraction: phi / g edge cases, spikes identical to the sequential
single-spike LIF (composed op and fused kernel), gradients, readout, bad input.  The fused
kernel's gradients: ``test_single_spike_fused.py``."""

import pytest
import torch

from spikescan import debug_mode
from spikescan.ops.first_spike import (
    _single_spike_lif_sequential,
    first_spike,
    g,
    max_membrane_readout,
    phi,
    single_spike_lif,
)
from spikescan.ops import leaky_integrate

F64 = torch.float64


def _first_spike_reference(s):
    """Loop: keep the first 1 along dim 0."""
    out = torch.zeros_like(s)
    fired = torch.zeros(s.shape[1:], dtype=torch.bool)
    for t in range(s.shape[0]):
        now = (s[t] == 1) & ~fired
        out[t] = now.to(s.dtype)
        fired |= now
    return out


# --------------------------------------------------------------------------- phi and g


def test_g_values():
    z = torch.arange(0, 2000, dtype=torch.float32)
    expect = torch.zeros_like(z)
    expect[1] = 1.0
    assert torch.equal(g(z), expect)


def test_phi_hand_values():
    s = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    assert torch.equal(phi(s), torch.tensor([0.0, 1.0, 2.0, 4.0, 7.0]))  # sum (t-m+1) S[m]


@pytest.mark.parametrize(
    "spikes, expect",
    [
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # no spike
        ([1, 0, 0, 0], [1, 0, 0, 0]),  # spike at t = 0
        ([1, 1, 0, 1], [1, 0, 0, 0]),  # spike at t = 0 and later
        ([0, 0, 0, 1], [0, 0, 0, 1]),  # spike at T-1 only
        ([1, 1, 1, 1], [1, 0, 0, 0]),  # all ones
        ([0, 1, 1, 1], [0, 1, 0, 0]),
        ([1], [1]),  # T = 1
        ([0], [0]),
    ],
)
def test_first_spike_edge_cases(spikes, expect):
    s = torch.tensor(spikes, dtype=torch.float32)
    assert torch.equal(first_spike(s), torch.tensor(expect, dtype=torch.float32))
    assert torch.equal(first_spike(s, straight_through=True), torch.tensor(expect, dtype=torch.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_first_spike_all_ones_long_no_overflow(dtype):
    T = 2048  # phi reaches T (T+1) / 2 > float16 max
    s = torch.ones(T, 3, dtype=dtype)
    out = first_spike(s)
    assert out.dtype == dtype
    assert torch.equal(out[0], torch.ones(3, dtype=dtype))
    assert out[1:].abs().sum() == 0


@pytest.mark.parametrize("T", [1, 2, 9, 64, 300])
def test_first_spike_matches_loop(T):
    g_ = torch.Generator().manual_seed(T)
    for p in (0.01, 0.2, 0.9):
        s = (torch.rand(T, 7, 5, generator=g_) < p).float()
        out = first_spike(s)
        assert torch.equal(out, _first_spike_reference(s))
        assert out.sum(0).max() <= 1
        assert torch.equal(out.sum(0), (s.sum(0) > 0).float())


def test_first_spike_gradient_only_before_first_spike():
    s = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=F64, requires_grad=True)
    gout = torch.arange(1.0, 11.0, dtype=F64).reshape(5, 2)
    first_spike(s).backward(gout)
    # column 0: first spike at t=2, g'(phi)=1 at t<2 -> grad S~[m] = sum_{m<=t<2} (t-m+1) gout[t]
    # column 1: first spike at t=1 -> only t=0
    expect = torch.zeros(5, 2, dtype=F64)
    expect[0, 0] = 1 * gout[0, 0] + 2 * gout[1, 0]
    expect[1, 0] = 1 * gout[1, 0]
    expect[0, 1] = gout[0, 1]
    torch.testing.assert_close(s.grad, expect)


def test_first_spike_straight_through_backward_is_phi_adjoint():
    s = (torch.rand(6, 3, dtype=F64) < 0.5).to(F64).requires_grad_(True)
    gout = torch.randn(6, 3, dtype=F64)
    first_spike(s, straight_through=True).backward(gout)
    # identity through g: grad = phi^T gout, phi^T[m, t] = (t - m + 1) for t >= m
    t = torch.arange(6)
    A = ((t[:, None] - t[None, :] + 1) * (t[:, None] >= t[None, :])).to(F64)  # phi as a matrix
    torch.testing.assert_close(s.grad, A.T @ gout)


def test_first_spike_check_rejects_non_binary():
    with pytest.raises(ValueError, match="only 0 and 1"):
        first_spike(torch.tensor([0.0, 0.5]), check=True)
    with debug_mode(), pytest.raises(ValueError, match="only 0 and 1"):
        first_spike(torch.tensor([2.0, 0.0]))
    first_spike(torch.tensor([0.0, 0.5]))  # no check by default (costs a pass)


# --------------------------------------------------------------------------- the neuron


CASES = [
    # T, shape, decay, scale, threshold
    (1, (4, 5), 0.9, None, 0.1),
    (8, (16, 10), 0.5, None, 0.3),
    (100, (8, 20), 0.9, None, 1.0),
    (100, (8, 20), 0.99, 1.0, 1.0),  # the authors' code: no (1 - b) factor
    (257, (4, 3, 6), 0.95, None, 0.5),
    (64, (8, 20), 0.0, None, 0.5),
    (64, (8, 20), 1.0, 0.1, 2.0),
]


@pytest.mark.parametrize("T, shape, decay, scale, thr", CASES)
@pytest.mark.parametrize("backend", ["auto", "fused", "chunked", "fft", "sequential"])
def test_single_spike_lif_identical_to_sequential_float64(T, shape, decay, scale, thr, backend):
    gen = torch.Generator().manual_seed(T)
    x = 3.0 * torch.rand((T,) + shape, generator=gen, dtype=F64) - 0.5
    x[..., ::2] = -x[..., ::2].abs()  # these neurons never fire
    s, v = single_spike_lif(x, decay, thr, scale=scale, backend=backend, return_membrane=True)
    s_ref, v_ref = _single_spike_lif_sequential(x, decay, thr, scale=scale)
    assert torch.equal(s, s_ref)
    assert s.sum(0).max() <= 1
    assert 0 < s.sum() < s[0].numel()  # some neurons fire, some do not
    torch.testing.assert_close(v, v_ref)


@pytest.mark.parametrize("T, shape, decay, scale, thr", CASES)
@pytest.mark.parametrize("backend", ["fused", "sequential"])
def test_single_spike_lif_identical_to_sequential_float32(T, shape, decay, scale, thr, backend):
    gen = torch.Generator().manual_seed(T + 1)
    x = 3.0 * torch.rand((T,) + shape, generator=gen) - 0.5
    x[..., ::2] = -x[..., ::2].abs()
    s = single_spike_lif(x, decay, thr, scale=scale, backend=backend)
    s_ref, _ = _single_spike_lif_sequential(x, decay, thr, scale=scale)
    assert torch.equal(s, s_ref)
    assert s.sum(0).max() <= 1


def test_single_spike_lif_per_neuron_decay_and_v0():
    x = 2.0 * torch.rand(50, 6, 4, dtype=F64)
    decay = torch.tensor([0.0, 0.5, 0.9, 0.99], dtype=F64)
    v0 = torch.tensor([0.9, -1.0, 0.0, 0.5], dtype=F64)
    s = single_spike_lif(x, decay, 1.0, v0=v0)
    s_ref, _ = _single_spike_lif_sequential(x, decay, 1.0, v0=v0)
    assert torch.equal(s, s_ref)


@pytest.mark.parametrize("backend", ["auto", "sequential"])
def test_single_spike_lif_gradient_stops_at_first_spike(backend):
    torch.manual_seed(0)
    x = (1.5 * torch.rand(30, 40, dtype=F64)).requires_grad_(True)
    s = single_spike_lif(x, 0.8, 1.0, backend=backend)
    s.sum().backward()
    t_first = torch.where(s.sum(0) > 0, s.argmax(0), torch.full((40,), 30))
    t = torch.arange(30)[:, None]
    assert (x.grad[t >= t_first] == 0).all()  # nothing at or after the first spike
    assert (x.grad[t < t_first] != 0).any()
    assert torch.isfinite(x.grad).all()
    # the surrogate: FastSigmoid(100) by default, a different one changes the gradient
    x.grad = None
    single_spike_lif(x, 0.8, 1.0, surrogate="atan", backend=backend).sum().backward()
    g_atan = x.grad.clone()
    x.grad = None
    single_spike_lif(x, 0.8, 1.0, backend=backend).sum().backward()
    assert not torch.allclose(g_atan, x.grad)


@pytest.mark.parametrize("backend", ["auto", "fused", "sequential"])
def test_max_membrane_readout(backend):
    x = torch.randn(20, 3, 4, dtype=F64)
    out = max_membrane_readout(x, 0.9, backend=backend)
    torch.testing.assert_close(out, leaky_integrate(x, 0.9, scale=0.1).amax(0))
    _, v_ref = _single_spike_lif_sequential(x, 0.9, 1e300)  # never fires
    torch.testing.assert_close(out, v_ref.amax(0))
    torch.testing.assert_close(max_membrane_readout(x, 0.9, scale=1.0, backend=backend), leaky_integrate(x, 0.9).amax(0))
    assert out.shape == (3, 4)


def test_bad_inputs():
    x = torch.rand(5, 3)
    with pytest.raises(TypeError, match="spikes must be a torch.Tensor"):
        first_spike([0.0, 1.0])
    with pytest.raises(TypeError, match="floating-point"):
        first_spike(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="decay must lie in"):
        single_spike_lif(x, 1.5)
    with pytest.raises(ValueError, match="threshold must be finite"):
        single_spike_lif(x, 0.9, float("nan"))
    with pytest.raises(ValueError, match="not broadcastable"):
        single_spike_lif(x, torch.full((4,), 0.9))
    with pytest.raises(ValueError, match="at least one time step"):
        single_spike_lif(torch.zeros(0, 3), 0.9)
    with pytest.raises(ValueError, match="unknown surrogate"):
        single_spike_lif(x, 0.9, surrogate="nope")
    with pytest.raises(ValueError, match="backend must be one of"):
        single_spike_lif(x, 0.9, backend="magic")
    with pytest.raises(ValueError, match="decay must lie in"):
        max_membrane_readout(x, -0.1)
    with debug_mode(), pytest.raises(ValueError, match="x contains non-finite"):
        single_spike_lif(torch.tensor([[float("inf")]]), 0.9)


def test_meta_input_is_a_clear_error():
    """Before: "Tensor.item() cannot be called on meta tensors" (spikes: meta output, no values)."""
    x = torch.rand(5, 2, 3, device="meta")
    for call, name in ((lambda: single_spike_lif(x, 0.9), "x"), (lambda: max_membrane_readout(x, 0.9), "x"),
                       (lambda: first_spike(x), "spikes")):
        with pytest.raises(ValueError, match=rf"{name} is a meta tensor \(no data\)"):
            call()
