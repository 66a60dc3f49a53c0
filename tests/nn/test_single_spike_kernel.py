"""SingleSpikeKernelLIF and MaxMembraneReadout(kernel_steps=): FastSNN's layers with the learned
membrane kernel of the authors' code, against the composition of the paper's equations."""

import pytest
import torch

from spikescan.nn import MaxMembraneReadout, SingleSpikeKernelLIF, SingleSpikeLIF
from spikescan.ops.firing import heaviside
from spikescan.ops.first_spike import first_spike
from spikescan.ops.kernel_integrate import kernel_integrate_reference
from spikescan.train import FeedForwardSNN


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _drive(T, B, N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, B, N, generator=g, dtype=torch.float64) * 0.6 + 0.15).to(dtype).requires_grad_()


def _composed(layer, x, kernel):
    """The authors' computation read off the paper: membrane by the kernel, then g(phi(H(V - 1)))."""
    v = kernel_integrate_reference(x, kernel)
    return first_spike(heaviside(v - layer.threshold, layer.surrogate), straight_through=layer.straight_through)


@pytest.mark.parametrize("T", [1, 5, 60])
@pytest.mark.parametrize("straight_through", [False, True])
def test_spikes_and_gradients_equal_the_composed_equations(T, straight_through, float64_default):
    layer = SingleSpikeKernelLIF(7, T, beta=0.9, input_scale=1.0, straight_through=straight_through)
    with torch.no_grad():  # a kernel the training moved away from beta^j
        layer.kernel.mul_(1.0 + 0.3 * torch.rand(T, generator=torch.Generator().manual_seed(3)))
    x = _drive(T, 4, 7)
    s = layer(x)
    want = _composed(layer, x, layer.kernel)
    assert torch.equal(s, want) and (T == 1 or int(s.sum()) > 0)
    gout = torch.randn(s.shape, generator=torch.Generator().manual_seed(1))
    gx, gk = torch.autograd.grad((s * gout).sum(), [x, layer.kernel])
    rx, rk = torch.autograd.grad((want * gout).sum(), [x, layer.kernel])
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gk, rk, rtol=1e-10, atol=1e-12)
    assert float(gk.abs().max()) > 0


@pytest.mark.parametrize("input_scale", [1.0, "one_minus_decay"])
def test_initial_kernel_is_the_fixed_neuron(input_scale, float64_default):
    kernel = SingleSpikeKernelLIF(5, 50, beta=0.9, input_scale=input_scale)
    fixed = SingleSpikeLIF(5, beta=0.9, input_scale=input_scale)
    x = _drive(50, 3, 5) * (1.0 if input_scale == 1.0 else 10.0)
    s, s0 = kernel(x), fixed(x)
    assert torch.equal(s, s0) and int(s.sum()) > 0
    gout = torch.randn(s.shape, generator=torch.Generator().manual_seed(2))
    gx, = torch.autograd.grad((s * gout).sum(), x)
    g0, = torch.autograd.grad((s0 * gout).sum(), x)
    # the same surrogate chain; the membranes differ by the summation order (GEMM vs scan)
    torch.testing.assert_close(gx, g0, rtol=1e-9, atol=1e-9)


def test_float32_layer_matches_float64_composition():
    layer = SingleSpikeKernelLIF(6, 30, beta=0.9, input_scale=1.0)
    x = _drive(30, 4, 6, dtype=torch.float32)
    s = layer(x)
    k64 = layer.kernel.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    want = _composed(layer, x64, k64)
    # a membrane within float32 rounding of the threshold could flip; this drive has none
    assert torch.equal(s.double(), want)
    gx, gk = torch.autograd.grad(s.sum(), [x, layer.kernel])
    rx, rk = torch.autograd.grad(want.sum(), [x64, k64])
    torch.testing.assert_close(gx.double(), rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gk.double(), rk, rtol=1e-4, atol=1e-5)


def test_fixed_kernel_is_not_trained():
    layer = SingleSpikeKernelLIF(3, 10, learn_kernel=False)
    assert not layer.kernel.requires_grad and [p for p in layer.parameters() if p.requires_grad] == []


def test_readout_kernel_starts_as_the_leaky_readout_and_learns(float64_default):
    x = _drive(40, 3, 4)
    learned = MaxMembraneReadout(4, beta=0.95, input_scale=1.0, kernel_steps=40)
    fixed = MaxMembraneReadout(4, beta=0.95, input_scale=1.0)
    out = learned(x)
    torch.testing.assert_close(out, fixed(x), rtol=1e-12, atol=1e-12)
    gk, = torch.autograd.grad(out.sum(), learned.kernel)
    rk, = torch.autograd.grad(kernel_integrate_reference(x, learned.kernel).amax(0).sum(), learned.kernel)
    torch.testing.assert_close(gk, rk, rtol=1e-12, atol=1e-12)


def test_errors_name_the_problem():
    layer = SingleSpikeKernelLIF(3, 10)
    with pytest.raises(ValueError, match="kernel covers 10"):
        layer(torch.zeros(11, 2, 3))
    with pytest.raises(ValueError, match="no streaming state"):
        layer(torch.zeros(5, 2, 3), return_state=True)
    with pytest.raises(ValueError, match="no streaming state"):
        layer.step(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="kernel_steps"):
        SingleSpikeKernelLIF(3, 0)
    with pytest.raises(ValueError, match="backend"):
        SingleSpikeKernelLIF(3, 10, backend="fused")
    readout = MaxMembraneReadout(3, kernel_steps=10)
    with pytest.raises(ValueError, match="no streaming state"):
        readout(torch.zeros(5, 2, 3), return_state=True)
    with pytest.raises(ValueError, match="exclude each other"):
        MaxMembraneReadout(3, kernel_steps=10, learn_tau=True)


def test_network_builds_from_the_registry_and_trains_its_kernels():
    net = FeedForwardSNN(12, [8], 3, "single-spike-kernel", tau_mem=0.01, num_steps=20,
                         readout_layer="max-membrane", readout_kwargs={"kernel_steps": 20},
                         neuron_kwargs={"input_scale": 1.0})
    kernels = [m.kernel for m in net.modules() if getattr(m, "kernel", None) is not None]
    assert len(kernels) == 2 and all(k.shape == (20,) and k.requires_grad for k in kernels)
    x = (torch.rand(20, 5, 12) < 0.3).float()
    net(x).sum().backward()
    assert all(k.grad is not None for k in kernels)
    with pytest.raises(ValueError, match="needs num_steps"):
        FeedForwardSNN(12, [8], 3, "single-spike-kernel")
