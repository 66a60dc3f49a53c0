"""Argument validation shared by every public entry point.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument and
what was expected, so that bad input never turns into a silent wrong answer.  The NaN/Inf
scan of large tensors costs a full pass over memory, so it runs only when asked for, either
per call (``check=True``) or globally (:func:`debug_mode`, or ``SPIKESCAN_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_DEBUG = os.environ.get("SPIKESCAN_DEBUG", "0") not in ("", "0", "false", "False")


def debug_enabled() -> bool:
    """Whether expensive checks (NaN/Inf scans of inputs) are on globally."""
    return _DEBUG


def set_debug(enabled: bool) -> None:
    """Turn the expensive input checks on or off for the whole process."""
    global _DEBUG
    _DEBUG = bool(enabled)


@contextlib.contextmanager
def debug_mode(enabled: bool = True) -> Iterator[None]:
    """Context manager that turns the expensive input checks on (or off) inside its block."""
    global _DEBUG
    previous = _DEBUG
    _DEBUG = bool(enabled)
    try:
        yield
    finally:
        _DEBUG = previous


def check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16/bfloat16/float32/float64), "
            f"got {x.dtype}"
        )


def check_time_first(x, name: str = "x", min_dim: int = 1) -> torch.Tensor:
    """``x`` is a floating tensor laid out ``[T, *rest]`` with ``T >= 1`` and at least ``min_dim`` dims."""
    check_tensor(x, name)
    check_float(x, name)
    if x.dim() < min_dim:
        layout = "[T]" if min_dim == 1 else "[T, B" + ", ..." * (min_dim > 2) + (", F]" if min_dim > 2 else "]")
        raise ValueError(
            f"{name} must be time-first with at least {min_dim} dims {layout}, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one time step (T >= 1), got shape {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, name: str, check: bool | None = None) -> None:
    """Raise if ``x`` holds NaN or Inf; runs only when ``check`` is true or debug mode is on."""
    if check is None:
        check = _DEBUG
    if check and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b) -> None:
    if isinstance(b, torch.Tensor) and b.device != a.device and b.dim() > 0:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; move both to one device")


def as_param_tensor(value, name: str, like: torch.Tensor, *, low=None, high=None,
                    low_inclusive: bool = True, high_inclusive: bool = True) -> torch.Tensor:
    """Turn a float or tensor parameter into a tensor broadcastable to ``like.shape[1:]``.

    Checks: number or floating tensor, same device as ``like``, broadcastable to the
    per-step shape, finite, and inside ``[low, high]`` (bounds optional, inclusivity
    configurable).  The result keeps its autograd history.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a floating tensor, got bool")
    if isinstance(value, (int, float)):
        t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    elif isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
        if value.dim() > 0 and value.device != like.device:
            raise ValueError(f"{name} is on {value.device} but the input is on {like.device}")
        t = value if value.dim() > 0 else value.to(like.device)
        try:
            fits = torch.broadcast_shapes(t.shape, like.shape[1:]) == like.shape[1:]
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} is not broadcastable to the per-step shape "
                f"{tuple(like.shape[1:])} of the input (it may not enlarge it)"
            )
        if t.dim() > like.dim() - 1:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} has more dims than the per-step shape "
                f"{tuple(like.shape[1:])}"
            )
    else:
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")
    with torch.no_grad():
        # One reduction and one host sync for all three checks (each bool() would stall a GPU).
        finite = torch.isfinite(t)
        bad = ~finite
        if low is not None:
            bad = bad | ((t < low) if low_inclusive else (t <= low))
        if high is not None:
            bad = bad | ((t > high) if high_inclusive else (t >= high))
        if bool(bad.any()):
            if not bool(finite.all()):
                raise ValueError(f"{name} must be finite, got non-finite values")
            lb = "[" if low_inclusive else "("
            hb = "]" if high_inclusive else ")"
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ValueError(
                f"{name} must lie in {lb}{lo}, {hi}{hb}, got values in "
                f"[{float(t.min()):.6g}, {float(t.max()):.6g}]"
            )
    return t


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
