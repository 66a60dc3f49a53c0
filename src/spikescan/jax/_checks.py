"""Argument validation of the JAX side, at the public boundary only.

Shapes and dtypes are static under ``jax.jit`` and always checked.  Values (finite, in range)
can be checked only on concrete arrays; inside ``jit``/``grad`` the arguments are tracers and
their value checks are skipped (the same function called outside ``jit`` checks them).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import surrogate as _surrogate

HALF = (jnp.float16, jnp.bfloat16)


def is_concrete(a) -> bool:
    """Whether ``a`` holds values now (not a tracer of ``jit``/``grad``/``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def compute_dtype(dtype):
    """float32 for the half types, else ``dtype`` (the torch side's rule)."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype) in (jnp.dtype(h) for h in HALF) else jnp.dtype(dtype)


def as_array(x, name: str):
    """``x`` as a floating JAX array; a clear error for anything else (torch tensors included)."""
    if type(x).__module__.startswith("torch"):
        raise TypeError(f"{name} must be a JAX or NumPy array, got a torch tensor; pass x.numpy() "
                        f"(spikescan.ops has the torch functions)")
    if isinstance(x, (bool, int, float, complex, str, type(None))) or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be a floating JAX or NumPy array [T, ...], got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    return jnp.asarray(x)


def time_first(x, name: str = "x"):
    """``x`` as a floating array ``[T, ...]`` with ``T >= 1``."""
    x = as_array(x, name)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be time-first [T, ...] with T >= 1, got shape {tuple(x.shape)}")
    return x


def check_finite(a, name: str) -> None:
    if is_concrete(a) and a.size and not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError(f"{name} must be finite, got NaN or Inf")


def param(value, name: str, x, *, low=None, high=None, low_inclusive: bool = True):
    """A parameter in ``x``'s compute dtype that broadcasts to ``x.shape[1:]`` without enlarging it.

    Python numbers are converted in the compute dtype directly, as on the torch side.  Values
    are checked (finite, within ``[low, high]``) when concrete.
    """
    dtype = compute_dtype(x.dtype)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a floating array, got bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        arr = jnp.asarray(value, dtype=dtype)
    else:
        if type(value).__module__.startswith("torch"):
            raise TypeError(f"{name} must be a float or a JAX/NumPy array, got a torch tensor")
        if not hasattr(value, "dtype") or not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(f"{name} must be a float or a floating array, got {type(value).__name__}"
                            + (f" of dtype {value.dtype}" if hasattr(value, "dtype") else ""))
        arr = jnp.asarray(value).astype(dtype)
    rest = tuple(x.shape[1:])
    try:
        shape = np.broadcast_shapes(arr.shape, rest)
    except ValueError:
        shape = None
    if shape != rest:
        raise ValueError(f"{name} of shape {tuple(arr.shape)} must broadcast to the per-step shape {rest} "
                         f"of the input (without enlarging it)")
    if is_concrete(arr):
        a = np.asarray(arr, dtype=np.float64)
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite, got NaN or Inf")
        if low is not None and a.size and (np.any(a < low) if low_inclusive else np.any(a <= low)):
            raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got min {a.min()!r}")
        if high is not None and a.size and np.any(a > high):
            raise ValueError(f"{name} must be <= {high}, got max {a.max()!r}")
    return arr


def choice(value, name: str, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def surrogate_spec(surrogate) -> tuple[str, float]:
    """``(kind, param)`` of a built-in surrogate given as :func:`spikescan.surrogate.get` accepts it."""
    sg = _surrogate.get(surrogate)
    kind = getattr(sg, "kind", "")
    if kind not in ("fast_sigmoid", "atan", "sigmoid", "triangle"):
        raise ValueError(f"surrogate: the JAX side implements the built-in surrogates (fast_sigmoid, atan, "
                         f"sigmoid, triangle), got {type(sg).__name__} (kind {kind!r})")
    return kind, float(sg.param)


# beta= / alpha= (snnTorch's decays per step) and input_scale: the torch side's rules, one copy
from .._checks import check_beta, check_input_scale, default, is_default, resolve_decay  # noqa: E402,F401
