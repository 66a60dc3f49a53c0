"""Network builders for the experiments: feed-forward stacks of ``Linear + neuron`` with an LI readout."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..nn.leaky import LI, LIF
from ..nn.spsn import SPSN

NEURONS = ("spsn-sb", "spsn-gs", "lif", "relu")


def make_neuron(kind: str, features: int, *, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                dt: float = 1e-3, backend: str = "auto", **kwargs) -> nn.Module:
    """One hidden neuron layer by name: ``spsn-sb``, ``spsn-gs``, ``lif`` or ``relu`` (non-spiking baseline)."""
    if kind == "spsn-sb":
        return SPSN(features, tau_syn, tau_mem, dt, firing="sb", backend=backend, **kwargs)
    if kind == "spsn-gs":
        return SPSN(features, tau_syn, tau_mem, dt, firing="gs", backend=backend, **kwargs)
    if kind == "lif":
        return LIF(features, tau_syn, tau_mem, dt, **kwargs)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"neuron must be one of {list(NEURONS)}, got {kind!r}")


class FeedForwardSNN(nn.Sequential):
    """``[Linear -> neuron] x len(hidden) -> Linear -> LI``, time-first ``[T, B, n_in] -> [T, B, n_out]``.

    The architecture of SPSN §IV-A (3 x 128 hidden, 20 LI readout neurons on SHD) and FastSNN
    (1 x 200 hidden).  The output is the readout membrane; reduce it over time with
    :func:`spikescan.train.losses.reduce_time`.  ``dropout`` (p) goes after each hidden layer.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, neuron: str = "spsn-sb", *,
                 tau_syn: float | None = 0.02, tau_mem: float = 0.02, dt: float = 1e-3,
                 backend: str = "auto", dropout: float = 0.0, readout_tau_syn: float | None = 0.02,
                 readout_tau_mem: float = 0.02, neuron_kwargs: dict | None = None):
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers.append(nn.Linear(width, h))
            layers.append(make_neuron(neuron, h, tau_syn=tau_syn, tau_mem=tau_mem, dt=dt,
                                      backend=backend, **(neuron_kwargs or {})))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_out))
        layers.append(LI(n_out, readout_tau_syn, readout_tau_mem, dt, backend=backend))
        super().__init__(*layers)
