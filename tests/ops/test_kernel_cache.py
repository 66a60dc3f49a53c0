"""The specialised numba backward kernels load from numba's disk cache in a new process.

A closure over numba dispatchers misses the cache in every process (its key pickles the
dispatchers' per-process uuids), recompiling for seconds and adding a cache file each time.
Structural check through numba's own counters, no timing: the second process must report only
cache hits for every backward variant it ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent("""
    import json, torch
    from spikescan.nn import LIF, SPSN
    from spikescan.ops.lif import numba_kernels as lif_numba
    from spikescan.ops.spsn import numba_kernels as spsn_numba
    x = (torch.rand(40, 3, 16) * 2).requires_grad_()
    LIF(16, learn_tau=True)(x).sum().backward()
    SPSN(16, learn_tau=True)(x).sum().backward()
    SPSN(16)(x).sum().backward()
    out = {}
    for name, table in (("lif", lif_numba._BACKWARD), ("spsn", spsn_numba._BACKWARD)):
        for key, kernel in table.items():
            out[f"{name}{key}"] = [sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values())]
    print(json.dumps(out))
""")


def _probe() -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_backward_kernels_load_from_the_disk_cache_in_a_new_process():
    first = _probe()  # compiles what an earlier process has not (and writes the cache)
    second = _probe()
    assert set(second) == set(first) and len(second) >= 3  # LIF and both SPSN variants ran
    for key, (hits, misses) in second.items():
        assert misses == 0 and hits >= 1, (key, hits, misses)
