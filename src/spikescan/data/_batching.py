"""A batch of event samples in CSR form over the rows ``r = t * B + b`` of ``[T, B, C]``, built by
one counting sort (numba): ``O(events + T * B)`` with no comparison sort and no per-sample Python."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def gather_events(offsets, steps, channels, idx, T, crow, out_channels, src):
    """Events of samples ``idx`` (sample ``b`` of the batch is ``idx[b]``) sorted by row
    ``steps[e] * B + b``, stably: within a row they keep the order in which the sample stores
    them, as a stable argsort of the rows would.  Writes ``crow`` (``[T * B + 1]``, zeros on
    entry), ``out_channels`` and ``src`` (the index of each output event in the stored arrays,
    for the values)."""
    B = idx.shape[0]
    for b in range(B):
        i = idx[b]
        for e in range(offsets[i], offsets[i + 1]):
            crow[steps[e] * B + b + 1] += 1
    for r in range(T * B):
        crow[r + 1] += crow[r]
    cursor = crow[:-1].copy()
    for b in range(B):
        i = idx[b]
        for e in range(offsets[i], offsets[i + 1]):
            r = steps[e] * B + b
            p = cursor[r]
            cursor[r] = p + 1
            out_channels[p] = channels[e]
            src[p] = e
