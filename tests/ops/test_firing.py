import math

import pytest
import torch

from spikescan import debug_mode
from spikescan.ops.firing import gumbel_spike, heaviside, sigmoid_bernoulli
from spikescan.surrogate import Triangle

F64 = torch.float64


# --------------------------------------------------------------------------- heaviside


def test_heaviside_forward_fires_at_zero():
    u = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    s = heaviside(u)
    assert torch.equal(s, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert s.dtype == u.dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_heaviside_dtypes(dtype):
    u = torch.tensor([-0.5, 0.0, 0.5], dtype=dtype, requires_grad=True)
    s = heaviside(u)
    assert s.dtype == dtype and torch.equal(s.detach(), torch.tensor([0.0, 1.0, 1.0], dtype=dtype))
    s.sum().backward()
    assert u.grad.dtype == dtype


def test_heaviside_backward_hand_values():
    u = torch.tensor([0.0, 0.1, -0.2], dtype=F64, requires_grad=True)
    g = torch.tensor([1.0, 2.0, -3.0], dtype=F64)
    heaviside(u).backward(g)  # default FastSigmoid(25): 1/(25|u|+1)^2
    torch.testing.assert_close(u.grad, torch.tensor([1.0, 2.0 / 3.5**2, -3.0 / 6.0**2], dtype=F64))

    u.grad = None
    heaviside(u, "atan").backward(g)  # alpha=2: 1/(1+(pi u)^2)
    torch.testing.assert_close(u.grad, g / (1 + (math.pi * u.detach()) ** 2))

    u.grad = None
    heaviside(u, Triangle(width=0.15)).backward(g)
    torch.testing.assert_close(u.grad, torch.tensor([1 / 0.15, 2.0 * (1 - 0.1 / 0.15) / 0.15, 0.0], dtype=F64))


def test_heaviside_validation():
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        heaviside([0.0, 1.0])
    with pytest.raises(TypeError, match="u must have a floating-point dtype"):
        heaviside(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unknown surrogate"):
        heaviside(torch.zeros(2), "nope")
    with pytest.raises(ValueError, match="u contains non-finite"):
        heaviside(torch.tensor([0.0, float("nan")]), check=True)
    with debug_mode(), pytest.raises(ValueError, match="u contains non-finite"):
        heaviside(torch.tensor([float("inf")]))


# --------------------------------------------------------------------------- sigmoid-bernoulli


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_meta_input_is_a_clear_error():
    """Before: the firing ops returned meta 'spikes' without values."""
    u = torch.zeros(3, 2, device="meta")
    for fire in (heaviside, sigmoid_bernoulli, gumbel_spike):
        with pytest.raises(ValueError, match=r"u is a meta tensor \(no data\)"):
            fire(u)


def test_sb_fixed_noise_forward_and_hand_gradient():
    u = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=F64, requires_grad=True)
    noise = torch.tensor([0.49, 0.8, 0.2, 0.99], dtype=F64)
    s = sigmoid_bernoulli(u, noise=noise)
    # p = [0.5, 0.7311, 0.2689, 0.8808]
    assert torch.equal(s.detach(), torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64))
    g = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=F64)
    s.backward(g)
    p = torch.sigmoid(u.detach())
    torch.testing.assert_close(u.grad, g * p * p * (1 - p))
    # hand value at u = 0: 0.5^2 * 0.5 = 0.125
    assert float(u.grad[0]) == pytest.approx(0.125)


def test_sb_generator_reproducible():
    u = torch.randn(64, 32)
    a = sigmoid_bernoulli(u, generator=_gen(1))
    b = sigmoid_bernoulli(u, generator=_gen(1))
    c = sigmoid_bernoulli(u, generator=_gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("u0", [-2.0, -0.5, 0.0, 0.7, 3.0])
def test_sb_firing_probability(u0):
    n = 20000
    s = sigmoid_bernoulli(torch.full((n,), u0), generator=_gen(123))
    p = 1 / (1 + math.exp(-u0))
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(float(s.mean()) - p) < 4 * sigma


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sb_low_precision(dtype):
    u = torch.zeros(1000, dtype=dtype, requires_grad=True)
    s = sigmoid_bernoulli(u, generator=_gen(0))
    assert s.dtype == dtype
    s.sum().backward()
    assert u.grad.dtype == dtype
    torch.testing.assert_close(u.grad, torch.full_like(u, 0.125))


def test_sb_validation():
    u = torch.zeros(3)
    with pytest.raises(ValueError, match="either noise or generator"):
        sigmoid_bernoulli(u, generator=_gen(0), noise=torch.zeros(3))
    with pytest.raises(ValueError, match="noise of shape"):
        sigmoid_bernoulli(u, noise=torch.zeros(4))
    with pytest.raises(TypeError, match="generator"):
        sigmoid_bernoulli(u, generator=0)
    with pytest.raises(TypeError, match="u must have a floating-point dtype"):
        sigmoid_bernoulli(torch.zeros(3, dtype=torch.int64))
    # broadcastable noise is fine
    assert sigmoid_bernoulli(torch.zeros(2, 3), noise=torch.full((3,), 0.4)).sum() == 6


# --------------------------------------------------------------------------- gumbel-softmax


def test_gs_fixed_noise_forward_and_straight_through_gradient():
    u = torch.tensor([0.3, -0.2, 1.0, -1.5], dtype=F64, requires_grad=True)
    L = torch.tensor([-0.5, 0.5, -0.8, 1.0], dtype=F64)
    for scale, tau in [(1.0, 1.0), (2.0, 1.0), (1.0, 0.5), (2.0, 3.0)]:
        u.grad = None
        s = gumbel_spike(u, tau=tau, logit_scale=scale, noise=L)
        z = scale * u.detach() + L
        assert torch.equal(s.detach(), (z > 0).to(F64))
        g = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=F64)
        s.backward(g)
        # straight-through reference: s_hard - s_soft.detach() + s_soft with autograd
        u2 = u.detach().clone().requires_grad_(True)
        soft = torch.sigmoid((scale * u2 + L) / tau)
        st = (z > 0).to(F64) - soft.detach() + soft
        st.backward(g)
        torch.testing.assert_close(u.grad, u2.grad)
        torch.testing.assert_close(u.grad, g * scale / tau * soft.detach() * (1 - soft.detach()))
    # hand values: logit_scale=1, tau=1, u=0.3, L=-0.5 -> z=-0.2, s=0
    s = gumbel_spike(torch.tensor([0.3]), noise=torch.tensor([-0.5]))
    assert float(s) == 0.0
    s = gumbel_spike(torch.tensor([0.3]), logit_scale=2.0, noise=torch.tensor([-0.5]))  # z = 0.1
    assert float(s) == 1.0


def test_gs_forward_is_exactly_binary():
    u = torch.randn(10000, requires_grad=True)
    s = gumbel_spike(u, generator=_gen(5))
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}


def test_gs_generator_reproducible():
    u = torch.randn(64, 32)
    a = gumbel_spike(u, generator=_gen(7))
    assert torch.equal(a, gumbel_spike(u, generator=_gen(7)))
    assert not torch.equal(a, gumbel_spike(u, generator=_gen(8)))


@pytest.mark.parametrize("logit_scale", [1.0, 2.0])
@pytest.mark.parametrize("u0", [-1.5, 0.0, 0.4, 2.0])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_gs_firing_probability(u0, logit_scale, tau):
    n = 20000
    s = gumbel_spike(torch.full((n,), u0), tau=tau, logit_scale=logit_scale, generator=_gen(99))
    p = 1 / (1 + math.exp(-logit_scale * u0))  # paper: sigmoid(u); authors' code: sigmoid(2u)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(float(s.mean()) - p) < 4 * sigma


def test_gs_zero_uniform_sample_gives_no_nan():
    # torch.rand can return exactly 0 -> logistic noise -inf: no spike, zero gradient, no NaN
    u = torch.tensor([0.5], requires_grad=True)
    s = gumbel_spike(u, noise=torch.tensor([-math.inf]))
    s.backward(torch.ones(1))
    assert float(s.detach()) == 0.0 and float(u.grad) == 0.0


def test_gs_validation():
    u = torch.zeros(3)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="tau"):
            gumbel_spike(u, tau=bad)
        with pytest.raises(ValueError, match="logit_scale"):
            gumbel_spike(u, logit_scale=bad)
    with pytest.raises(ValueError, match="either noise or generator"):
        gumbel_spike(u, generator=_gen(0), noise=torch.zeros(3))
    with pytest.raises(TypeError, match="noise must have a floating-point dtype"):
        gumbel_spike(u, noise=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="u contains non-finite"):
        gumbel_spike(torch.tensor([float("nan")]), check=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stochastic_firing_on_cuda():
    u = torch.randn(1000, device="cuda")
    g1 = torch.Generator(device="cuda").manual_seed(3)
    g2 = torch.Generator(device="cuda").manual_seed(3)
    assert torch.equal(sigmoid_bernoulli(u, generator=g1), sigmoid_bernoulli(u, generator=g2))
    assert torch.equal(gumbel_spike(u, generator=g1), gumbel_spike(u, generator=g2))
    with pytest.raises(ValueError, match="generator is on cpu"):
        sigmoid_bernoulli(u, generator=torch.Generator())
