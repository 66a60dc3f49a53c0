"""Stochastic Parallelizable Spiking Neuron (SPSN) layer."""

from __future__ import annotations

import torch

from .._checks import check_choice, check_positive_int
from ..ops import spsn as spsn_ops
from ..ops._backend import backends, resolve
from ..ops.firing import gumbel_spike, sigmoid_bernoulli
from ..ops.leaky import leaky_integrate
from .base import Decay, SpikingNeuron, as_dtype, as_output, check_input
from .registry import register_neuron

FIRING_MODES = ("sb", "gs")
#: ``"fused"`` is the one-kernel SPSN step; ``"fused-scans"`` and the others are two
#: ``leaky_integrate`` calls with that backend (``"fused-scans"``: its ``"fused"``) and the torch firing op.
SPSN_BACKENDS = ("auto", "fused", "fused-scans", *(b for b in backends("leaky_integrate") if b != "fused"))


class SPSN(SpikingNeuron):
    """SPSN: a leaky integrator computed in parallel over time, then stochastic firing.

    Per neuron, with ``a = exp(-dt/tau_syn)`` and ``b = exp(-dt/tau_mem)`` (SPSN, Zhang et al.,
    eq. 5, 7, 13-15)::

        i[t] = a * i[t-1] + x[t]                              (i = x when tau_syn is None)
        u[t] = b * u[t-1] + (1 - b) * i[t]
        s[t] ~ Bernoulli(sigmoid(u[t]))                      firing="sb"  (eq. 17-19)
        s[t] = 1[sigmoid((logit_scale*u[t] + L[t]) / gs_tau) > 1/2],  L ~ Logistic   firing="gs"

    ``firing="sb"`` backpropagates ``ds/du = p^2 (1 - p)`` (the authors' code); ``"gs"`` is the
    straight-through binary Gumbel-softmax, firing probability ``sigmoid(logit_scale * u)``
    (``logit_scale=2`` reproduces the authors' code, 1 the paper).

    ``backend``:

    - ``"fused"``: the whole step -- both integrations, sigmoid and the Bernoulli / Gumbel draw --
      is ONE kernel, :func:`spikescan.ops.spsn.fused_spsn` (an error where it cannot run), which
      stores no ``[T, ...]`` random tensor: its uniforms are a counter-based hash of
      ``(seed, t, neuron)``, with the seed drawn from ``generator`` (or torch's global
      generator) at every forward, so ``torch.manual_seed`` / a seeded ``generator`` make runs
      reproducible.
    - ``"auto"`` (default): ``"fused"`` where the fused kernels run (``"fused" in
      spikescan.ops.backends("spsn", x)``: CPU with numba, CUDA with Triton), elsewhere the
      two-scan path below with ``leaky_integrate``'s ``"auto"``.
    - ``"sequential"``, ``"fft"``, ``"chunked"``, ``"fused-scans"``: two
      :func:`spikescan.ops.leaky_integrate` calls with that backend (``"fused-scans"``: its fused
      scan kernel, two passes), then :func:`~spikescan.ops.firing.sigmoid_bernoulli` /
      :func:`~spikescan.ops.firing.gumbel_spike` drawing ``torch.rand`` from ``generator``.

    Both paths compute the same membrane and the same firing rule and gradients; for the same
    seed they draw different random numbers, so their spikes agree in distribution only.

    Input ``[T, B, *, features]``, output spikes of the same shape.  Set ``generator`` (a
    ``torch.Generator`` on the input's device) for reproducible spikes.
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, firing: str = "sb", learn_tau: bool = False,
                 backend: str = "auto", gs_tau: float = 1.0, logit_scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_choice(firing, "firing", FIRING_MODES)
        check_choice(backend, "backend", SPSN_BACKENDS)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.features = check_positive_int(features, "features")
        self.firing = firing
        self.backend = backend
        self.gs_tau = float(gs_tau)
        self.logit_scale = float(logit_scale)
        self.generator = generator
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn") if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem")

    def membrane(self, x: torch.Tensor) -> torch.Tensor:
        """The membrane potential ``u`` (before firing), ``[T, B, *, features]``, in ``x.dtype``."""
        return as_output(self._membrane(check_input(self, x, self.features)), x.dtype)

    def _membrane(self, x: torch.Tensor) -> torch.Tensor:
        """``u`` of a checked ``x`` (already in the compute dtype)."""
        a = None if self.syn is None else as_dtype(self.syn(), x.dtype)
        scan = "fused" if self.backend == "fused-scans" else self.backend
        current = x if a is None else leaky_integrate(x, a, backend=scan)
        b = as_dtype(self.mem(), x.dtype)
        return leaky_integrate(current, b, scale=1.0 - b, backend=scan)

    def uses_fused_step(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` runs ``x`` through the one-kernel SPSN step."""
        if self.backend == "fused":
            resolve("spsn", "fused", x)  # the registry's error where the kernel cannot run x
            return True
        return self.backend == "auto" and "fused" in backends("spsn", x)

    def _seed(self, device: torch.device) -> torch.Tensor:
        """A fresh seed of the fused step (a 0-dim int64 tensor, which ``torch.compile`` traces)."""
        g = self.generator
        if g is not None and g.device.type != device.type:
            raise ValueError(f"generator is on {g.device} but x is on {device}; create it on x's device")
        return spsn_ops.random_seed(g, g.device if g is not None else "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = check_input(self, x, self.features)
        if self.uses_fused_step(xc):
            seed = self._seed(xc.device)
            # tau_syn=None is alpha = 0: i[t] = 0 * i[t-1] + x[t] = x[t] exactly.
            alpha = 0.0 if self.syn is None else as_dtype(self.syn(), xc.dtype)
            s = spsn_ops.fused_spsn(xc, alpha, as_dtype(self.mem(), xc.dtype), seed=seed, firing=self.firing,
                                    tau=self.gs_tau, logit_scale=self.logit_scale)
        elif self.firing == "sb":
            s = sigmoid_bernoulli(self._membrane(xc), generator=self.generator)
        else:
            s = gumbel_spike(self._membrane(xc), tau=self.gs_tau, generator=self.generator,
                             logit_scale=self.logit_scale)
        return as_output(s, x.dtype)

    def extra_repr(self) -> str:
        return f"features={self.features}, firing={self.firing!r}, backend={self.backend!r}"


@register_neuron("spsn-sb", backends=SPSN_BACKENDS)
def _build_spsn_sb(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SPSN(features, tau_syn, tau_mem, dt, firing="sb", backend=backend, **kwargs)


@register_neuron("spsn-gs", backends=SPSN_BACKENDS)
def _build_spsn_gs(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SPSN(features, tau_syn, tau_mem, dt, firing="gs", backend=backend, **kwargs)
