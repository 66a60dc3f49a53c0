"""Network builders for the experiments: feed-forward stacks of ``Linear + neuron`` with a readout.

Neuron kinds (``make_neuron``):

- ``spsn-sb`` / ``spsn-gs``: :class:`~spikescan.nn.SPSN` with sigmoid-Bernoulli / Gumbel-softmax firing (SPSN).
- ``lif``, ``plif``: :class:`~spikescan.nn.LIF` / :class:`~spikescan.nn.PLIF` (learned decay) with
  :data:`TRAIN_NEURON_SETTINGS` (the SPSN paper's LIF baseline) unless ``neuron_kwargs`` override them.
- ``rlif``: :class:`~spikescan.nn.RLIF` when this version of :mod:`spikescan.nn` has it.
- ``psu``, ``ipsu``, ``rpsu``: the Parallel Spiking Units (Li et al.); their ``tau`` is in steps,
  ``tau_mem / dt`` unless ``tau=`` is given; IPSU/RPSU need ``num_steps`` (their T×T matrix).
- ``single-spike``: FastSNN's :class:`~spikescan.nn.SingleSpikeLIF` (at most one spike per neuron);
  its time constant is ``tau_mem`` (FastSNN: 10 ms), it has no synaptic stage.
- ``single-spike-kernel``: :class:`~spikescan.nn.SingleSpikeKernelLIF`, the same neuron with the
  membrane kernel the FastSNN authors' code trains (``num_steps`` lags, initialised to ``beta^j``);
  its readout counterpart is ``readout_kwargs={"kernel_steps": T}`` of the max-membrane readout.
- ``relu``: the non-spiking baseline of SPSN Table II (ReLU applied at every step).

``backend`` is the hidden neurons' backend, and each kind runs exactly the one named or refuses it
(:data:`NEURON_BACKENDS`): the exact LIF's reset is not linear, so it has no ``fft``/``chunked``
form, and the PSUs' operators are ``matrix``/``chunked``/``sequential``.  The LI readout takes the
same name where :func:`spikescan.ops.leaky_integrate` has it (``readout_backend``), else ``auto``.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .. import nn as snn  # noqa: F401  (imports every neuron module, which registers its kinds)
from ..defaults import SPSN_LIF_BASELINE
from ..nn.leaky import LI
from ..nn.linear import EventLinear
from ..nn.registry import NEURON_KINDS, build_neuron
from ..nn.registry import check_backend as _check_backend
from ..nn.single_spike import MaxMembraneReadout, SingleSpikeLIF
from ..ops._backend import backends
from ..ops.events import SpikeEvents

NEURONS = tuple(NEURON_KINDS)
#: readout layers of :class:`FeedForwardSNN`: ``"li"`` (membrane ``[T, B, C]``, reduced over time by
#: the loop's ``readout``) or ``"max-membrane"`` (FastSNN's :class:`MaxMembraneReadout`, logits ``[B, C]``).
READOUT_LAYERS = ("li", "max-membrane")
#: biases of the Linear layers: ``"uniform"`` (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))) or
#: ``"zero"`` (FastSNN supplementary E).  Weights are always PyTorch's U(-1/sqrt(fan_in), ...),
#: which is FastSNN's U(-sqrt(1/N), sqrt(1/N)).
BIAS_INITS = ("uniform", "zero")

#: what ``spikescan train`` builds for these hidden neuron kinds unless the preset's or config's
#: ``neuron_kwargs`` say otherwise: the SPSN paper's LIF baseline (Table II, its authors' code: a
#: synaptic stage from ``tau_syn``, the ``(1 - b)`` input factor of eq. 6, hard reset to 0 with the
#: reset's spike detached, surrogate ``1/(100|v - 1| + 1)^2``).  Written out because it differs
#: from the library defaults (:mod:`spikescan.defaults`), which a run must not depend on.
TRAIN_NEURON_SETTINGS: dict[str, dict] = {kind: dict(SPSN_LIF_BASELINE) for kind in ("lif", "plif", "rlif")}
#: the LI readout's settings unless ``readout_kwargs`` say otherwise: SPSN eq. 7 (the ``(1 - b)`` factor)
TRAIN_READOUT_SETTINGS: dict = {"input_scale": "one_minus_decay"}

LEAKY_BACKENDS = ("auto", *backends("leaky_integrate"))
#: the ``backend`` names each hidden neuron kind runs (relu has no dynamics: its name goes to the readout)
NEURON_BACKENDS: dict[str, tuple[str, ...]] = {k: v.backends for k, v in NEURON_KINDS.items()}
NEURON_BACKENDS["relu"] = LEAKY_BACKENDS


def check_backend(neuron: str, backend: str) -> None:
    """Raise unless neuron kind ``neuron`` runs ``backend`` (see :data:`NEURON_BACKENDS`)."""
    if neuron != "relu":
        _check_backend(neuron, backend)
    elif backend not in LEAKY_BACKENDS:
        raise ValueError(f"backend {backend!r} does not apply to neuron 'relu'; choose from {list(LEAKY_BACKENDS)}")


def readout_backend(backend: str) -> str:
    """The LI readout's leaky-integration backend for hidden backend ``backend``."""
    return backend if backend in LEAKY_BACKENDS else "auto"


def make_neuron(kind: str, features: int, *, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                dt: float = 1e-3, backend: str = "auto", num_steps: int | None = None, **kwargs) -> nn.Module:
    """One hidden neuron layer by name (registered in :mod:`spikescan.nn.registry`); ``kwargs`` go
    to its constructor."""
    check_backend(kind, backend)
    return build_neuron(kind, features, tau_syn=tau_syn, tau_mem=tau_mem, dt=dt,
                        backend="auto" if kind == "relu" else backend, num_steps=num_steps, **kwargs)


class FeedForwardSNN(nn.Sequential):
    """``[Linear -> neuron] x len(hidden) -> Linear -> readout``, time-first input ``[T, B, n_in]``.

    The architecture of SPSN §IV-A (3 x 128 hidden, 20 LI readout neurons on SHD) and FastSNN
    (1 x 200 hidden, max-membrane readout).  With ``readout_layer="li"`` the output is the
    readout membrane ``[T, B, n_out]`` (reduce it with :func:`spikescan.train.losses.reduce_time`);
    with ``"max-membrane"`` it is FastSNN's logits ``max_t V[t]``, ``[B, n_out]``.  ``dropout``
    (p) goes after each hidden layer; ``num_steps`` is needed by the IPSU/RPSU neurons;
    ``readout_kwargs`` go to the readout layer's constructor; ``bias_init`` see :data:`BIAS_INITS`.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, neuron: str = "spsn-sb", *,
                 tau_syn: float | None = 0.02, tau_mem: float = 0.02, dt: float = 1e-3,
                 backend: str = "auto", dropout: float = 0.0, readout_tau_syn: float | None = 0.02,
                 readout_tau_mem: float = 0.02, neuron_kwargs: dict | None = None,
                 num_steps: int | None = None, readout_layer: str = "li", readout_kwargs: dict | None = None,
                 bias_init: str = "uniform"):
        if readout_layer not in READOUT_LAYERS:
            raise ValueError(f"readout_layer must be one of {list(READOUT_LAYERS)}, got {readout_layer!r}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"bias_init must be one of {list(BIAS_INITS)}, got {bias_init!r}")
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            # event-driven where the input is sparse: data (SpikeEvents) or rarely firing neurons
            layers.append(EventLinear(width, h))
            layers.append(make_neuron(neuron, h, tau_syn=tau_syn, tau_mem=tau_mem, dt=dt, backend=backend,
                                      num_steps=num_steps,
                                      **{**TRAIN_NEURON_SETTINGS.get(neuron, {}), **(neuron_kwargs or {})}))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(EventLinear(width, n_out))
        out_backend = readout_backend(backend)
        if readout_layer == "li":
            layers.append(LI(n_out, readout_tau_syn, readout_tau_mem, dt, backend=out_backend,
                             **{**TRAIN_READOUT_SETTINGS, **(readout_kwargs or {})}))
        else:
            layers.append(MaxMembraneReadout(n_out, readout_tau_mem, dt, backend=out_backend,
                                             **(readout_kwargs or {})))
        super().__init__(*layers)
        if bias_init == "zero":
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        """The layers in order; events into ``EventLinear -> SingleSpikeLIF`` go to the neuron with
        its input layer (``SingleSpikeLIF.forward(x, input_layer=...)``: one fused kernel each way
        where it can, the composition otherwise), and with the ``EventLinear`` its spikes feed when
        one follows (``output_layer=...``: that layer's input gradient is then never stored), and
        with the ``MaxMembraneReadout`` that layer feeds (``readout=...``: one autograd node)."""
        layers = list(self)
        i = 0
        while i < len(layers):
            if (isinstance(x, SpikeEvents) and i + 1 < len(layers) and isinstance(layers[i], EventLinear)
                    and isinstance(layers[i + 1], SingleSpikeLIF)):
                if i + 3 < len(layers) and isinstance(layers[i + 2], EventLinear) \
                        and isinstance(layers[i + 3], MaxMembraneReadout):
                    _, x = layers[i + 1](x, input_layer=layers[i], output_layer=layers[i + 2], readout=layers[i + 3])
                    i += 4
                    continue
                if i + 2 < len(layers) and isinstance(layers[i + 2], EventLinear):
                    _, x = layers[i + 1](x, input_layer=layers[i], output_layer=layers[i + 2])
                    i += 3
                    continue
                x = layers[i + 1](x, input_layer=layers[i])
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x
