"""SpikeEvents and event_linear against the dense nn.Linear: outputs and weight/bias gradients."""

from __future__ import annotations

import pytest
import torch

from spikescan.ops.events import EVENT_LINEAR_BACKENDS, SpikeEvents, event_linear

BACKENDS = [b for b in EVENT_LINEAR_BACKENDS if b != "auto"]


def _spikes(T, B, C, density, seed=0, counts=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, C, generator=g) < density).float()
    if counts:
        x = x * torch.randint(1, 4, (T, B, C), generator=g).float()
    return x


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("backend", BACKENDS + ["auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,density,counts", [((1, 1, 3), 1.0, False), ((7, 3, 33), 0.05, False),
                                                  ((50, 4, 200), 0.01, True), ((9, 5, 17), 0.0, False),
                                                  ((5, 0, 8), 0.5, False), ((300, 2, 130), 0.3, False)])
def test_event_linear_equals_nn_linear(backend, dtype, shape, density, counts):
    x = _spikes(*shape, density, counts=counts).to(dtype)
    lin = torch.nn.Linear(shape[2], 11).to(dtype)
    g = torch.randn(shape[0], shape[1], 11, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ref = lin(x)
    gw_ref, gb_ref = torch.autograd.grad((ref * g).sum(), [lin.weight, lin.bias])
    ev = SpikeEvents.from_dense(x)
    assert (ev.values is None) == (not counts or density == 0.0 or x.numel() == 0)
    out = event_linear(ev, lin.weight, lin.bias, backend=backend)
    assert out.shape == ref.shape and out.dtype == dtype
    gw, gb = torch.autograd.grad((out * g).sum(), [lin.weight, lin.bias])
    # each output sums at most C terms of spikes x weights in another order than BLAS: the
    # difference is a few ulp of the largest partial sum, hence rel 1e-5 (float32) / 1e-12 (float64)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for got, want in ((out, ref), (gw, gw_ref), (gb, gb_ref)):
        if want.numel() and want.abs().max() > 0:
            assert _rel(got, want) <= tol
        else:
            assert torch.equal(got, torch.zeros_like(want))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_spikes_that_need_a_gradient_get_it(backend, dtype):
    """A hidden layer: its input spikes require grad, which is dense (gy W)."""
    x = _spikes(40, 6, 50, 0.02).to(dtype).requires_grad_()
    lin = torch.nn.Linear(50, 10).to(dtype)
    g = torch.randn(40, 6, 10, dtype=dtype, generator=torch.Generator().manual_seed(3))
    ref = torch.autograd.grad((lin(x) * g).sum(), [x, lin.weight, lin.bias])
    got = torch.autograd.grad((event_linear(x, lin.weight, lin.bias, backend=backend) * g).sum(),
                              [x, lin.weight, lin.bias])
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # sums of <= C or <= O terms in another order
    for a, b in zip(got, ref):
        assert a.shape == b.shape and _rel(a, b) <= tol


def test_thread_count_does_not_change_the_result():
    x = SpikeEvents.from_dense(_spikes(200, 16, 300, 0.02))
    w = torch.randn(64, 300, requires_grad=True)
    g = torch.randn(200, 16, 64)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = event_linear(x, w, None, backend="numba")
            results.append((out, torch.autograd.grad((out * g).sum(), w)[0]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_spike_events_round_trips_and_coo_order():
    x = _spikes(20, 3, 9, 0.2, counts=True)
    ev = SpikeEvents.from_dense(x)
    assert torch.equal(ev.dense(), x) and ev.num_events == int((x != 0).sum())
    assert ev.density == pytest.approx(float((x != 0).float().mean()))
    t, b, c = x.nonzero(as_tuple=True)
    perm = torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))
    coo = SpikeEvents.from_coo(t[perm], b[perm], c[perm], x.shape, x[t, b, c][perm])
    assert torch.equal(coo.dense(), x)
    dup = SpikeEvents.from_coo([0, 0], [1, 1], [2, 2], (1, 2, 3))  # duplicates add up
    assert dup.dense()[0, 1, 2] == 2
    assert torch.equal(ev.counts_by_channel(), (x != 0).sum((0, 1)))
    assert ev.to(torch.float64).dense().dtype == torch.float64


def test_bad_input_is_named():
    ev = SpikeEvents.from_dense(_spikes(4, 2, 5, 0.5))
    with pytest.raises(ValueError, match="input features"):
        event_linear(ev, torch.randn(3, 6))
    with pytest.raises(TypeError, match="SpikeEvents"):
        event_linear([[0.0]], torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        event_linear(torch.zeros(4, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="backend"):
        event_linear(ev, torch.randn(3, 5), backend="cuda")
    with pytest.raises(ValueError, match="crow must have"):
        SpikeEvents(torch.zeros(3, dtype=torch.long), torch.zeros(0, dtype=torch.long), (4, 2, 5))
    with pytest.raises(ValueError, match="channels must lie"):
        SpikeEvents(torch.tensor([0, 1]), torch.tensor([7]), (1, 1, 5))
    with pytest.raises(ValueError, match="crow must rise"):
        SpikeEvents(torch.tensor([0, 2, 1]), torch.tensor([0]), (1, 2, 5))
    with pytest.raises(ValueError, match="t must lie"):
        SpikeEvents.from_coo([5], [0], [0], (4, 2, 5))
    with pytest.raises(ValueError, match="finite"):
        SpikeEvents(torch.tensor([0, 1]), torch.tensor([0]), (1, 1, 5), torch.tensor([float("nan")]))
