"""Stochastic Parallelizable Spiking Neuron (SPSN) layer."""

from __future__ import annotations

import torch

from .._checks import check_choice, check_positive_int
from ..ops import spsn as spsn_ops
from ..ops._backend import backends, resolve
from ..ops.firing import gumbel_spike, sigmoid_bernoulli
from ..ops.leaky import leaky_integrate
from .base import Decay, SpikingNeuron, as_dtype, as_output, check_input, default, resolve_decay, validates_once
from .state import SPSNState, check_state, last, pack, state_tensor
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

    State: ``forward(x, state=None, *, return_state=False, return_membrane=False)`` returns the
    spikes, or ``(s, [u], [state])`` with the requested items (``u`` the membrane), the
    :class:`~spikescan.nn.state.SPSNState` ``(i, u, seed, t)`` after the last step.  The noise
    of a stateful call (a state given or asked for) is the counter-based uniform of ``(seed,
    absolute step, neuron)`` on every backend -- the fused kernel's own, materialised by
    :func:`~spikescan.ops.spsn.spsn_uniforms` on the others -- with the seed drawn from
    ``generator`` at the sequence's first call and carried in the state, so chunks fed with the
    carried state give the spikes of the whole sequence bit for bit and its gradients, whatever
    the chunk sizes.  (A stateless call on a non-fused backend draws ``torch.rand`` instead, as
    before.)  :meth:`step` runs one step.

    ``alpha=`` / ``beta=`` (keyword-only; the paper's ``a`` / ``b`` names, snnTorch's too) give
    the decays per step directly, in (0, 1), instead of ``tau_syn`` / ``tau_mem`` (not both for
    one stage); a learned decay starts at exactly that value.
    """

    def __init__(self, features: int, tau_syn: float | None = default(0.02), tau_mem: float = default(0.02),
                 dt: float = 1e-3, firing: str = "sb", learn_tau: bool = False,
                 backend: str = "auto", gs_tau: float = 1.0, logit_scale: float = 1.0,
                 generator: torch.Generator | None = None, *, beta: float | None = None,
                 alpha: float | None = None):
        super().__init__()
        tau_mem, beta = resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
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
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)

    def membrane(self, x: torch.Tensor) -> torch.Tensor:
        """The membrane potential ``u`` (before firing), ``[T, B, *, features]``, in ``x.dtype``."""
        return as_output(self._membrane(check_input(self, x, self.features)), x.dtype)

    def _membrane(self, x: torch.Tensor, i0=None, u0=None, return_current: bool = False):
        """``u`` of a checked ``x`` (already in the compute dtype) from ``(i0, u0)`` (and ``i``)."""
        a = None if self.syn is None else as_dtype(self.syn(), x.dtype)
        scan = "fused" if self.backend == "fused-scans" else self.backend
        current = x if a is None else leaky_integrate(x, a, v0=i0, backend=scan)
        b = as_dtype(self.mem(), x.dtype)
        u = leaky_integrate(current, b, scale=1.0 - b, v0=u0, backend=scan)
        return (u, current) if return_current else u

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

    @validates_once
    def forward(self, x: torch.Tensor, state: SPSNState | None = None, *, return_state: bool = False,
                return_membrane: bool = False):
        state = check_state(self, state, SPSNState)
        xc = check_input(self, x, self.features)
        if state is None and not return_state:
            return self._stateless(xc, x.dtype, return_membrane)
        if state is None:
            seed, t0, i0, u0 = self._seed(xc.device), torch.zeros((), dtype=torch.int64), None, None
        else:
            seed, t0 = _counter(state.seed, "state.seed"), _counter(state.t, "state.t")
            i0, u0 = state_tensor(state.i, "state.i", xc), state_tensor(state.u, "state.u", xc)
        u = None
        if self.uses_fused_step(xc):
            # tau_syn=None is alpha = 0: i[t] = 0 * i[t-1] + x[t] = x[t] exactly.
            alpha = 0.0 if self.syn is None else as_dtype(self.syn(), xc.dtype)
            s, i_last, u_last = spsn_ops.fused_spsn(xc, alpha, as_dtype(self.mem(), xc.dtype), seed=seed,
                                                    firing=self.firing, tau=self.gs_tau, logit_scale=self.logit_scale,
                                                    i0=i0, u0=u0, t0=t0, return_state=True)
            if return_membrane:
                u = self._membrane(xc, None if self.syn is None else i0, u0)
        else:
            u, current = self._membrane(xc, None if self.syn is None else i0, u0, return_current=True)
            noise = spsn_ops.spsn_uniforms(int(seed), xc.shape, dtype=xc.dtype, device=xc.device, t0=int(t0))
            if self.firing == "sb":
                s = sigmoid_bernoulli(u, noise=noise)
            else:
                s = gumbel_spike(u, tau=self.gs_tau, logit_scale=self.logit_scale, noise=torch.logit(noise))
            i_last, u_last = last(current), last(u)
        new = SPSNState(i_last, u_last, seed, t0 + xc.shape[0]) if return_state else None
        return pack(s, x.dtype, u if return_membrane else None, new)

    def _stateless(self, xc: torch.Tensor, dtype: torch.dtype, return_membrane: bool):
        """A call without state: the fused step's seed, or ``torch.rand`` from ``generator``."""
        if self.uses_fused_step(xc):
            seed = self._seed(xc.device)
            # tau_syn=None is alpha = 0: i[t] = 0 * i[t-1] + x[t] = x[t] exactly.
            alpha = 0.0 if self.syn is None else as_dtype(self.syn(), xc.dtype)
            s = spsn_ops.fused_spsn(xc, alpha, as_dtype(self.mem(), xc.dtype), seed=seed, firing=self.firing,
                                    tau=self.gs_tau, logit_scale=self.logit_scale)
            return pack(s, dtype, self._membrane(xc) if return_membrane else None)
        u = self._membrane(xc)
        if self.firing == "sb":
            s = sigmoid_bernoulli(u, generator=self.generator)
        else:
            s = gumbel_spike(u, tau=self.gs_tau, generator=self.generator, logit_scale=self.logit_scale)
        return pack(s, dtype, u if return_membrane else None)

    def extra_repr(self) -> str:
        return f"features={self.features}, firing={self.firing!r}, backend={self.backend!r}"


def _counter(value, label: str) -> torch.Tensor:
    """A state's seed or step count: a 0-dim integer tensor (kept as int64)."""
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or value.is_floating_point() or value.is_complex() \
            or value.dtype == torch.bool:
        what = f"a {value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
            else type(value).__name__
        raise TypeError(f"{label} must be a 0-dim integer tensor (as returned with return_state=True), got {what}")
    if label == "state.t" and int(value) < 0:
        raise ValueError(f"state.t must be >= 0 (the steps run so far), got {int(value)}")
    return value.to(torch.int64)


@register_neuron("spsn-sb", backends=SPSN_BACKENDS)
def _build_spsn_sb(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SPSN(features, tau_syn, tau_mem, dt, firing="sb", backend=backend, **kwargs)


@register_neuron("spsn-gs", backends=SPSN_BACKENDS)
def _build_spsn_gs(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SPSN(features, tau_syn, tau_mem, dt, firing="gs", backend=backend, **kwargs)
