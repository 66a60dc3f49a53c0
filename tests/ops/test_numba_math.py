"""The vectorizable exp of the CPU kernels (``ops/_kernels/_numba_math.py``) against numpy."""

import numpy as np
import pytest

from spikescan.ops._kernels._numba_math import exp_consts, exp_row


def test_fast_exp_float32_accuracy_and_clamping():
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), np.random.default_rng(0).normal(0.0, 3.0, 100_000)])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    exp_row(x, np.float32(1.0), out, exp_consts("float32"), True)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(out.astype(np.float64) - ref) / ref
    assert rel.max() <= 4e-7, rel.max()  # a few ulp of float32 (2**-23 = 1.2e-7)
    # arguments outside [-87, 88] are clamped: the result stays a finite, normal float32
    wide = np.array([-1000.0, -100.0, 100.0, 1000.0], np.float32)
    got = np.empty_like(wide)
    exp_row(wide, np.float32(1.0), got, exp_consts("float32"), True)
    assert np.isfinite(got).all() and (got > np.finfo(np.float32).tiny).all()
    assert got[0] == got[1] and got[2] == got[3]
    # sign = -1 computes exp(-x)
    neg = np.empty_like(x[:1000])
    exp_row(x[:1000], np.float32(-1.0), neg, exp_consts("float32"), True)
    assert np.allclose(neg, np.exp(-x[:1000].astype(np.float64)), rtol=4e-7, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_flavour_is_math_exp(dtype):
    x = np.linspace(-20.0, 20.0, 101).astype(dtype)
    out = np.empty_like(x)
    exp_row(x, x.dtype.type(1.0), out, exp_consts(dtype), False)
    ref = np.exp(x.astype(np.float64))
    assert np.abs(out / ref - 1.0).max() <= np.finfo(dtype).eps  # correctly rounded (within an ulp)
