"""Event-driven dense layer on the CPU (numba): ``W s[t] + b`` at a cost proportional to the spikes.

The input is a batch of events in CSR form over the rows ``r = t * B + b`` of a time-first
``[T, B, C]`` tensor (:class:`spikescan.ops.events.SpikeEvents`): the events of row ``r`` are
``channels[crow[r]:crow[r+1]]`` with values ``values[...]`` (1 when there are none).  ``wt`` is
the weight transposed, ``[C, O]`` and C-contiguous, so an event adds one contiguous row of it::

    out[r, :] = bias + sum_{e in row r} values[e] * wt[channels[e], :]        (forward)
    gwt[c, :] = sum_{e: channels[e] = c} values[e] * gout[row(e), :]           (weight gradient)

The forward runs over disjoint row ranges (each output row is written once, by one thread);
the weight gradient over disjoint column ranges of ``O`` (every thread walks all events but
updates only its own columns, so no two threads write the same element).  Both sum each
element's terms in event order, so results do not depend on the number of threads.
"""

from __future__ import annotations

from numba import njit

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def event_linear_forward(crow, channels, values, has_values, wt, bias, out, lo, hi):
    """``out[r] = bias + sum values[e] wt[channels[e]]`` for rows ``lo .. hi-1``."""
    n_out = wt.shape[1]
    for r in range(lo, hi):
        row = out[r]
        for j in range(n_out):
            row[j] = bias[j]
        for e in range(crow[r], crow[r + 1]):
            w = wt[channels[e]]
            if has_values:
                v = values[e]
                for j in range(n_out):
                    row[j] += v * w[j]
            else:
                for j in range(n_out):
                    row[j] += w[j]


@njit(**_JIT)
def event_linear_weight_grad(crow, channels, values, has_values, gout, gwt, lo, hi):
    """``gwt[c, lo:hi] = sum over events of channel c of values[e] * gout[row(e), lo:hi]``."""
    n_rows = crow.shape[0] - 1
    for c in range(gwt.shape[0]):
        for j in range(lo, hi):
            gwt[c, j] = 0
    for r in range(n_rows):
        g = gout[r]
        for e in range(crow[r], crow[r + 1]):
            dst = gwt[channels[e]]
            if has_values:
                v = values[e]
                for j in range(lo, hi):
                    dst[j] += v * g[j]
            else:
                for j in range(lo, hi):
                    dst[j] += g[j]
