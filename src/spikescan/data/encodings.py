"""Encode static intensities (pixels in ``[0, 1]``) as spike trains, time-first.

Every encoder takes ``x`` of any shape with values in ``[0, 1]`` and returns a float32 tensor
``[num_steps, *x.shape]`` on ``x``'s device whose entries are 0 or 1.

- :func:`latency_encode`: one spike per value, bright = early, linear in intensity.
- :func:`rate_encode`: independent Bernoulli spikes at every step (rate coding).
- :func:`ttfs_encode`: the time-to-first-spike code of FastSNN (supplementary D, eq. 17), the
  first spike time of a LIF neuron driven by a constant current equal to the pixel value.
- :func:`ttfs_code_encode`: eq. 17 as the FastSNN authors' code computes it (on raw 0-255
  values, times read as seconds): the code their published accuracies were trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import check_positive

__all__ = ["latency_encode", "rate_encode", "ttfs_code_encode", "ttfs_encode"]


def _check_intensities(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool:
        x = x.to(torch.float32)
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        bad = x[~((x >= 0) & (x <= 1))]
        raise ValueError(
            f"x must hold intensities in [0, 1] (normalise images first, e.g. x / 255), "
            f"got {bad.numel()} values outside it, e.g. {float(bad.flatten()[0])!r}"
        )
    return x


def _check_num_steps(num_steps) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    return int(num_steps)


def _one_spike(step: torch.Tensor, fires: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``[num_steps, *step.shape]`` with a 1 at ``step`` where ``fires`` (``step`` in range there)."""
    out = torch.zeros((num_steps, *step.shape), dtype=torch.float32, device=step.device)
    idx = torch.where(fires, step, torch.zeros_like(step)).unsqueeze(0)
    out.scatter_(0, idx, fires.to(torch.float32).unsqueeze(0))
    return out


def latency_encode(x, num_steps: int, *, t_min: int = 0, t_max: int | None = None,
                   threshold: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Linear latency code: one spike per value ``> threshold``, bright = early.

    A value ``x`` fires once, at step ``round(t_min + (1 - x) * (t_max - t_min))`` (``t_max``
    defaults to ``num_steps - 1``), so ``x = 1`` fires at ``t_min`` and ``x -> 0`` near
    ``t_max``.  ``round`` is Python's (ties to even; computed in float64).  Values
    ``<= threshold`` never fire.  Deterministic: ``generator`` is accepted only so that every
    encoder has the same signature, and is unused.

    Returns a float32 tensor ``[num_steps, *x.shape]``.
    """
    del generator
    x = _check_intensities(x)
    num_steps = _check_num_steps(num_steps)
    if t_max is None:
        t_max = num_steps - 1
    if not (0 <= t_min <= t_max <= num_steps - 1):
        raise ValueError(
            f"need 0 <= t_min <= t_max <= num_steps - 1 = {num_steps - 1}, got t_min={t_min}, t_max={t_max}"
        )
    if not (0.0 <= threshold < 1.0):
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    xd = x.to(torch.float64)
    step = torch.round(t_min + (1.0 - xd) * (t_max - t_min)).to(torch.long)
    return _one_spike(step, xd > threshold, num_steps)


def rate_encode(x, num_steps: int, *, max_prob: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Rate (Bernoulli) code: ``s[t] ~ Bernoulli(max_prob * x)`` independently at every step.

    ``generator`` (a ``torch.Generator`` on ``x``'s device) makes the draw reproducible.
    Returns a float32 tensor ``[num_steps, *x.shape]``.
    """
    x = _check_intensities(x)
    num_steps = _check_num_steps(num_steps)
    if not (0.0 <= max_prob <= 1.0):
        raise ValueError(f"max_prob must lie in [0, 1], got {max_prob!r}")
    p = x.to(torch.float32) * max_prob
    u = torch.rand((num_steps, *x.shape), generator=generator, device=x.device, dtype=torch.float32)
    return (u < p).to(torch.float32)


def ttfs_encode(x, num_steps: int, *, dt: float = 1e-3, tau_eff: float = 20e-3,
                theta: float = 0.2, rounding: str = "floor") -> torch.Tensor:
    """Time-to-first-spike code of FastSNN (Taylor et al., supplementary D, eq. 17).

    A pixel ``p`` fires once at time ``t = tau_eff * log(p / (p - theta))`` if ``p > theta``
    (the first threshold crossing of a leaky integrator with time constant ``tau_eff`` and
    threshold ``theta`` under a constant current ``p``) and never otherwise; the spike lands on
    step ``floor(t / dt)`` (``rounding="nearest"``: ``round(t / dt)``) and is dropped if that
    step is ``>= num_steps``.  The paper uses
    ``tau_eff = 20 ms``, ``theta = 0.2``, ``dt = 1 ms`` and ``T = 784`` for Fashion-MNIST; then
    ``p = 1`` fires at step 4 (``t = 4.46 ms``) and ``p = 0.25`` at step 32.

    Returns a float32 tensor ``[num_steps, *x.shape]``.
    """
    x = _check_intensities(x)
    num_steps = _check_num_steps(num_steps)
    check_positive(dt, "dt")
    check_positive(tau_eff, "tau_eff")
    if not (0.0 <= theta < 1.0):
        raise ValueError(f"theta must lie in [0, 1), got {theta!r}")
    if rounding not in ("floor", "nearest"):
        raise ValueError(f"rounding must be 'floor' or 'nearest', got {rounding!r}")
    p = x.to(torch.float64)
    fires = p > theta
    safe = torch.where(fires, p, torch.ones_like(p))  # avoid log of <= 0 where nothing fires
    t = tau_eff * torch.log(safe / (safe - theta))
    step = torch.floor(t / dt) if rounding == "floor" else torch.round(t / dt)
    fires = fires & (step < num_steps)
    step = torch.where(fires, step, torch.zeros_like(step)).to(torch.long)
    return _one_spike(step, fires, num_steps)


#: the time steps the FastSNN authors' code gives Fashion-MNIST (``t_len`` of its data set)
TTFS_CODE_NUM_STEPS = 100


def ttfs_code_encode(x, num_steps: int, *, dt: float = 1e-3) -> torch.Tensor:
    """Eq. 17 as the FastSNN authors' code computes it (webstorms/FastSNN, ``datasets.py``).

    Their encoder takes the raw 0-255 pixel values ``v`` (``torchvision``'s ``.data``, not the
    normalised images), computes ``20 log(v / (v - 0.2))`` (``tau_eff = 20``, ``theta = 0.2``,
    meant as milliseconds) and then reads it as seconds, ``round(t * 1000 / dt_ms)``, on
    ``T = 100`` steps (:data:`TTFS_CODE_NUM_STEPS`).  A pixel ``v`` therefore fires at step
    ``round(20000 log(v / (v - 0.2)))``, about ``4000 / v``: ``v = 255`` at step 16, ``v = 100``
    at 40, ``v = 41`` at 98, and ``v <= 40`` not within 100 steps; the code spreads an image over
    steps 16-98 where :func:`ttfs_encode` with the paper's values puts every pixel brighter than
    0.8 within steps 4-5.  Here: ``ttfs_encode(x, tau_eff=20 s, theta=0.2 / 255,
    rounding="nearest")`` on ``x = v / 255``, the same times.  The paper's accuracies (FastSNN
    81.23 %, LIF 85.37 % on F-MNIST) were trained on this code.
    """
    return ttfs_encode(x, num_steps, dt=dt, tau_eff=20.0, theta=0.2 / 255.0, rounding="nearest")
