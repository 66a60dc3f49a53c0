"""Float64 references and comparisons with tolerances derived from the float32 arithmetic.

The JAX and torch sides compute the same recurrences, but XLA on a CPU with FMA contracts
``decay * v + x`` into one rounding where torch rounds twice, so float32 results may differ
by the rounding of each step.  Instead of comparing the two float32 results with a guessed
tolerance, each is compared with the float64 recurrence on the same float32 inputs, within the
bound of its own rounding: a step of the LIF rounds at most 3 times (product, sum, reset), each
by at most eps32 times the largest magnitude in play ``M``, and the decay (<= 1) never
amplifies an earlier error, so after ``t + 1`` steps the error is at most ``3 (t + 1) eps32 M``
(we allow 4).  Spikes are then determined wherever the float64 membrane is farther than that
from the threshold; a neuron is compared up to the first step where it is not, because after
an undetermined spike its trajectories may legitimately part.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)

# Gradient tolerance of the LIF where XLA may contract decay * v + x into an FMA (any host whose
# CPU has one): each step's membrane then differs from torch's by a rounding, which a surrogate
# of slope k turns into a relative difference of up to ~2k * that rounding in each step's
# derivative, accumulated over the steps of BPTT; measured up to 1.7e-5 (T = 100, 512 neurons,
# slope 25).  The 1e-5 parity of the gradients is asserted where the order of operations is the
# same on both sides, without contraction (tests/jax/test_exact.py: measured <= 4.1e-7).
FMA_GRAD_TOL = 1e-4


def leaky64(x, decay, scale=1.0, v0=None):
    x = np.asarray(x, np.float64) * np.asarray(scale, np.float64)
    d = np.asarray(decay, np.float64)
    u = np.zeros(x.shape[1:]) if v0 is None else np.broadcast_to(np.asarray(v0, np.float64), x.shape[1:])
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        u = d * u + x[t]
        out[t] = u
    return out


def leaky_bound(x, decay, scale=1.0, v0=None, roundings_per_step=2.0, depth=None):
    """Per-output bound on the float32 rounding of a leaky scan: ``c * eps32 * S_t`` with ``S_t`` the
    leaky sum of magnitudes; ``c = roundings_per_step * (t + 1)`` (sequential) or ``depth`` (tree)."""
    mag = leaky64(np.abs(np.asarray(x, np.float64)), decay, np.abs(np.asarray(scale, np.float64)),
                  None if v0 is None else np.abs(np.asarray(v0, np.float64)))
    T = mag.shape[0]
    steps = np.arange(1, T + 1, dtype=np.float64).reshape((T,) + (1,) * (mag.ndim - 1))
    c = roundings_per_step * steps if depth is None else depth
    return c * EPS32 * mag + np.finfo(np.float32).tiny


def lif64(x, decay, threshold, reset="subtract", v_reset=0.0, v0=None):
    """The exact LIF in float64 on the given (float32) values: spikes, pre-reset membrane, final state."""
    x = np.asarray(x, np.float64)
    d, th, vr = (np.asarray(a, np.float64) for a in (decay, threshold, v_reset))
    p = np.zeros(x.shape[1:]) if v0 is None else np.broadcast_to(np.asarray(v0, np.float64), x.shape[1:]).copy()
    s_all, v_all = np.empty_like(x), np.empty_like(x)
    for t in range(x.shape[0]):
        v = d * p + x[t]
        s = (v >= th).astype(np.float64)
        p = v - th * s if reset == "subtract" else v * (1 - s) + vr * s
        s_all[t], v_all[t] = s, v
    return s_all, v_all, p


def lif_tolerance(x, v64, threshold, v0=None, v_reset=0.0):
    """``4 (t + 1) eps32 M`` per step, ``M`` the largest magnitude of the inputs, membranes, threshold, reset, v0."""
    T = x.shape[0]
    m = max(float(np.max(np.abs(x))), float(np.max(np.abs(v64))), float(np.max(np.abs(threshold))),
            float(np.max(np.abs(v_reset))), 0.0 if v0 is None else float(np.max(np.abs(v0))))
    steps = np.arange(1, T + 1, dtype=np.float64).reshape((T,) + (1,) * (x.ndim - 1))
    return 4.0 * steps * EPS32 * m


def determined(v64, threshold, tol):
    """Mask of the steps whose spike is determined: before each neuron's first ``|v - th| <= tol``."""
    ambiguous = np.abs(v64 - np.asarray(threshold, np.float64)) <= tol
    return np.cumsum(ambiguous, axis=0) == 0


def assert_lif_matches(s, v, s64, v64, threshold, tol, min_fraction=0.0):
    """Spikes equal and membranes within ``tol`` on the determined steps; returns the fraction compared."""
    s, v = np.asarray(s, np.float64), np.asarray(v, np.float64)
    ok = determined(v64, threshold, tol)
    bad_s = ok & (s != s64)
    assert not bad_s.any(), f"{int(bad_s.sum())} spikes differ on determined steps"
    err = np.where(ok, np.abs(v - v64), 0.0)
    assert np.all(err <= np.broadcast_to(tol, err.shape)), f"membrane error {err.max()} above the bound"
    frac = float(ok.mean())
    assert frac >= min_fraction, f"only {frac:.2%} of the steps were determined"
    return frac


def rel_err(a, b) -> float:
    """``max |a - b| / max |b|`` (0 when both vanish)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def _torch_leaky():
    # spikescan.ops re-exports the op after the ops refactor; before it, only spikescan.ops.scan has it
    import spikescan.ops as ops

    if hasattr(ops, "leaky_integrate"):
        return ops.leaky_integrate
    from spikescan.ops.scan import leaky_integrate

    return leaky_integrate


torch_leaky = _torch_leaky()
