"""Argument validation shared by every public entry point.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument and
what was expected, so that bad input never turns into a silent wrong answer.  The NaN/Inf
scan of large tensors costs a full pass over memory, so it runs only when asked for, either
per call (``check=True``) or globally (:func:`debug_mode`, or ``SPIKESCAN_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import operator
import os
from typing import Iterator

import torch

_DEBUG = os.environ.get("SPIKESCAN_DEBUG", "0") not in ("", "0", "false", "False")


# Set while a module runs the ops on inputs it has validated itself (``caller_checked``): the
# ops then skip their own checks of x and of the values of tensor parameters.
_CALLER_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("spikescan_caller_checked", default=False)


@contextlib.contextmanager
def caller_checked() -> Iterator[None]:
    """Inside the block the ops trust their inputs: the caller (an ``nn`` module) validated ``x``
    and its parameters once, so ``check_time_first``, ``check_finite`` and the value checks of
    tensor parameters are skipped (shape checks and Python-number checks, which cost no device
    sync, still run)."""
    token = _CALLER_CHECKED.set(True)
    try:
        yield
    finally:
        _CALLER_CHECKED.reset(token)


def _trusted() -> bool:
    # is_compiling first: under torch.compile the context variable is never read (and the value
    # checks are skipped anyway)
    return not torch.compiler.is_compiling() and _CALLER_CHECKED.get()


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


def check_has_data(x: torch.Tensor, name: str) -> None:
    """Reject a meta tensor: it has a shape but no values, and every op here computes values."""
    if x.is_meta:
        raise ValueError(
            f"{name} is a meta tensor (no data): spikescan computes values, so it needs a tensor on a "
            f"device that holds them (cpu or cuda); create it there, or materialise it first "
            f"(Tensor.to_empty / Module.to_empty, then fill it)"
        )


def check_positive_int(value, name: str) -> int:
    """``value`` as an int ``>= 1`` (a size: features, time steps); bools and floats are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got bool {value!r}")
    try:
        n = operator.index(value)  # int, numpy integers, integer 0-dim tensors; not 2.5 or 8.0
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {n!r}")
    return n


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops and modules compute in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def format_value(value) -> str:
    """A float (or 0-dim tensor) with every digit its dtype holds: ``1.0000001`` stays visible.

    float32/float16 tensors print their shortest round-trip repr in their own precision (a float32
    ``1.0000001`` is ``1.0000001``, not ``1.00000011920929``); everything else the float64 repr.
    """
    if isinstance(value, torch.Tensor):
        dtype = value.dtype
        v = float(value.detach().cpu())
        if dtype in (torch.float32, torch.float16) and math.isfinite(v):
            import numpy as np

            return str((np.float32 if dtype == torch.float32 else np.float16)(v))
        return repr(v)
    return repr(float(value))


def check_float(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float16/bfloat16/float32/float64), "
            f"got {x.dtype}"
        )


def check_time_first(x, name: str = "x", min_dim: int = 1, *, always: bool = False) -> torch.Tensor:
    """``x`` is a floating tensor laid out ``[T, *rest]`` with ``T >= 1`` and at least ``min_dim`` dims
    (skipped inside :func:`caller_checked` unless ``always``)."""
    if not always and _trusted():
        return x
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


def check_finite(x: torch.Tensor, name: str, check: bool | None = None, *, always: bool = False) -> None:
    """Raise if ``x`` is a meta tensor (always: free) or holds NaN or Inf (only when ``check`` is
    true or debug mode is on: a full pass over ``x``); skipped inside :func:`caller_checked`
    unless ``always``."""
    if not always and _trusted():
        return
    check_has_data(x, name)
    if check is None:
        check = _DEBUG
    if check and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b) -> None:
    if isinstance(b, torch.Tensor) and b.device != a.device and b.dim() > 0:
        raise ValueError(f"{name_b} is on {b.device} but {name_a} is on {a.device}; move both to one device")


def _bounds_text(low, high, low_inclusive: bool, high_inclusive: bool) -> str:
    lb = "[" if low_inclusive else "("
    hb = "]" if high_inclusive else ")"
    lo = "-inf" if low is None else format_value(low)
    hi = "inf" if high is None else format_value(high)
    return f"{lb}{lo}, {hi}{hb}"


def _bad_mask(t: torch.Tensor, low, high, low_inclusive: bool, high_inclusive: bool) -> torch.Tensor:
    """Where ``t`` is non-finite or outside the bounds (one elementwise pass, no sync)."""
    bad = ~torch.isfinite(t)
    if low is not None:
        bad = bad | ((t < low) if low_inclusive else (t <= low))
    if high is not None:
        bad = bad | ((t > high) if high_inclusive else (t >= high))
    return bad


def _bad_number(v: float, low, high, low_inclusive: bool, high_inclusive: bool) -> bool:
    """:func:`_bad_mask` for one Python float."""
    if not math.isfinite(v):
        return True
    if low is not None and (v < low if low_inclusive else v <= low):
        return True
    return high is not None and (v > high if high_inclusive else v >= high)


def _range_error(name: str, t: torch.Tensor, low, high, low_inclusive: bool, high_inclusive: bool,
                 given=None) -> ValueError:
    """The message for a bad parameter ``t``: the offending extremes with all their digits.

    ``given``: the Python number ``t`` was made from, when only its rounding to ``t.dtype`` is bad.
    """
    rounded = "" if given is None else f" ({given!r} rounds to {format_value(t)} in {t.dtype})"
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        if t.dim() == 0:
            what = format_value(t)
        else:
            what = f"{int(torch.isnan(t).sum())} NaN and {int(torch.isinf(t).sum())} Inf of {t.numel()} values"
        return ValueError(f"{name} must be finite, got {what}{rounded}")
    parts = []
    if low is not None:
        below = (t < low) if low_inclusive else (t <= low)
        if bool(below.any()):
            parts.append(f"min {format_value(t[below].min())}")
    if high is not None:
        above = (t > high) if high_inclusive else (t >= high)
        if bool(above.any()):
            parts.append(f"max {format_value(t[above].max())}")
    count = ""
    if t.dim() > 0:
        n_bad = int(_bad_mask(t, low, high, low_inclusive, high_inclusive).sum())
        count = f" ({n_bad} of {t.numel()} values outside)"
    return ValueError(f"{name} must lie in {_bounds_text(low, high, low_inclusive, high_inclusive)}, got "
                      f"{' and '.join(parts)}{count}{rounded}")


def as_param_tensor(value, name: str, like: torch.Tensor, *, low=None, high=None,
                    low_inclusive: bool = True, high_inclusive: bool = True,
                    dtype: torch.dtype | None = None, always: bool = False) -> torch.Tensor:
    """Turn a float or tensor parameter into a tensor broadcastable to ``like.shape[1:]``.

    Checks: number or floating tensor holding data (not meta), same device as ``like``,
    broadcastable to the per-step shape, finite, and inside ``[low, high]`` (bounds optional,
    inclusivity configurable).  A Python number becomes a 0-dim tensor of ``dtype`` (default
    ``like.dtype``), checked on the host before it moves to ``like``'s device (no device sync),
    both as given and as rounded to ``dtype``.  A tensor is checked by one reduction and one host
    sync; the result keeps its autograd history.  Errors print the offending values with every
    digit (``decay must lie in [0.0, 1.0], got max 1.0000001``).
    """
    check_has_data(like, "the input")
    bounds = (low, high, low_inclusive, high_inclusive)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a floating tensor, got bool")
    if isinstance(value, (int, float)):
        # Checked in Python on the host: no device sync, and cheap on the hot path.
        v = float(value)
        t = torch.tensor(v, dtype=like.dtype if dtype is None else dtype)
        if _bad_number(v, *bounds):
            raise _range_error(name, torch.tensor(v, dtype=torch.float64), *bounds)
        if not torch.compiler.is_compiling() and _bad_number(t.item(), *bounds):
            # e.g. threshold 1e-50 is 0 in float32, 1e5 is inf in float16
            raise _range_error(name, t, *bounds, given=value)
        return t.to(like.device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}")
    if value.is_meta:
        raise ValueError(f"{name} is on meta (a meta tensor: no data) but the input is on {like.device}; "
                         f"give {name} values on {like.device}")
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
    if torch.compiler.is_compiling() or (_trusted() and not always):  # values: eager mode, once per call
        return t
    with torch.no_grad():
        # One reduction and one host sync for all three checks (each bool() would stall a GPU).
        if bool(_bad_mask(t, *bounds).any()):
            raise _range_error(name, t.detach(), *bounds)
    return t


def check_module_tensors(module: torch.nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """A module's floating parameters and buffers hold data, sit on ``x``'s device and are finite.

    Devices and meta are attributes (free); finiteness is one ``isfinite().all()`` flag per
    tensor, stacked, and ONE host sync for all of them -- per forward, not per parameter.  The
    message names the module, the parameter and both devices.
    """
    owner = type(module).__name__
    tensors = [(n, t) for n, t in (*module.named_parameters(), *module.named_buffers())
               if t.is_floating_point()]
    for pname, t in tensors:
        if t.is_meta:
            raise ValueError(
                f"{owner}'s parameters are on meta but {name} is on {x.device} ({pname} is a meta tensor: "
                f"no data); materialise the module first, e.g. module.to_empty(device={str(x.device)!r}) "
                f"then load_state_dict(...) or reset its parameters"
            )
        if t.device != x.device:
            raise ValueError(
                f"{owner}'s parameters are on {t.device} but {name} is on {x.device} ({pname}); move "
                f"one to the other, e.g. module.to({name}.device)"
            )
    if not tensors or torch.compiler.is_compiling():  # values are checked in eager mode only
        return
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(t).all() for _, t in tensors])
        if bool(flags.all()):
            return
        for (pname, t), ok in zip(tensors, flags.tolist()):
            if not ok:
                n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
                raise ValueError(f"{owner} parameter {pname} must be finite, got {n_nan} NaN and {n_inf} Inf "
                                 f"of {t.numel()} values")


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


# --- constructor arguments shared by the torch and JAX modules ------------------------------

class _Default(float):
    """A float default that a constructor can tell from the same number passed explicitly
    (``tau_mem is TAU_MEM``), so that ``beta=`` together with an explicit time constant is an
    error while the plain default stays a plain-looking ``0.02`` in signatures and reprs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


class _DefaultNone:
    """``None`` as a constructor default (no synaptic stage) that :func:`resolve_decay` can tell
    from an explicit ``tau_syn=None``; :func:`resolve_decay` turns it into ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "None"

    def __bool__(self) -> bool:
        return False


_DEFAULT_NONE = _DefaultNone()


def default(value: float | None) -> float | None:
    """A constructor default that :func:`resolve_decay` recognises as "not given"."""
    return _DEFAULT_NONE if value is None else _Default(value)


def is_default(value) -> bool:
    return isinstance(value, (_Default, _DefaultNone))


def check_beta(beta, name: str = "beta") -> float:
    """A per-step decay given directly (snnTorch's ``beta`` / ``alpha``): a real number strictly in (0, 1)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and 0.0 < beta < 1.0):
        raise ValueError(f"{name} (the decay per step) must be a number in (0, 1), exclusive, got {beta!r}; "
                         f"a decay of 0 or 1 has no time constant (for no synaptic stage pass tau_syn=None)")
    return float(beta)


def resolve_decay(tau, beta, tau_name: str, beta_name: str):
    """``(tau, beta)`` of one stage from a constructor's arguments: ``beta=None`` keeps ``tau``
    (its default or the value given); a ``beta`` replaces a defaulted ``tau`` (a defaulted
    ``None``, no stage, included: ``beta`` then creates the stage), and is a ``ValueError``
    naming both when ``tau`` was also given explicitly (``None`` included)."""
    if beta is None:
        return (None if tau is _DEFAULT_NONE else tau), None
    if not is_default(tau):
        raise ValueError(f"give either {beta_name}= (the decay per step) or {tau_name}= (a time constant with dt), "
                         f"not both: got {beta_name}={beta!r} and {tau_name}={tau!r}")
    beta = check_beta(beta, beta_name)
    # the time constant is ignored where beta is given (Decay derives it); a defaulted None
    # (no stage) becomes a number so that the stage exists
    return (1.0 if tau is _DEFAULT_NONE else tau), beta


def check_input_scale(input_scale):
    """A neuron's factor on the current entering its membrane: ``"one_minus_decay"`` (``1 - b``)
    or a finite number (returned as a float)."""
    if input_scale == "one_minus_decay":
        return input_scale
    if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)) or not math.isfinite(input_scale):
        raise ValueError(f"input_scale must be 'one_minus_decay' or a finite number, got {input_scale!r}")
    return float(input_scale)


def input_factor(input_scale, b):
    """The factor on the current entering the membrane: ``1 - b`` (``"one_minus_decay"``) or the
    number ``input_scale`` (``b`` a float, a torch tensor or a JAX array)."""
    return 1.0 - b if input_scale == "one_minus_decay" else input_scale
