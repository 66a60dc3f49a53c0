"""Firing functions: membrane potential -> spikes, each with the gradient its paper uses.

- :func:`heaviside`: deterministic step ``s = H(u)`` (``u >= 0`` fires) with a surrogate
  derivative in backward (LIF, PSU, ...).
- :func:`sigmoid_bernoulli`: SPSN-SB, ``s ~ Bernoulli(sigmoid(u))`` with the authors'
  probability-scaled straight-through gradient (SPSN eq. 17-19).
- :func:`gumbel_spike`: SPSN-GS, binary Gumbel-softmax with a hard forward and the
  straight-through soft backward (SPSN section III-B, Jang, Gu & Poole 2017).

All three are elementwise and work on any shape; the output has the dtype of ``u`` and holds
exactly 0 and 1.  The stochastic ones draw their noise from ``generator`` (a
``torch.Generator`` on ``u``'s device; the same seed gives the same spikes) or take it from
``noise`` (for tests and for reproducing a sample).  float16/bfloat16 inputs are computed in
float32 internally.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import surrogate as _surrogate
from .._checks import check_finite, check_float, check_tensor, compute_dtype

__all__ = ["heaviside", "sigmoid_bernoulli", "gumbel_spike"]


def _check_input(u, name: str, check) -> Tensor:
    check_tensor(u, name)
    check_float(u, name)
    check_finite(u, name, check)
    return u


def _check_generator(generator, u: Tensor) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != u.device.type:
        raise ValueError(f"generator is on {generator.device} but u is on {u.device}; create it on u's device")


def _get_noise(noise, generator, u: Tensor, name: str, sampler) -> Tensor:
    """Validate a given noise tensor, or draw one with ``sampler(shape, dtype, device, generator)``."""
    dtype = compute_dtype(u.dtype)
    if noise is None:
        _check_generator(generator, u)
        return sampler(u.shape, dtype, u.device, generator)
    if generator is not None:
        raise ValueError(f"give either {name} or generator, not both")
    check_tensor(noise, name)
    check_float(noise, name)
    if noise.device != u.device:
        raise ValueError(f"{name} is on {noise.device} but u is on {u.device}")
    try:
        shape = torch.broadcast_shapes(noise.shape, u.shape)
    except RuntimeError:
        shape = None
    if shape != u.shape:
        raise ValueError(f"{name} of shape {tuple(noise.shape)} does not broadcast to u's shape {tuple(u.shape)}")
    return noise.detach().to(dtype)


# ---------------------------------------------------------------------------------------
# Heaviside with surrogate gradient
# ---------------------------------------------------------------------------------------


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, surrogate) -> Tensor:
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (u,) = ctx.saved_tensors
        g = ctx.surrogate.grad(u.to(compute_dtype(u.dtype)))
        return (grad_out * g).to(u.dtype), None


def heaviside_unchecked(u: Tensor, surrogate: _surrogate.Surrogate) -> Tensor:
    """:func:`heaviside` without validation, for loops whose caller validated the sequence once."""
    return _Heaviside.apply(u, surrogate)


def heaviside(u: Tensor, surrogate=None, *, check: bool | None = None) -> Tensor:
    """Spike where ``u >= 0``: ``s = H(u)``, with a surrogate derivative in backward.

    Forward: ``s = 1`` where ``u >= 0`` else ``0`` -- a neuron fires when its membrane *reaches*
    the threshold (``u = v - threshold``), as in the temporal-parallelization paper's
    ``Theta(v - V_th)`` ("1 if v - V_th >= 0") and SPSN eq. 3.
    Backward: ``grad_u = grad_s * surrogate.grad(u)``.

    Args:
        u: floating tensor of any shape (typically ``v - threshold``).
        surrogate: a :class:`spikescan.surrogate.Surrogate`, a name accepted by
            :func:`spikescan.surrogate.get`, or ``None`` for ``FastSigmoid(slope=25)``.
        check: scan ``u`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes with the shape and dtype of ``u``.
    """
    _check_input(u, "u", check)
    return _Heaviside.apply(u, _surrogate.get(surrogate))


# ---------------------------------------------------------------------------------------
# SPSN Sigmoid-Bernoulli
# ---------------------------------------------------------------------------------------


def _uniform(shape, dtype, device, generator) -> Tensor:
    return torch.rand(shape, dtype=dtype, device=device, generator=generator)


class _SigmoidBernoulli(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, noise: Tensor) -> Tensor:
        p = torch.sigmoid(u.to(noise.dtype))
        ctx.save_for_backward(p)
        ctx.out_dtype = u.dtype
        return (noise < p).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        (p,) = ctx.saved_tensors
        # authors' code: grad * p, then autograd through p = sigmoid(u): * p (1 - p)
        return (grad_s * (p * p * (1.0 - p))).to(ctx.out_dtype), None


def sigmoid_bernoulli(u: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None,
                      *, check: bool | None = None) -> Tensor:
    """SPSN-SB firing: ``p = sigmoid(u)``, ``s ~ Bernoulli(p)`` (SPSN eq. 17-18).

    Forward: ``s = 1`` where ``noise < p``, ``noise ~ U[0, 1)`` drawn from ``generator`` (or the
    given ``noise`` tensor).  There is no threshold: ``u = 0`` fires with probability 1/2.

    Backward (SPSN eq. 19, as the authors' code computes it):
    ``grad_u = grad_s * p * sigmoid'(u) = grad_s * p^2 * (1 - p)``.
    The code multiplies the incoming gradient by ``p`` (eq. 19, "ds/dp ~ p") and autograd then
    applies ``dp/du = sigmoid'(u) = p (1 - p)``; reading eq. 19 literally (derivative with
    respect to ``p``, chained through eq. 17) gives the same ``p^2 (1 - p)``.

    Args:
        u: floating tensor of any shape (the membrane potential).
        generator: ``torch.Generator`` on ``u``'s device, or ``None`` for the global RNG.
        noise: optional fixed uniform samples in ``[0, 1)``, broadcastable to ``u.shape``
            (excludes ``generator``); not differentiated.
        check: scan ``u`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes (0/1) with the shape and dtype of ``u``.
    """
    _check_input(u, "u", check)
    noise = _get_noise(noise, generator, u, "noise", _uniform)
    return _SigmoidBernoulli.apply(u, noise)


# ---------------------------------------------------------------------------------------
# SPSN Gumbel-softmax (binary, hard, straight-through)
# ---------------------------------------------------------------------------------------


def _logistic(shape, dtype, device, generator) -> Tensor:
    # g_fire - g_nofire of two independent Gumbel(0, 1) is Logistic(0, 1) = logit(U).
    # torch.rand may return exactly 0 -> logit = -inf -> no spike and zero gradient (no NaN).
    return torch.logit(torch.rand(shape, dtype=dtype, device=device, generator=generator))


class _GumbelSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, noise: Tensor, tau: float, logit_scale: float) -> Tensor:
        z = logit_scale * u.to(noise.dtype) + noise
        soft = torch.sigmoid(z / tau)
        ctx.save_for_backward(soft)
        ctx.scale = logit_scale / tau
        ctx.out_dtype = u.dtype
        return (z > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        (soft,) = ctx.saved_tensors
        # gradient of the straight-through s_hard - s_soft.detach() + s_soft
        return (grad_s * (ctx.scale * soft * (1.0 - soft))).to(ctx.out_dtype), None, None, None


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (value > 0.0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def gumbel_spike(u: Tensor, tau: float = 1.0, generator: torch.Generator | None = None,
                 logit_scale: float = 1.0, noise: Tensor | None = None, *,
                 check: bool | None = None) -> Tensor:
    """SPSN-GS firing: binary Gumbel-softmax, hard forward, straight-through backward.

    Two classes, "fire" and "silent", with logits ``(+c*u/2, -c*u/2)``, ``c = logit_scale``.
    Adding Gumbel noise ``g1, g0`` and taking a softmax with temperature ``tau``, the "fire"
    component is ``s_soft = sigmoid((c*u + L) / tau)`` where ``L = g1 - g0 ~ Logistic(0, 1)``
    (the difference of two independent Gumbels is logistic), so one logistic draw replaces
    the two Gumbel draws.

    Forward: ``s = 1`` where the "fire" class wins, i.e. ``c*u + L > 0``; so
    ``P(s = 1) = sigmoid(c * u)``, for every ``tau``.
    Backward: the straight-through estimator ``s_hard - s_soft.detach() + s_soft``, i.e.
    ``grad_u = grad_s * (c / tau) * s_soft * (1 - s_soft)`` (computed directly, so the
    forward holds exact 0/1 values).

    ``logit_scale=1`` (default) follows the paper: firing probability ``sigmoid(u)``, the same
    as SPSN-SB.  ``logit_scale=2`` reproduces the authors' code, which builds the softmax over
    ``(u + g0, -u + g1)`` and so fires with probability ``sigmoid(2u)`` and backpropagates
    ``2 * s_soft * (1 - s_soft)`` at ``tau = 1`` (the setting behind the published SPSN-GS
    numbers).

    Args:
        u: floating tensor of any shape (the membrane potential).
        tau: softmax temperature ``> 0`` (the paper and code use 1).
        generator: ``torch.Generator`` on ``u``'s device, or ``None`` for the global RNG.
        logit_scale: ``c > 0`` above.
        noise: optional fixed **Logistic(0, 1)** samples ``L`` (not uniform, not Gumbel),
            broadcastable to ``u.shape`` (excludes ``generator``); not differentiated.
        check: scan ``u`` for NaN/Inf (default: only in debug mode).

    Returns:
        spikes (0/1) with the shape and dtype of ``u``.
    """
    _check_input(u, "u", check)
    tau = _check_positive(tau, "tau")
    logit_scale = _check_positive(logit_scale, "logit_scale")
    noise = _get_noise(noise, generator, u, "noise", _logistic)
    return _GumbelSpike.apply(u, noise, tau, logit_scale)
