import torch

# The suite's tensors are small: one intra-op thread is faster and keeps timings of a 2-core CI
# machine stable.  (Kernels with their own threading, e.g. numba prange, are unaffected.)
torch.set_num_threads(1)


import pytest  # noqa: E402

from spikescan.ops import _backend  # noqa: E402


class BackendPatcher:
    """Test hooks on the backend registry, undone at the end of the test (monkeypatch)."""

    def __init__(self, monkeypatch):
        self._mp = monkeypatch

    def _table(self, op):
        table = dict(_backend._REGISTRY[op])
        self._mp.setitem(_backend._REGISTRY, op, table)
        return table

    def count_calls(self, op: str, name: str) -> list:
        """Every call of backend ``name`` of ``op`` appends 1 to the returned list."""
        table = self._table(op)
        real = table[name]
        calls: list = []

        def counted(*a, **k):
            calls.append(1)
            return real.fn(*a, **k)

        table[name] = real._replace(fn=counted)
        return calls

    def make_unavailable(self, op: str, name: str, reason: str = "switched off by the test") -> None:
        table = self._table(op)
        table[name] = table[name]._replace(unsupported=lambda x, **k: reason)

    def make_available(self, op: str, name: str) -> None:
        table = self._table(op)
        table[name] = table[name]._replace(unsupported=lambda x, **k: None)

    def auto_picks(self, op: str, name: str) -> None:
        """``backend="auto"`` of ``op`` resolves to ``name``."""
        self._mp.setitem(_backend._AUTO, op, lambda x, **k: (name,))


@pytest.fixture
def backend_patch(monkeypatch):
    return BackendPatcher(monkeypatch)
