"""The reference-free views of ``_kernels._numba_lowlevel`` (``row_view``, ``row_slice_view``):
the same elements as numpy's ``a[i]`` / ``a[i, lo:hi]`` / ``a[lo:hi]`` for contiguous and
strided parents, writes through them land in the parent, and they take no reference (the
parent's reference count is unchanged after a kernel made thousands of them)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("numba", reason="the views are numba intrinsics")

from numba import njit  # noqa: E402

from spikescan.ops._kernels._numba_lowlevel import row_slice_view, row_view  # noqa: E402


@njit(cache=False)
def _rows(a, i, lo, hi, b, blo, bhi):
    r = row_view(a, i)
    s = row_slice_view(a, i, lo, hi)
    u = row_slice_view(b, None, blo, bhi)
    return r.copy(), s.copy(), u.copy()


@njit(cache=False)
def _scale_rows(a, f):
    for i in range(a.shape[0]):
        r = row_view(a, i)
        for j in range(r.shape[0]):
            r[j] *= f


@njit(cache=False)
def _many_views(a, n):
    acc = 0.0
    for _ in range(n):
        for i in range(a.shape[0]):
            acc += row_slice_view(a, i, 1, 3)[0]
    return acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("strided", [False, True])
def test_views_equal_numpy_slices(dtype, strided):
    a = np.arange(7 * 9, dtype=dtype).reshape(7, 9)
    b = np.arange(20, dtype=dtype)
    if strided:  # non-contiguous parents: a column slice, a step
        a, b = a[1:, 2:], b[::3]
    for i, lo, hi in ((0, 0, 0), (2, 1, 4), (a.shape[0] - 1, 0, a.shape[1])):
        r, s, u = _rows(a, i, lo, hi, b, 1, b.shape[0] - 1)
        assert np.array_equal(r, a[i]) and r.dtype == a.dtype
        assert np.array_equal(s, a[i, lo:hi])
        assert np.array_equal(u, b[1:-1])


@pytest.mark.parametrize("strided", [False, True])
def test_writes_reach_the_parent_and_no_reference_is_taken(strided):
    base = np.arange(6 * 8, dtype=np.float64).reshape(6, 8)
    a = base[:, 1:6] if strided else base
    expect = a * 2.0
    refs = sys.getrefcount(base)
    _scale_rows(a, 2.0)
    assert np.array_equal(a, expect)
    assert _many_views(a, 1000) == 1000 * float(a[:, 1].sum())
    assert sys.getrefcount(base) == refs


def test_bad_arguments_do_not_compile():
    from numba.core.errors import TypingError

    @njit(cache=False)
    def one_d_row(b):
        return row_view(b, 0)

    with pytest.raises(TypingError):
        one_d_row(np.zeros(3))
