import math

import numpy as np
import pytest
import torch

from spikescan.data.encodings import latency_encode, rate_encode, ttfs_code_encode, ttfs_encode


def _times(s):
    """First-spike step per value (-1 = silent) of a [T, *shape] one-spike tensor."""
    fired = s.sum(0)
    return torch.where(fired > 0, s.argmax(0), torch.full_like(fired, -1, dtype=torch.long))


def test_latency_hand_values():
    x = torch.tensor([1.0, 0.5, 0.25, 0.0, 0.1])
    s = latency_encode(x, 5)  # t = round((1 - x) * 4)
    assert s.shape == (5, 5) and s.dtype == torch.float32
    assert _times(s).tolist() == [0, 2, 3, -1, 4]  # 0.0 <= threshold never fires; 3.6 -> 4
    assert s.sum(0).tolist() == [1, 1, 1, 0, 1]
    s = latency_encode(x, 10, t_min=2, t_max=6, threshold=0.2)
    assert _times(s).tolist() == [2, 4, 5, -1, -1]


def test_ttfs_code_is_the_authors_computation_on_raw_values():
    # webstorms/FastSNN datasets.py: T = 20 log(v / (v - 0.2)) on the raw value v, then
    # round(T * 1000 / dt) with dt = 1 (ms), kept below t_len = 100; written out here in float64
    raw = list(range(256))
    want = []
    for v in raw:
        step = round(20.0 * math.log(v / (v - 0.2)) * 1000.0) if v > 0.2 else None
        want.append(step if step is not None and step < 100 else -1)
    got = _times(ttfs_code_encode(torch.tensor(raw, dtype=torch.float64) / 255.0, 100)).tolist()
    assert got == want
    assert [got[v] for v in (0, 40, 41, 50, 100, 200, 255)] == [-1, -1, 98, 80, 40, 20, 16]
    # the same as the general encoder with the code's parameters; 1 ms is the authors' dt
    x = torch.rand(1000, dtype=torch.float64)
    assert torch.equal(ttfs_code_encode(x, 100),
                       ttfs_encode(x, 100, tau_eff=20.0, theta=0.2 / 255, rounding="nearest"))
    with pytest.raises(ValueError, match="rounding"):
        ttfs_encode(x, 10, rounding="ceil")


def test_latency_keeps_shape_and_accepts_numpy():
    x = np.full((2, 3), 0.5, dtype=np.float32)
    s = latency_encode(x, 3)
    assert s.shape == (3, 2, 3) and bool((s[1] == 1).all())


def test_ttfs_matches_eq17():
    p = torch.tensor([1.0, 0.25, 0.5, 0.2, 0.1, 0.2001])
    s = ttfs_encode(p, 784)
    expect = []
    for v in p.tolist():
        if v > 0.2:
            expect.append(math.floor(0.02 * math.log(v / (v - 0.2)) / 1e-3))
        else:
            expect.append(-1)
    assert expect[:3] == [4, 32, 10]
    assert _times(s).tolist() == expect
    # too late for a short window: dropped, not clamped
    assert _times(ttfs_encode(p, 20)).tolist() == [4, -1, 10, -1, -1, -1]
    # dt 2 ms halves the step
    assert _times(ttfs_encode(torch.tensor([1.0]), 10, dt=2e-3)).tolist() == [2]


def test_rate_statistics_and_seed():
    x = torch.tensor([0.0, 0.3, 1.0])
    g = torch.Generator().manual_seed(0)
    s = rate_encode(x.expand(1000, 3), 50, generator=g)
    assert s.shape == (50, 1000, 3)
    m = s.mean((0, 1))
    assert m[0] == 0 and m[2] == 1 and abs(float(m[1]) - 0.3) < 0.01
    a = rate_encode(x, 20, max_prob=0.5, generator=torch.Generator().manual_seed(3))
    b = rate_encode(x, 20, max_prob=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a[:, 2].max() <= 1


@pytest.mark.parametrize("enc", [latency_encode, rate_encode, ttfs_encode])
def test_bad_input(enc):
    with pytest.raises(ValueError, match="x must"):
        enc(torch.tensor([0.5, 1.5]), 4)
    with pytest.raises(ValueError, match="x must"):
        enc(torch.tensor([float("nan")]), 4)
    with pytest.raises(ValueError, match="num_steps"):
        enc(torch.tensor([0.5]), 0)
    with pytest.raises(TypeError, match="x must"):
        enc([0.5], 4)
