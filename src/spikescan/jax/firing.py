"""Firing functions in JAX: membrane -> spikes, with the same gradients as :mod:`spikescan.ops.firing`.

- :func:`heaviside`: ``s = H(u)`` (``u >= 0`` fires) with a surrogate derivative
  (:mod:`spikescan.surrogate`'s four formulas, same names and parameters).
- :func:`sigmoid_bernoulli`: SPSN-SB, ``p = sigmoid(u)``, ``s ~ Bernoulli(p)``, backward
  ``ds/du = p^2 (1 - p)`` (SPSN eq. 17-19, the authors' code).
- :func:`gumbel_spike`: SPSN-GS, binary Gumbel-softmax, hard forward, straight-through backward
  ``(logit_scale / tau) * soft * (1 - soft)``.

The gradients are ``jax.custom_jvp`` rules, so forward- and reverse-mode both work and the
functions compose with ``jit``, ``vmap`` and ``lax.scan``.  Randomness comes from an explicit
``key`` (``jax.random.key``/``PRNGKey``), or a fixed ``noise`` array for tests and for
reproducing the torch side's draw: the same noise gives the same spikes in both frameworks.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from . import _checks as C

__all__ = ["heaviside", "sigmoid_bernoulli", "gumbel_spike", "surrogate_grad"]


def surrogate_grad(kind: str, param: float, x):
    """The surrogate derivative ``(kind, param)`` at ``x``; the formulas (and the order of their
    operations) of :func:`spikescan.surrogate.surrogate_grad`."""
    if kind == "fast_sigmoid":
        return jnp.square(1.0 / (param * jnp.abs(x) + 1.0))
    if kind == "atan":
        return (param / 2.0) / (1.0 + jnp.square(x * (math.pi / 2.0 * param)))
    if kind == "sigmoid":
        s = jax.nn.sigmoid(param * x)
        return param * s * (1.0 - s)
    if kind == "triangle":
        return jnp.maximum(1.0 - jnp.abs(x) / param, 0.0) / param
    raise ValueError(f"unknown surrogate kind {kind!r}")


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def spike(u, kind: str, param: float):
    """``H(u)`` with the surrogate ``(kind, param)`` as its derivative; no argument checks (internal)."""
    return (u >= 0).astype(u.dtype)


@spike.defjvp
def _spike_jvp(kind, param, primals, tangents):
    (u,), (du,) = primals, tangents
    return spike(u, kind, param), du * surrogate_grad(kind, param, u)


def heaviside(u, surrogate=None):
    """Spike where ``u >= 0``: ``s = H(u)`` (``u = v - threshold``), surrogate derivative in backward.

    ``surrogate``: a :class:`spikescan.surrogate.Surrogate`, a name accepted by
    :func:`spikescan.surrogate.get`, or ``None`` for ``FastSigmoid(slope=25)``.
    Returns spikes (0/1) with the shape and dtype of ``u``.
    """
    u = C.as_array(u, "u")
    kind, param = C.surrogate_spec(surrogate)
    return spike(u, kind, param)


@jax.custom_jvp
def _sigmoid_bernoulli(u, noise):
    return (noise < jax.nn.sigmoid(u)).astype(u.dtype)


@_sigmoid_bernoulli.defjvp
def _sigmoid_bernoulli_jvp(primals, tangents):
    u, noise = primals
    du, _ = tangents
    p = jax.nn.sigmoid(u)
    return (noise < p).astype(u.dtype), du * (p * p * (1.0 - p))


def _noise(noise, key, u, name: str, draw):
    if (noise is None) == (key is None):
        raise ValueError(f"give exactly one of key (a PRNG key) or {name} (fixed samples)")
    dtype = C.compute_dtype(u.dtype)
    if noise is None:
        return draw(key, u.shape, dtype)
    noise = C.as_array(noise, name)
    try:
        shape = jnp.broadcast_shapes(noise.shape, u.shape)
    except ValueError:
        shape = None
    if shape != u.shape:
        raise ValueError(f"{name} of shape {tuple(noise.shape)} does not broadcast to u's shape {tuple(u.shape)}")
    return jax.lax.stop_gradient(noise.astype(dtype))


def sigmoid_bernoulli(u, key=None, *, noise=None):
    """SPSN-SB firing: ``p = sigmoid(u)``, ``s = 1`` where ``noise < p``, ``noise ~ U[0, 1)``.

    The uniforms are drawn from ``key`` or given as ``noise`` (exactly one of the two);
    backward ``grad_u = grad_s * p^2 (1 - p)`` (SPSN eq. 19 as the authors' code computes it,
    :func:`spikescan.ops.firing.sigmoid_bernoulli`).  Half inputs are computed in float32.
    """
    u = C.as_array(u, "u")
    out = u.dtype
    n = _noise(noise, key, u, "noise", lambda k, s, d: jax.random.uniform(k, s, d))
    return _sigmoid_bernoulli(u.astype(n.dtype), n).astype(out)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _gumbel(u, noise, tau: float, logit_scale: float):
    return (logit_scale * u + noise > 0).astype(u.dtype)


@_gumbel.defjvp
def _gumbel_jvp(tau, logit_scale, primals, tangents):
    u, noise = primals
    du, _ = tangents
    z = logit_scale * u + noise
    soft = jax.nn.sigmoid(z / tau)
    return (z > 0).astype(u.dtype), du * ((logit_scale / tau) * soft * (1.0 - soft))


def gumbel_spike(u, key=None, *, tau: float = 1.0, logit_scale: float = 1.0, noise=None):
    """SPSN-GS firing: ``s = 1`` where ``logit_scale * u + L > 0``, ``L ~ Logistic(0, 1)``.

    ``L`` is the difference of the two Gumbel draws of a binary Gumbel-softmax, drawn from
    ``key`` or given as ``noise`` (Logistic samples, not uniforms).  ``P(s = 1) =
    sigmoid(logit_scale * u)``; backward: the straight-through soft sample,
    ``grad_u = grad_s * (logit_scale / tau) * soft * (1 - soft)``, ``soft = sigmoid(z / tau)``
    (:func:`spikescan.ops.firing.gumbel_spike`; ``logit_scale=2`` is the SPSN authors' code).
    """
    u = C.as_array(u, "u")
    tau = C.positive_float(tau, "tau")
    logit_scale = C.positive_float(logit_scale, "logit_scale")
    out = u.dtype
    n = _noise(noise, key, u, "noise", lambda k, s, d: jax.random.logistic(k, s, d))
    return _gumbel(u.astype(n.dtype), n, tau, logit_scale).astype(out)
