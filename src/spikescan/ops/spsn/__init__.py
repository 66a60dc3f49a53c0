"""The SPSN step over a whole sequence: two leaky integrations and stochastic firing.

For every time step ``t = 0 .. T-1`` (input current ``x`` laid out ``[T, B, ...]``; SPSN, Zhang
et al., eq. 5-7 and 17-19)::

    i[t] = alpha * i[t-1] + x[t]                        i[-1] = i0 (default 0)   (synaptic current)
    u[t] = beta * u[t-1] + (1 - beta) * i[t]            u[-1] = u0 (default 0)   (membrane)
    "sb":  s[t] = U[t] < sigmoid(u[t])                  Sigmoid-Bernoulli
           backward: grad_u = grad_s * p^2 (1 - p),  p = sigmoid(u[t])   (eq. 19, authors' code)
    "gs":  s[t] = logit_scale * u[t] + logit(U[t]) > 0  binary Gumbel-softmax, hard forward
           backward: grad_u = grad_s * (logit_scale / tau) * q (1 - q),
                     q = sigmoid((logit_scale * u[t] + logit(U[t])) / tau)   (straight-through)

i.e. ``sigmoid_bernoulli`` / ``gumbel_spike`` of ``leaky_integrate(leaky_integrate(x, alpha),
beta, scale=1 - beta)``.  ``U[t]`` are counter-based uniforms in (0, 1), a hash of
``(seed, t0 + t, neuron)`` (:func:`spsn_uniforms` materialises them): the same seed, shape and
inputs give the same spikes on every backend and device, and no random tensor is stored.
Because the hash takes the absolute step ``t0 + t``, a sequence run in chunks -- each from the
final state ``(i, u)`` of the one before (``return_state=True``) with ``t0`` its first step and
the same seed -- draws the noise of the whole sequence and gives its spikes bit for bit (and its
gradients: the state carries them back).

Backends (``backend=``):

``"reference"``  :func:`~spikescan.ops.spsn.reference.spsn_reference`, the composition above
                 with two sequential scans and ``U`` materialised; autograd through the ops
                 (double backward works).  The reference the fused kernel is tested against.
``"fused"``      :mod:`spikescan.ops.spsn.fused`: the whole step in one kernel pass each way
                 (numba on the CPU, Triton on CUDA; ``torch.library`` custom ops that
                 ``torch.compile`` traces), keeping for the backward a checkpoint of
                 ``(i, u)`` every 32 steps (CPU) or the states of every step (CUDA), never the
                 noise.  float16/bfloat16 computed in float32; no double backward.
``"auto"``       ``"fused"`` where the kernels run (a CPU with numba, CUDA with Triton).

The integrations of both backends are bit-identical; the kernels' sigmoid/logit use a
vectorized ``exp`` (float32, about 2 ulp) or the device's, so a draw lying within rounding of the
firing boundary may differ from torch's decision.  Backends are registered in
:mod:`spikescan.ops._backend` (``spikescan.ops.backends("spsn")``); a backend receives validated
arguments (``i0``/``u0`` ``None`` or tensors, ``t0`` a 0-dim int64 tensor) and returns
``(s, i[T-1], u[T-1])``: the spikes in ``x.dtype`` and the final state in the compute dtype.  Under ``torch.autocast`` the result has the
autocast dtype (state is float32 inside).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_choice, check_finite, check_time_first
from .._backend import kernels_unavailable, register, register_auto, resolve
from .._params import compute_dtype, output_dtype, param
from ..firing import _check_positive
from .fused import SPSNKernelConfig, random_seed, seed_tensor, spsn_fused, spsn_uniforms
from .reference import spsn_reference

__all__ = ["spsn_step", "fused_spsn", "spsn_uniforms", "spsn_reference", "random_seed", "SPSNKernelConfig", "FIRINGS"]

FIRINGS = ("sb", "gs")


def _reference_unsupported(x: Tensor, **context) -> str | None:
    reason = kernels_unavailable(x.device)
    return None if reason is None else f"its uniforms are drawn by the fused kernels, and {reason}"


register("spsn", "reference",
         unsupported=_reference_unsupported,
         description="two sequential scans, then the firing op with the kernels' uniforms (double backward)")(
    spsn_reference)
register("spsn", "fused", unsupported=lambda x, **context: kernels_unavailable(x.device),
         description="the whole step in one kernel, one pass each way (numba CPU / Triton CUDA)")(spsn_fused)
# The reference needs the same kernels (for its uniforms) and materialises every [T, ...] tensor.
register_auto("spsn", lambda x, **context: ("fused",))


def _seed(seed) -> Tensor:
    """``seed`` (``None``, an int, or a 0-dim integer tensor) as a 0-dim int64 tensor."""
    if seed is None:
        return random_seed()
    if isinstance(seed, Tensor):
        if seed.dim() != 0 or seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise TypeError(f"seed must be an int or a 0-dim integer tensor, got a {seed.dtype} tensor of shape "
                            f"{tuple(seed.shape)}")
        return seed.to(torch.int64)
    return seed_tensor(seed)  # TypeError "seed must be an int" for anything else


def _initial(value, name: str, x: Tensor) -> Tensor | None:
    """An initial state validated like a parameter -- except that a tensor already shaped
    ``x.shape[1:]`` in the compute dtype on ``x``'s device (the state a previous call returned)
    is data, like ``x``: scanned for NaN/Inf only in debug mode, so a one-step call costs no
    reduction and no host sync for it."""
    if value is None:
        return None
    if (isinstance(value, Tensor) and value.dtype == compute_dtype(x.dtype) and value.shape == x.shape[1:]
            and value.device == x.device):
        check_finite(value, name)
        return value
    return param(value, name, x)


def _start(t0) -> Tensor:
    """``t0`` (an int >= 0 or a 0-dim integer tensor) as a 0-dim int64 tensor."""
    if isinstance(t0, Tensor):
        if t0.dim() != 0 or t0.dtype.is_floating_point or t0.dtype.is_complex or t0.dtype == torch.bool:
            raise TypeError(f"t0 must be an int or a 0-dim integer tensor, got a {t0.dtype} tensor of shape "
                            f"{tuple(t0.shape)}")
        return t0.to(torch.int64)
    if isinstance(t0, bool) or not isinstance(t0, int):
        raise TypeError(f"t0 must be an int (the absolute index of the first step), got {type(t0).__name__}")
    if t0 < 0:
        raise ValueError(f"t0 must be >= 0 (the absolute index of the first step), got {t0}")
    return torch.tensor(t0, dtype=torch.int64)


def spsn_step(x: Tensor, alpha, beta, *, seed=None, firing: str = "sb", tau: float = 1.0,
              logit_scale: float = 1.0, i0=None, u0=None, t0=0, return_state: bool = False,
              backend: str = "auto", check: bool | None = None):
    """One SPSN layer over the whole sequence ``x`` (equations in the module docstring).

    Args:
        x: input current ``[T, *rest]``, floating (half types computed in float32).
        alpha, beta: synaptic and membrane decay in ``[0, 1]``, floats or tensors broadcastable
            to ``x.shape[1:]``; differentiable.
        seed: int in ``[0, 2**64)`` (or a 0-dim integer tensor, e.g. drawn by ``torch.randint``,
            which ``torch.compile`` traces); ``None`` draws one from torch's global generator
            (so ``torch.manual_seed`` makes the call reproducible).
        firing: ``"sb"`` (Sigmoid-Bernoulli) or ``"gs"`` (binary Gumbel-softmax).
        tau, logit_scale: Gumbel-softmax temperature and logit scale, ``> 0`` (see
            :func:`~spikescan.ops.firing.gumbel_spike`).
        i0, u0: the initial current ``i[-1]`` and membrane ``u[-1]``, floats or tensors
            broadcastable to ``x.shape[1:]`` (``None``: 0); differentiable.
        t0: the absolute index of the first step (an int >= 0 or a 0-dim integer tensor): the
            noise of step ``t`` is that of step ``t0 + t`` of a sequence with this seed.
        return_state: also return the final state ``(i[T-1], u[T-1])`` (shaped ``x.shape[1:]``,
            in the compute dtype, carrying gradient), to continue with ``i0``, ``u0`` and
            ``t0 + T``.
        backend: ``"auto"``, ``"fused"`` or ``"reference"`` (module docstring); a named backend
            that cannot run the call is an error.
        check: scan ``x`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes (0/1) shaped like ``x``, in ``x.dtype`` (the autocast dtype under
        ``torch.autocast``), or ``(spikes, i_last, u_last)`` with ``return_state``; gradients
        flow to ``x``, ``alpha``, ``beta``, ``i0`` and ``u0``.
    """
    check_time_first(x, "x")
    impl = resolve("spsn", backend, x).fn  # before the data checks touch x's device
    check_finite(x, "x", check)
    check_choice(firing, "firing", FIRINGS)
    tau = _check_positive(tau, "tau")
    logit_scale = _check_positive(logit_scale, "logit_scale")
    seed = _seed(seed)
    alpha = param(alpha, "alpha", x, low=0.0, high=1.0)
    beta = param(beta, "beta", x, low=0.0, high=1.0)
    i0, u0 = _initial(i0, "i0", x), _initial(u0, "u0", x)
    s, i_last, u_last = impl(x, alpha, beta, seed, gumbel=firing == "gs", tau=tau, logit_scale=logit_scale,
                             i0=i0, u0=u0, t0=_start(t0))
    s = s.to(output_dtype(x))
    return (s, i_last, u_last) if return_state else s


def fused_spsn(x: Tensor, alpha, beta, *, seed=None, firing: str = "sb", tau: float = 1.0,
               logit_scale: float = 1.0, i0=None, u0=None, t0=0, return_state: bool = False,
               check: bool | None = None):
    """:func:`spsn_step` with ``backend="fused"``: the whole step in one kernel (same arguments but
    ``backend``)."""
    return spsn_step(x, alpha, beta, seed=seed, firing=firing, tau=tau, logit_scale=logit_scale, i0=i0, u0=u0,
                     t0=t0, return_state=return_state, backend="fused", check=check)
