"""Triton kernels of ``spikescan.ops`` (lif, leaky, spsn): lazy import, and their logic against the CPU kernels.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, which must be set
before triton is imported, hence a subprocess running ``_triton_checks.py``).  With CUDA the same
checks run compiled on the GPU.  Everything here skips cleanly when triton is not installed,
except the lazy-import test, which needs no triton.
"""

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def _load_checks():
    spec = importlib.util.spec_from_file_location("_triton_checks", HERE / "_triton_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CHECK_NAMES = list(_load_checks().CHECKS)


def test_package_imports_and_runs_without_triton():
    """Importing spikescan loads neither numba nor triton; the CPU kernels run with triton hidden."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, spikescan, spikescan.ops as O, spikescan.ops.spsn as P\n"
        "assert 'numba' not in sys.modules, 'numba imported eagerly'\n"
        "assert 'fused' not in O.backends('lif', torch.empty(1, device='meta'))\n"
        "s = O.lif(torch.randn(6, 2, 3), 0.9, backend='fused')\n"
        "u = O.leaky_integrate(torch.randn(6, 3), 0.9, backend='fused')\n"
        "z = P.fused_spsn(torch.randn(6, 3), 0.9, 0.9, seed=0)\n"
        "assert s.shape == (6, 2, 3) and u.shape == z.shape == (6, 3)\n"
        "assert sys.modules['triton'] is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.fixture(scope="module")
def interpreter_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, str(HERE / "_triton_checks.py"), "cpu"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_triton
@pytest.mark.parametrize("name", CHECK_NAMES)
def test_interpreter(interpreter_results, name):
    assert interpreter_results[name] is None, interpreter_results[name]


@pytest.fixture(scope="module")
def gpu_results():
    return _load_checks().run_all("cuda")


@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CHECK_NAMES)
def test_gpu(gpu_results, name):
    assert gpu_results[name] is None, gpu_results[name]


@needs_triton
def test_triton_block_and_grid_shapes():
    """Launch geometry (pure Python, no GPU): every neuron is covered by exactly one program."""
    from spikescan.ops._kernels._triton_util import block_for, grid

    for N in (1, 63, 64, 65, 5000, 1 << 14, 1 << 18, 10**6):
        block = block_for(N)
        (programs,) = grid(N, block)
        assert block & (block - 1) == 0 and (programs - 1) * block < N <= programs * block


def test_cuda_tensor_without_triton_is_a_clear_error(monkeypatch):
    from spikescan.ops import _backend

    monkeypatch.setattr(_backend, "_HAS_TRITON", False)
    with pytest.raises(ValueError, match="need triton"):
        _backend.kernel_impl(torch.device("cuda"))
    assert "need triton" in _backend.kernels_unavailable(torch.device("cuda"))
