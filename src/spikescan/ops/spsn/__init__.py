"""The SPSN step over a whole sequence: two leaky integrations and stochastic firing.

For every time step ``t = 0 .. T-1`` (input current ``x`` laid out ``[T, B, ...]``; SPSN, Zhang
et al., eq. 5-7 and 17-19)::

    i[t] = alpha * i[t-1] + x[t]                        i[-1] = 0   (synaptic current)
    u[t] = beta * u[t-1] + (1 - beta) * i[t]            u[-1] = 0   (membrane)
    "sb":  s[t] = U[t] < sigmoid(u[t])                  Sigmoid-Bernoulli
           backward: grad_u = grad_s * p^2 (1 - p),  p = sigmoid(u[t])   (eq. 19, authors' code)
    "gs":  s[t] = logit_scale * u[t] + logit(U[t]) > 0  binary Gumbel-softmax, hard forward
           backward: grad_u = grad_s * (logit_scale / tau) * q (1 - q),
                     q = sigmoid((logit_scale * u[t] + logit(U[t])) / tau)   (straight-through)

i.e. ``sigmoid_bernoulli`` / ``gumbel_spike`` of ``leaky_integrate(leaky_integrate(x, alpha),
beta, scale=1 - beta)``.  ``U[t]`` are counter-based uniforms in (0, 1), a hash of
``(seed, t, neuron)`` (:func:`spsn_uniforms` materialises them): the same seed, shape and inputs
give the same spikes on every backend and device, and no random tensor is stored.

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
arguments and returns the spikes in ``x.dtype``.  Under ``torch.autocast`` the result has the
autocast dtype (state is float32 inside).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._checks import check_choice, check_finite, check_time_first
from .._backend import kernels_unavailable, register, register_auto, resolve
from .._params import output_dtype, param
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


def spsn_step(x: Tensor, alpha, beta, *, seed=None, firing: str = "sb", tau: float = 1.0,
              logit_scale: float = 1.0, backend: str = "auto", check: bool | None = None) -> Tensor:
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
        backend: ``"auto"``, ``"fused"`` or ``"reference"`` (module docstring); a named backend
            that cannot run the call is an error.
        check: scan ``x`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes (0/1) shaped like ``x``, in ``x.dtype`` (the autocast dtype under
        ``torch.autocast``); gradients flow to ``x``, ``alpha`` and ``beta``.
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
    s = impl(x, alpha, beta, seed, gumbel=firing == "gs", tau=tau, logit_scale=logit_scale)
    return s.to(output_dtype(x))


def fused_spsn(x: Tensor, alpha, beta, *, seed=None, firing: str = "sb", tau: float = 1.0,
               logit_scale: float = 1.0, check: bool | None = None) -> Tensor:
    """:func:`spsn_step` with ``backend="fused"``: the whole step in one kernel (same arguments but
    ``backend``)."""
    return spsn_step(x, alpha, beta, seed=seed, firing=firing, tau=tau, logit_scale=logit_scale, backend="fused",
                     check=check)
