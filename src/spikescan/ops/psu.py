"""Parallel Spiking Units: PSU, IPSU and RPSU (Li et al., "Parallel Spiking Unit for Efficient
Training of Spiking Neural Networks").

A LIF neuron cannot be computed in parallel over time because its reset needs the spike of the
previous step.  The PSU family replaces the reset by a reset *estimated from the input*, so
that every time step is computed at once with causal (lower-triangular) T×T operators acting
on the time axis.  With ``k = 1/tau`` and the leak operators (``j <= i`` is the causal mask)::

    P[i, j]  = decay^(i-j)            for j <= i, else 0      (Toeplitz)
    M1       = scale * P                                       (leak-integration)
    R[i, j]  = -decay^(i-j)           for j <  i, else 0      (reset, Toeplitz, zero diagonal)

the three units compute, for every neuron independently (``x`` is the input current)::

    PSU :  H = M1 x,  S' = sigmoid(H),  V = H + Vth * R S',                  S = Heaviside(V - Vth)
    IPSU:  V = (A_I ⊙ L) x + b_I + R x,                                       S = Heaviside(V - Vth)
    RPSU:  V = M1 x + R sigmoid((A_R ⊙ L) x + b_R),                           S = Heaviside(V - Vth)

``L`` is the lower-triangular ones matrix (diagonal included), ``A_I`` / ``A_R`` one learned T×T
matrix per layer shared by all neurons, ``b_I`` / ``b_R`` a learned T-vector (one value per time
step).  The mask is multiplicative (``torch.tril``), so masked entries never get a gradient
and no output at step t depends on an input after t.  Spikes use a surrogate gradient
(arctan, ``alpha = 2`` by default, as in the authors' code).

Leak (``leak=``): the authors' code uses ``decay = scale = k`` (``M1[i,j] = k^(i-j+1)``,
``R[i,j] = -k^(i-j)``).  That is the leak of a LIF neuron ``u[t] = (1-k) u[t-1] + k x[t]`` only
when ``k = 1 - k``, i.e. ``tau = 2`` -- the value all their scripts use.  ``leak="exact"`` (the
default) uses ``decay = 1 - k, scale = k`` so that for every tau
``M1 x + Vth R S`` is exactly the pre-reset membrane of the subtract-reset LIF
``u[t] = decay (u[t-1] - Vth S[t-1]) + k x[t]`` when ``S`` are that LIF's spikes (see
:func:`lif_identity_error`); ``leak="psu_code"`` reproduces the authors' matrices and numbers.
At ``tau = 2`` both are identical.

Backends (``backend=``), all computing the same equations:

- ``"matrix"``: every causal operator is a dense T×T matrix applied with one matmul over the
  time axis.  Memory (T×T matrices kept for backward, besides IPSU / RPSU's own parameter):
  PSU one (``P``); IPSU one (everything folded into ``tril(A_I) + I - P``; two are alive for a
  moment while it is built); RPSU two (``P`` and ``tril(A_R)``).
- ``"chunked"``: the Toeplitz operators ``M1`` and ``R`` are applied in O(T·C) as leaky
  recurrences with :func:`spikescan.ops.leaky_integrate` (its chunked/parallel scan), no
  T×T at all; the learned ``tril(A)`` (general lower-triangular, no recurrence exists) stays a
  dense matmul.  Memory: PSU none, IPSU and RPSU one T×T (the masked learned matrix).
- ``"sequential"``: the reference -- explicit Python loops over time: the leak and reset as the
  recurrences ``h[t] = decay h[t-1] + x[t]``, the learned operators as per-step sums over
  ``x[0..t]`` only.  Slow; for tests.
- ``"auto"``: IPSU always ``"matrix"`` (one T×T either way, and one matmul is cheaper than a
  matmul plus a scan); PSU and RPSU ``"matrix"`` while ``T <= 128`` and ``"chunked"`` above, so
  that at large T no more than one T×T per layer is ever materialized.  Measured on the
  development CPU (1 thread, x ``[T, 16, 128]``, forward + backward, ms, matrix / chunked):
  PSU T=64 2.9/5.4, T=128 17/19, T=256 58/32, T=1024 636/254; RPSU T=64 3.2/9.5,
  T=128 24/34, T=256 85/62, T=1024 1079/512; IPSU T=64 1.5/4.0, T=1024 565/786.
  Not measured on a GPU, where dense matmuls favour ``"matrix"`` further.

A T×T float32 matrix is ``4·T²`` bytes: 4 KiB at T = 32, 256 KiB at T = 256, 4 MiB at T = 1024
-- small next to the activations ``[T, B, C]`` of any layer it acts on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import surrogate as _surrogate
from .._checks import as_param_tensor, check_choice, check_finite, check_tensor, check_time_first
from ._backend import backends, register, register_auto, resolve
from .lif.reference import LIFParameters, lif_step

__all__ = [
    "psu",
    "ipsu",
    "rpsu",
    "psu_membrane",
    "ipsu_membrane",
    "rpsu_membrane",
    "leak_coefficients",
    "causal_leak_matrix",
    "psu_membrane_from_spikes",
    "lif_identity_error",
    "atan_heaviside",
    "AUTO_MATRIX_MAX_T",
]

LEAKS = ("exact", "psu_code")
AUTO_MATRIX_MAX_T = 128
"""``backend="auto"`` of PSU / RPSU uses the dense T×T matmul up to this many steps, the O(T·C) scan above."""

_DEFAULT_SURROGATE = _surrogate.ATan(alpha=2.0)


# --------------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------------


def leak_coefficients(tau: float, leak: str = "exact") -> tuple[float, float]:
    """``(decay, scale)`` of the PSU leak-integration ``h[t] = decay h[t-1] + scale x[t]``.

    ``k = 1/tau``; ``leak="exact"``: ``(1 - k, k)`` (the LIF ``u += (x - u)/tau``);
    ``leak="psu_code"``: ``(k, k)`` (the authors' ``M1[i,j] = k^(i-j+1)``).  ``tau >= 1``.
    """
    check_choice(leak, "leak", LEAKS)
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1:
            raise ValueError(
                f"tau must be one number (the T×T leak operator is shared by all neurons), "
                f"got a tensor of shape {tuple(tau.shape)}"
            )
        tau = float(tau)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"tau must be a float, got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau < 1.0:
        raise ValueError(f"tau must be a finite number >= 1 (k = 1/tau in (0, 1]), got {tau!r}")
    k = 1.0 / tau
    return (1.0 - k, k) if leak == "exact" else (k, k)


def _check_x(x) -> Tensor:
    check_time_first(x, "x", min_dim=1)
    check_finite(x, "x")
    return x


# One function per variant computes every form, so a backend registers its form's name; the
# registry validates the choice and words the errors.
_FORMS = {"matrix": "dense T×T matmul (one T×T in memory)",
          "chunked": "O(T·C) chunked scan, no T×T",
          "sequential": "explicit loops over time (the reference)"}
for _op in ("psu", "ipsu", "rpsu"):
    for _form, _description in _FORMS.items():
        register(_op, _form, description=_description)(_form)
register_auto("psu", lambda x, **k: ("matrix",) if x.shape[0] <= AUTO_MATRIX_MAX_T else ("chunked",))
register_auto("rpsu", lambda x, **k: ("matrix",) if x.shape[0] <= AUTO_MATRIX_MAX_T else ("chunked",))
register_auto("ipsu", lambda x, **k: ("matrix",))  # one T×T either way: one matmul is cheaper
BACKENDS = ("auto", *backends("psu"))


def _check_backend(op: str, backend: str, x: Tensor) -> str:
    return resolve(op, backend, x).fn


def _check_square(weight, bias, T: int, x: Tensor, wname: str, bname: str) -> tuple[Tensor, Tensor]:
    check_tensor(weight, wname)
    check_tensor(bias, bname)
    for t, name in ((weight, wname), (bias, bname)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {t.dtype}")
        if t.device != x.device:
            what = " (a meta tensor: no data)" if t.is_meta else ""
            raise ValueError(f"{name} is on {t.device}{what} but x is on {x.device}")
    if weight.shape != (T, T):
        raise ValueError(
            f"{wname} must be the [T, T] = [{T}, {T}] time-mixing matrix for an input with "
            f"T = {T} steps, got shape {tuple(weight.shape)}"
        )
    if bias.shape != (T,):
        raise ValueError(f"{bname} must be a [T] = [{T}] vector, got shape {tuple(bias.shape)}")
    with torch.no_grad():  # one host sync for both
        finite = torch.stack([torch.isfinite(weight).all(), torch.isfinite(bias).all()]).tolist()
    for ok, t, name in zip(finite, (weight, bias), (wname, bname)):
        if not ok:
            raise ValueError(f"{name} must be finite, got {int(torch.isnan(t).sum())} NaN and "
                             f"{int(torch.isinf(t).sum())} Inf of {t.numel()} values")
    return weight.to(x.dtype), bias.to(x.dtype)


def _threshold(threshold, x: Tensor) -> Tensor:
    return as_param_tensor(threshold, "threshold", x)


def _surrogate_or_default(surrogate):
    return _DEFAULT_SURROGATE if surrogate is None else _surrogate.get(surrogate)


# --------------------------------------------------------------------------------------------
# causal time operators
# --------------------------------------------------------------------------------------------


def causal_leak_matrix(T: int, decay: float, *, dtype=torch.float32, device=None) -> Tensor:
    """The Toeplitz T×T matrix ``P[i, j] = decay^(i-j)`` for ``j <= i``, else 0 (4·T² bytes in fp32).

    Built from one length-(2T-1) vector, so only the T×T result is materialized.
    """
    powers = torch.pow(torch.tensor(float(decay), dtype=torch.float64),
                       torch.arange(T, dtype=torch.float64))  # decay^0 = 1, also for decay = 0
    w = torch.cat([powers.flip(0), powers.new_zeros(T - 1)]).to(dtype=dtype, device=device)  # w[T-1-d] = decay^d
    # row i of P is w[T-1-i : 2T-1-i]; unfold views rows starting at 0..T-1, and flip (the one
    # T×T copy) puts them in order.
    return w.unfold(0, T, 1).flip(0)


def _time_matmul(A: Tensor, x: Tensor) -> Tensor:
    """``(A x)[i] = sum_j A[i, j] x[j]`` over the time axis of ``x`` ``[T, *rest]``."""
    T = x.shape[0]
    return (A @ x.reshape(T, -1)).reshape(x.shape)


def _shift_right(y: Tensor) -> Tensor:
    """``out[0] = 0, out[t] = y[t-1]`` along dim 0."""
    return torch.cat([torch.zeros_like(y[:1]), y[:-1]], dim=0)


def _leak_sequential(x: Tensor, decay: float) -> Tensor:
    """``h[t] = decay h[t-1] + x[t]``, h[-1] = 0, as a Python loop (the reference of ``P x``)."""
    out = []
    h = torch.zeros_like(x[0])
    # unbind, not x[t]: T index ops would make the reference's backward quadratic in T
    for x_t in x.unbind(0):
        h = decay * h + x_t
        out.append(h)
    return torch.stack(out)


def _leak_scan(x: Tensor, decay: float) -> Tensor:
    """``P x`` in O(T·C) with the shared parallel scan."""
    from .leaky import leaky_integrate

    return leaky_integrate(x, decay, backend="chunked")


def _apply_P(x: Tensor, decay: float, backend: str, P: Tensor | None) -> Tensor:
    if backend == "matrix":
        return _time_matmul(P, x)
    if backend == "chunked":
        return _leak_scan(x, decay)
    return _leak_sequential(x, decay)


def _apply_R(y: Tensor, decay: float, backend: str, P: Tensor | None) -> Tensor:
    """``R y`` with ``R[i, j] = -decay^(i-j)`` (j < i): ``(R y)[t] = -decay (P y)[t-1]``."""
    return -decay * _shift_right(_apply_P(y, decay, backend, P))


def _masked_time_matmul(weight: Tensor, x: Tensor, backend: str) -> Tensor:
    """``(A ⊙ L) x``: a general lower-triangular time mixing (diagonal included)."""
    if backend == "sequential":
        # reference: step t reads only x[0..t], so causality holds by construction
        T = x.shape[0]
        flat = x.reshape(T, -1)
        rows = [weight[t, : t + 1] @ flat[: t + 1] for t in range(T)]
        return torch.stack(rows).reshape(x.shape)
    return _time_matmul(torch.tril(weight), x)


def _bias_over_time(bias: Tensor, x: Tensor) -> Tensor:
    return bias.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


# --------------------------------------------------------------------------------------------
# spikes
# --------------------------------------------------------------------------------------------


def _fire(v: Tensor, threshold: Tensor, surrogate) -> Tensor:
    from .firing import heaviside

    return heaviside(v - threshold, _surrogate_or_default(surrogate))


def atan_heaviside(u: Tensor, alpha: Tensor) -> Tensor:
    """``Heaviside(u)`` (``u >= 0`` fires) whose backward is the arctan surrogate with a *tensor* ``alpha``.

    Forward exact; backward ``(alpha/2) / (1 + (pi/2 alpha u)^2)`` for ``u`` -- the same as
    ``ATan(alpha).grad`` -- and, because it is written as the straight-through form
    ``H(u) + p(u) - p(u).detach()`` with the primitive ``p(u) = arctan(pi/2 alpha u)/pi + 1/2``,
    ``alpha`` receives the gradient ``dp/dalpha`` (the learnable-alpha surrogate of the PSU code).
    """
    check_tensor(alpha, "alpha")
    p = torch.atan(u * (alpha * (math.pi / 2.0))) / math.pi + 0.5
    return (u >= 0).to(u.dtype) + (p - p.detach())


# --------------------------------------------------------------------------------------------
# public units
# --------------------------------------------------------------------------------------------


def _fire_or_membrane(v: Tensor, threshold: Tensor, surrogate, return_membrane: bool):
    s = _fire(v, threshold, surrogate)
    return (s, v) if return_membrane else s


def psu(x: Tensor, tau: float = 2.0, threshold=1.0, *, leak: str = "exact", surrogate=None,
        backend: str = "auto", return_membrane: bool = False):
    """Parallel Spiking Unit over ``x`` ``[T, *]`` (time-first input current).

    ``H = M1 x``, ``S' = sigmoid(H)``, ``V = H + Vth R S'``, ``S = Heaviside(V - Vth)`` with
    ``M1 = scale·P``, ``R = -decay·shift(P)`` (module docstring; ``leak="psu_code"`` reproduces
    the authors' code, ``"exact"`` the LIF leak for any tau; identical at ``tau = 2``).
    ``surrogate`` defaults to ``ATan(alpha=2)``.  Returns spikes ``[T, *]`` (and ``V`` with
    ``return_membrane=True``).  Memory: ``backend="matrix"`` one T×T; ``"chunked"`` none.
    """
    v = psu_membrane(x, tau, threshold, leak=leak, backend=backend)
    return _fire_or_membrane(v, _threshold(threshold, x), surrogate, return_membrane)


def psu_membrane(x: Tensor, tau: float = 2.0, threshold=1.0, *, leak: str = "exact",
                 backend: str = "auto") -> Tensor:
    """The membrane ``V`` of :func:`psu` (no firing)."""
    _check_x(x)
    decay, scale = leak_coefficients(tau, leak)
    thr = _threshold(threshold, x)
    backend = _check_backend("psu", backend, x)
    P = causal_leak_matrix(x.shape[0], decay, dtype=x.dtype, device=x.device) if backend == "matrix" else None
    h = scale * _apply_P(x, decay, backend, P)
    return h + thr * _apply_R(torch.sigmoid(h), decay, backend, P)


def ipsu(x: Tensor, weight_i: Tensor, bias_i: Tensor, tau: float = 2.0, threshold=1.0, *,
         leak: str = "exact", surrogate=None, backend: str = "auto", return_membrane: bool = False):
    """Input-aware PSU: ``V = (A_I ⊙ L) x + b_I + R x``, ``S = Heaviside(V - Vth)``.

    ``weight_i`` is ``A_I`` ``[T, T]`` (only its lower triangle, diagonal included, is used and
    receives gradient), ``bias_i`` is ``b_I`` ``[T]`` (one value per step).  The reset term uses
    the raw input (as in the authors' code); ``tau`` and ``leak`` only set ``R``.  Memory: one
    T×T per call -- ``"matrix"`` folds ``tril(A_I) + R`` into one operator, ``"chunked"``
    applies ``R`` as a scan and materializes only ``tril(A_I)``.
    """
    v = ipsu_membrane(x, weight_i, bias_i, tau, leak=leak, backend=backend)
    return _fire_or_membrane(v, _threshold(threshold, x), surrogate, return_membrane)


def ipsu_membrane(x: Tensor, weight_i: Tensor, bias_i: Tensor, tau: float = 2.0, *,
                  leak: str = "exact", backend: str = "auto") -> Tensor:
    """The membrane ``V`` of :func:`ipsu` (no firing)."""
    _check_x(x)
    T = x.shape[0]
    weight_i, bias_i = _check_square(weight_i, bias_i, T, x, "weight_i", "bias_i")
    decay, _ = leak_coefficients(tau, leak)
    backend = _check_backend("ipsu", backend, x)
    if backend == "matrix":
        # tril(A_I) + R with R = I - P (the diagonals cancel exactly: decay^0 = 1)
        op = torch.tril(weight_i)
        op.sub_(causal_leak_matrix(T, decay, dtype=x.dtype, device=x.device))  # in place: tril's backward needs no output
        op.diagonal().add_(1.0)
        v = _time_matmul(op, x)
    else:
        v = _masked_time_matmul(weight_i, x, backend) + _apply_R(x, decay, backend, None)
    return v + _bias_over_time(bias_i, x)


def rpsu(x: Tensor, weight_r: Tensor, bias_r: Tensor, tau: float = 2.0, threshold=1.0, *,
         leak: str = "exact", surrogate=None, backend: str = "auto", return_membrane: bool = False):
    """Reset-aware PSU: ``V = M1 x + R sigmoid((A_R ⊙ L) x + b_R)``, ``S = Heaviside(V - Vth)``.

    ``weight_r`` is ``A_R`` ``[T, T]`` (lower triangle used), ``bias_r`` is ``b_R`` ``[T]``.
    The learned matrix replaces PSU's spike estimate ``sigmoid(M1 x)``; as in the authors'
    code the reset term carries no ``Vth`` factor.  Memory: ``"matrix"`` two T×T (``P`` and
    ``tril(A_R)``), ``"chunked"`` one (``tril(A_R)``).
    """
    v = rpsu_membrane(x, weight_r, bias_r, tau, leak=leak, backend=backend)
    return _fire_or_membrane(v, _threshold(threshold, x), surrogate, return_membrane)


def rpsu_membrane(x: Tensor, weight_r: Tensor, bias_r: Tensor, tau: float = 2.0, *,
                  leak: str = "exact", backend: str = "auto") -> Tensor:
    """The membrane ``V`` of :func:`rpsu` (no firing)."""
    _check_x(x)
    T = x.shape[0]
    weight_r, bias_r = _check_square(weight_r, bias_r, T, x, "weight_r", "bias_r")
    decay, scale = leak_coefficients(tau, leak)
    backend = _check_backend("rpsu", backend, x)
    P = causal_leak_matrix(T, decay, dtype=x.dtype, device=x.device) if backend == "matrix" else None
    est = torch.sigmoid(_masked_time_matmul(weight_r, x, backend) + _bias_over_time(bias_r, x))
    return scale * _apply_P(x, decay, backend, P) + _apply_R(est, decay, backend, P)


# --------------------------------------------------------------------------------------------
# the identity tying M1 and R to the LIF neuron
# --------------------------------------------------------------------------------------------


def psu_membrane_from_spikes(x: Tensor, spikes: Tensor, tau: float = 2.0, threshold=1.0, *,
                             leak: str = "exact", backend: str = "auto") -> Tensor:
    """``M1 x + Vth R S`` for given spikes ``S`` (same shape as ``x``).

    With the spikes of the subtract-reset LIF ``u[t] = decay (u[t-1] - Vth S[t-1]) + scale x[t]``
    (``S[t] = u[t] >= Vth``) this is exactly that LIF's pre-reset membrane ``u``.
    """
    _check_x(x)
    check_tensor(spikes, "spikes")
    if spikes.shape != x.shape:
        raise ValueError(f"spikes must have the shape of x {tuple(x.shape)}, got {tuple(spikes.shape)}")
    decay, scale = leak_coefficients(tau, leak)
    thr = _threshold(threshold, x)
    backend = _check_backend("psu", backend, x)
    P = causal_leak_matrix(x.shape[0], decay, dtype=x.dtype, device=x.device) if backend == "matrix" else None
    return scale * _apply_P(x, decay, backend, P) + thr * _apply_R(spikes.to(x.dtype), decay, backend, P)


def _lif_subtract_sequential(x: Tensor, decay: float, scale: float, threshold) -> tuple[Tensor, Tensor]:
    """Subtract-reset LIF reference: ``u[t] = decay (u[t-1] - Vth S[t-1]) + scale x[t]``, ``S[t] = u[t] >= Vth``.

    Returns ``(spikes, pre-reset membrane u)``, both ``[T, *]``.
    """
    p = LIFParameters(decay, threshold, 0.0, "subtract")
    u_post = torch.zeros_like(x[0])
    spikes, membrane = [], []
    for x_t in x.unbind(0):
        s, u, u_post = lif_step(scale * x_t, u_post, p)
        spikes.append(s)
        membrane.append(u)
    return torch.stack(spikes), torch.stack(membrane)


def lif_identity_error(x: Tensor, tau: float = 2.0, threshold=1.0, *, leak: str = "exact",
                       backend: str = "auto") -> float:
    """Max abs difference between ``M1 x + Vth R S`` and a subtract-reset LIF's pre-reset membrane.

    Runs the sequential LIF (same ``decay, scale`` as the PSU leak) to get its spikes ``S`` and
    membrane, then evaluates :func:`psu_membrane_from_spikes` with those spikes.  A result at
    rounding level shows that ``M1`` and ``R`` are right.
    """
    _check_x(x)
    decay, scale = leak_coefficients(tau, leak)
    thr = _threshold(threshold, x)
    with torch.no_grad():
        s, u = _lif_subtract_sequential(x, decay, scale, thr)
        v = psu_membrane_from_spikes(x, s, tau, thr, leak=leak, backend=backend)
        return float((v - u).abs().max())
