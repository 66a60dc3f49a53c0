"""Spikes that carry their events: the single-spike kernels record where each neuron fired
(``attach_events``), so the next event-driven layer skips the pass over ``[T, B, O]``."""

from __future__ import annotations

import pytest
import torch

from spikescan.nn import EventLinear, SingleSpikeLIF
from spikescan.ops.events import SpikeEvents, attach_events, known_events


def _events(x: torch.Tensor) -> SpikeEvents:
    return SpikeEvents.from_dense(x.detach().clone())  # a clone carries no record: the counting pass


def _layers(dtype, straight_through, seed=0):
    torch.manual_seed(seed)
    lin = EventLinear(30, 20).to(dtype)
    lif = SingleSpikeLIF(20, input_scale=1.0, straight_through=straight_through)
    out = EventLinear(20, 5).to(dtype)
    return lin, lif, out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("straight_through", [False, True])
@pytest.mark.parametrize("fed", ["events", "dense"])
def test_recorded_events_are_the_counting_pass_events(dtype, straight_through, fed):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(60, 8, 30, generator=g) < 0.05).to(dtype)
    lin, lif, _ = _layers(dtype, straight_through)
    s = lif(SpikeEvents.from_dense(x), input_layer=lin) if fed == "events" else lif(lin(x))
    known, ref = known_events(s), _events(s)
    assert known is not None and 0 < known.num_events < s.numel()
    assert known.shape == ref.shape and known.dtype == ref.dtype == dtype and ref.values is None
    assert torch.equal(known.crow, ref.crow) and torch.equal(known.channels, ref.channels)
    assert SpikeEvents.from_dense(s) is known  # reused, x not read
    assert SpikeEvents.from_dense(s, max_density=known.density / 2) is None  # the density rule still holds


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_next_layer_gives_the_same_numbers_with_or_without_the_record(dtype):
    """Outputs and every gradient bit for bit: the record changes where the events come from,
    not what is summed or in which order."""
    g = torch.Generator().manual_seed(2)
    x = SpikeEvents.from_dense((torch.rand(200, 8, 30, generator=g) < 0.02).to(dtype))
    results = []
    for keep_record in (True, False):
        lin, lif, out = _layers(dtype, False, seed=3)
        s = lif(x, input_layer=lin)
        assert 0 < float(s.sum()) and s.mean() <= out.density_threshold  # the next layer runs event-driven
        if not keep_record:
            s = s * 1  # a new tensor: no record, the counting pass runs
            assert known_events(s) is None
        y = out(s)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
        (y * w).sum().backward()
        results.append([y.detach(), *(p.grad for p in (*lin.parameters(), *lif.parameters(), *out.parameters()))])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_an_in_place_change_voids_the_record():
    lin, lif, _ = _layers(torch.float32, False)
    with torch.no_grad():
        s = lif(lin((torch.rand(40, 4, 30) < 0.1).float()))
    assert known_events(s) is not None
    s[0, 0, 0] = 1.0 - s[0, 0, 0]
    assert known_events(s) is None
    ref = SpikeEvents.from_dense(s)  # counted again, the change included
    assert torch.equal(ref.dense(), s)


def test_attach_events_checks_that_they_describe_the_tensor():
    ev = SpikeEvents.from_dense(torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match="do not describe"):
        attach_events(torch.zeros(3, 2, 5), ev)
    with pytest.raises(ValueError, match="do not describe"):
        attach_events(torch.zeros(3, 2, 4, dtype=torch.float64), ev)


def test_a_change_through_a_view_voids_the_record_too():
    lin, lif, _ = _layers(torch.float32, False)
    with torch.no_grad():
        s = lif(lin((torch.rand(40, 4, 30) < 0.1).float()))
        assert known_events(s) is not None
        s[3].zero_()  # a view of s: the version counter is shared
    assert known_events(s) is None
