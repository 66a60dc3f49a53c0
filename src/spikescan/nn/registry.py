"""Neuron kinds by name: what ``spikescan train --neuron`` and ``train.models`` build.

A neuron module registers a builder next to its class::

    @register_neuron("lif", backends=LIF_BACKENDS, why="the exact LIF's reset is not linear: no fft/chunked form")
    def _build_lif(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
        return LIF(features, tau_syn, tau_mem, dt, backend=backend, **kwargs)

so a new neuron needs no edit in ``train``: the builder gets the layer width, the time
constants in seconds, ``dt``, the backend name (validated here against ``backends``) and
``num_steps`` (for neurons with a T x T operator), plus the user's ``neuron_kwargs``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from torch import nn

from .base import default


class NeuronKind(NamedTuple):
    name: str
    build: Callable[..., nn.Module]
    backends: tuple[str, ...]  # the backend names it runs (one of them "auto")
    why: str  # why other backends do not apply, for the error message


NEURON_KINDS: dict[str, NeuronKind] = {}


def register_neuron(name: str, *, backends, why: str = ""):
    def decorate(build):
        NEURON_KINDS[name] = NeuronKind(name, build, tuple(backends), why)
        return build

    return decorate


def check_backend(kind: str, backend: str) -> None:
    """Raise unless neuron kind ``kind`` runs ``backend``."""
    spec = NEURON_KINDS.get(kind)
    if spec is not None and backend not in spec.backends:
        why = f" ({spec.why})" if spec.why else ""
        raise ValueError(f"backend {backend!r} does not apply to neuron {kind!r}{why}; "
                         f"choose from {list(spec.backends)}")


def build_neuron(kind: str, features: int, *, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, backend: str = "auto", num_steps: int | None = None, **kwargs) -> nn.Module:
    """One hidden neuron layer of kind ``kind``; ``kwargs`` go to its constructor.

    A ``beta`` (``alpha``) in ``kwargs`` replaces ``tau_mem`` (``tau_syn``): the time constant
    is then passed as a default, which the constructor lets the decay override."""
    if kind not in NEURON_KINDS:
        raise ValueError(f"neuron must be one of {list(NEURON_KINDS)}, got {kind!r}")
    check_backend(kind, backend)
    if "beta" in kwargs:
        tau_mem = default(tau_mem)
    if "alpha" in kwargs:
        tau_syn = default(tau_syn)
    return NEURON_KINDS[kind].build(features, tau_syn=tau_syn, tau_mem=tau_mem, dt=dt, backend=backend,
                                    num_steps=num_steps, **kwargs)


@register_neuron("relu", backends=("auto",), why="no dynamics: the backend names only the readout's")
def _build_relu(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    """The non-spiking baseline of SPSN Table II (ReLU applied at every step)."""
    if kwargs:
        raise ValueError(f"neuron 'relu' takes no options, got {sorted(kwargs)}")
    return nn.ReLU()
