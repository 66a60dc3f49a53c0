"""Every available backend of ``lif`` and ``leaky_integrate`` against the float64 sequential
reference (outputs and every gradient), by the harness in ``parity.py`` -- the numba kernels
in-process, the Triton kernels in Triton's interpreter in a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("spikescan_parity", HERE / "parity.py")
parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity)

CASES = list(parity.all_cases())


@pytest.mark.parametrize("op, T, dtype, options", CASES, ids=[f"{c[0]}-T{c[1]}-{str(c[2])[6:]}-{i}"
                                                              for i, c in enumerate(CASES)])
def test_every_backend_matches_the_reference(op, T, dtype, options):
    assert parity.check_op(op, T, dtype, **options) == []


def test_harness_catches_a_wrong_backend(backend_patch, monkeypatch):
    """A backend off by one ulp-sized relative error passes; one off by 1e-3 is reported."""
    from spikescan.ops import _backend

    table = _backend._REGISTRY["leaky_integrate"]
    real = table["fused"].fn
    monkeypatch.setitem(_backend._REGISTRY, "leaky_integrate", dict(table))
    _backend._REGISTRY["leaky_integrate"]["fused"] = table["fused"]._replace(
        fn=lambda *a, **k: real(*a, **k) * (1 + 1e-3))
    import torch

    failures = parity.check_op("leaky_integrate", 33, torch.float64)
    assert any("leaky_integrate[fused]" in f and "output 0" in f for f in failures)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_in_the_interpreter_match_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, str(HERE / "parity.py"), "triton"], capture_output=True, text=True,
                         env=env, timeout=900, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
