"""Event-driven dense layer on the CPU (numba): ``W s[t] + b`` at a cost proportional to the spikes.

The input is a batch of events in CSR form over the rows ``r = t * B + b`` of a time-first
``[T, B, C]`` tensor (:class:`spikescan.ops.events.SpikeEvents`): the events of row ``r`` are
``channels[crow[r]:crow[r+1]]`` with values ``values[...]`` (1 when there are none).  ``wt`` is
the weight transposed, ``[C, O]`` and C-contiguous, so an event adds one contiguous row of it::

    out[r, :] = bias + sum_{e in row r} values[e] * wt[channels[e], :]        (forward)
    gwt[c, :] = sum_{e: channels[e] = c} values[e] * gout[row(e), :]           (weight gradient)

    gx[r, :]  = gout[r, :] @ W                                                 (input gradient)

The forward and the input gradient run over disjoint row ranges (each output row is written
once, by one thread); the weight gradient over disjoint column ranges of ``O`` (every thread
walks all events but updates only its own columns, so no two threads write the same element),
with the bias gradient (the sum of ``gout`` over rows) in the same pass.  Every element's terms
are summed in a fixed order, so results do not depend on the number of threads.
"""

from __future__ import annotations

from numba import njit

from ._numba_lowlevel import add_row, add_scaled_row, copy_row

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


# Rows at most this long are copied / summed in place: a call to the vectorized row helpers
# costs more than the row (a readout of 10 outputs has 100 352 rows of 10 per F-MNIST batch).
_SHORT_ROW = 32


@njit(**_JIT)
def event_linear_forward(crow, channels, values, has_values, wt, bias, out, lo, hi):
    """``out[r] = bias + sum values[e] wt[channels[e]]`` for rows ``lo .. hi-1``."""
    short = bias.shape[0] <= _SHORT_ROW
    for r in range(lo, hi):
        row = out[r]
        if short:
            for j in range(row.shape[0]):
                row[j] = bias[j]
        else:
            copy_row(row, bias)
        for e in range(crow[r], crow[r + 1]):
            if has_values:
                add_scaled_row(row, values[e], wt[channels[e]])
            else:
                add_row(row, wt[channels[e]])


@njit(**_JIT)
def event_linear_weight_grad(crow, channels, values, has_values, gout, gwt, gb, want_bias, lo, hi):
    """Columns ``lo .. hi-1`` of ``gwt[c] = sum over events of channel c of values[e] * gout[row(e)]``
    and, with ``want_bias``, of ``gb = sum over all rows of gout`` (one pass over ``gout``)."""
    n_rows = crow.shape[0] - 1
    gwt[:, lo:hi] = 0
    gb[lo:hi] = 0
    gbs = gb[lo:hi]
    short = hi - lo <= _SHORT_ROW
    for r in range(n_rows):
        g = gout[r, lo:hi]
        if want_bias:
            if short:
                for j in range(g.shape[0]):
                    gbs[j] += g[j]
            else:
                add_row(gbs, g)
        for e in range(crow[r], crow[r + 1]):
            if has_values:
                add_scaled_row(gwt[channels[e], lo:hi], values[e], g)
            else:
                add_row(gwt[channels[e], lo:hi], g)


@njit(**_JIT)
def row_counts(x, counts, non_unit, lo, hi):
    """``counts[r]`` = nonzero entries of rows ``lo .. hi-1`` of ``x`` [R, C]; ``non_unit[r]`` = how
    many of them are not 1 (so a 0/1 tensor needs no values)."""
    for r in range(lo, hi):
        row = x[r]
        n = 0
        m = 0
        for c in range(row.shape[0]):
            v = row[c]
            n += v != 0
            m += (v != 0) & (v != 1)
        counts[r] = n
        non_unit[r] = m


@njit(**_JIT)
def fill_events(x, crow, channels, values, want_values, lo, hi):
    """Channels (and values) of the nonzero entries of rows ``lo .. hi-1``, in row-major order."""
    for r in range(lo, hi):
        row = x[r]
        e = crow[r]
        for c in range(row.shape[0]):
            v = row[c]
            if v != 0:
                channels[e] = c
                if want_values:
                    values[e] = v
                e += 1


@njit(inline="always")
def _counts_to_crow(crow):
    """``crow`` holding each row's count at ``crow[r + 1]`` turned into the CSR offsets; returns
    the write cursor of every row (its first slot), for the scatter pass of a counting sort."""
    for r in range(crow.shape[0] - 1):
        crow[r + 1] += crow[r]
    return crow[:-1].copy()


@njit(**_JIT)
def gather_events(offsets, steps, channels, idx, T, crow, out_channels, src):
    """Events of samples ``idx`` (sample ``b`` of the batch is ``idx[b]``; sample ``i`` stores
    events ``offsets[i] .. offsets[i+1]-1`` at ``(steps[e], channels[e])``) sorted by row
    ``steps[e] * B + b``, stably: within a row they keep the order in which the sample stores
    them, as a stable argsort of the rows would.  Writes ``crow`` (``[T B + 1]``, zeros on
    entry), ``out_channels`` and ``src`` (the index of each output event in the stored arrays,
    for the values).  One counting sort, ``O(events + T B)``."""
    B = idx.shape[0]
    for b in range(B):
        i = idx[b]
        for e in range(offsets[i], offsets[i + 1]):
            crow[steps[e] * B + b + 1] += 1
    cursor = _counts_to_crow(crow)
    for b in range(B):
        i = idx[b]
        for e in range(offsets[i], offsets[i + 1]):
            r = steps[e] * B + b
            out_channels[cursor[r]] = channels[e]
            src[cursor[r]] = e
            cursor[r] += 1


@njit(**_JIT)
def events_of_first_spikes(first, T, B, O, crow, channels):
    """The events of single spikes ``s[first[m], m] = 1`` (``m = b O + o``; ``first[m] >= T``:
    none) over the rows ``t B + b``: ``crow`` (``[T B + 1]``, zeros on entry) and ``channels``
    (one per spike), a row's channels rising, as ``SpikeEvents.from_dense`` orders them.  One
    counting sort over the neurons, ``O(B O + T B)``."""
    M = first.shape[0]
    for m in range(M):
        t = first[m]
        if t < T:
            crow[t * B + m // O + 1] += 1
    cursor = _counts_to_crow(crow)
    for m in range(M):  # m rising: within a row (t, b) the channels o = m - b O rise
        t = first[m]
        if t < T:
            r = t * B + m // O
            channels[cursor[r]] = m % O
            cursor[r] += 1


@njit(**_JIT)
def nonempty_rows(crow, evrow, crow_ev) -> int:
    """Number the rows that have events: ``evrow[r]`` (``[T B]``) is the index of row ``r``
    among them (rows without events: the index of the next one, never read), and ``crow_ev``
    (``[T B + 1]``, its first ``rows + 1`` entries written) is the CSR of those rows alone.
    Returns ``rows``."""
    n = 0
    crow_ev[0] = crow[0]
    for r in range(crow.shape[0] - 1):
        evrow[r] = n
        if crow[r + 1] > crow[r]:
            n += 1
            crow_ev[n] = crow[r + 1]
    return n
