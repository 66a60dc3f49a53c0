"""Collect the spike trains of every spiking layer during a forward pass."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..nn.base import SpikingNeuron


@contextlib.contextmanager
def record_spikes(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the returned list fills with each :class:`SpikingNeuron`'s spikes, in call
    order (the first item of a call that returns a tuple: spikes and state, membrane or the
    output of a layer run inside it)."""
    record: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: record.append(out[0] if isinstance(out, tuple) else out))
               for m in model.modules() if isinstance(m, SpikingNeuron)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()
