import math

import pytest
import torch

from spikescan.data.augment import Compose, RandomChannelShift, RandomScale


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_shift_apply_by_hand():
    x = torch.arange(1.0, 6.0).repeat(2, 1)  # [T=2, C=5] = 1..5
    assert RandomChannelShift.apply(x, 2)[0].tolist() == [0, 0, 1, 2, 3]
    assert RandomChannelShift.apply(x, -1)[1].tolist() == [2, 3, 4, 5, 0]
    assert RandomChannelShift.apply(x, 0).equal(x)
    assert RandomChannelShift.apply(x, 7).sum() == 0


def test_shift_statistics_match_k_shift():
    # one spike in the middle channel; its displacement is the drawn offset
    c, k = 700, 0.1
    x = torch.zeros(3, c)
    x[1, 350] = 1
    t = RandomChannelShift(k, generator=_gen(0))
    offsets = []
    for _ in range(4000):
        y = t(x)
        assert y.shape == x.shape and y.sum() == 1
        offsets.append(int(y[1].argmax()) - 350)
    o = torch.tensor(offsets, dtype=torch.float64)
    assert o.min() == -70 and o.max() == 70  # round(0.1 * 700)
    assert abs(float(o.mean())) < 1.5  # sd of the mean ~ 40 / sqrt(4000) = 0.64
    assert abs(float(o.std()) - 70 / math.sqrt(3)) < 1.5  # uniform on [-70, 70]
    assert len(set(offsets)) == 141


def test_scale_apply_by_hand():
    x = torch.zeros(5, 5)
    x[2, 2] = 1  # centre stays put
    x[2, 3] = 2
    y = RandomScale(0.5).apply(x, 2.0)  # stretch x2 about the centre: out i reads round((i-2)/2 + 2)
    # columns 0..4 read 1, 2 (1.5 -> 2), 2, 3 (2.5 -> 3), 3
    assert y[2].tolist() == [0, 1, 1, 2, 2]
    assert y[1].tolist() == [0, 1, 1, 2, 2] and y[0].sum() == 0  # time stretched too: row 1 reads row 2 (1.5 -> 2)
    z = RandomScale(0.5).apply(x, 0.5)  # shrink: out i reads (i - 2) * 2 + 2, outside -> 0
    assert z[2].tolist() == [0, 0, 1, 0, 0] and z.sum() == 1
    s = RandomScale(0.5, anchor="start").apply(torch.arange(6.0).unsqueeze(0).repeat(6, 1), 0.5)
    assert s[0].tolist() == [0, 2, 4, 0, 0, 0] and s[3].sum() == 0
    assert RandomScale(0.5).apply(x, 1.0).equal(x)


def test_scale_statistics_match_k_scale():
    k = 0.3
    t = RandomScale(k, generator=_gen(1))
    s = torch.tensor([t.draw() for _ in range(20000)], dtype=torch.float64)
    assert s.min() >= 1 - k and s.max() <= 1 + k
    assert abs(float(s.mean()) - 1) < 0.005
    assert abs(float(s.std()) - 2 * k / math.sqrt(12)) < 0.005
    # end to end: a bar over channels 350-d..350+d (centre 350) comes out about s times as wide
    c, d = 701, 200
    x = torch.zeros(21, c)
    x[10, 350 - d: 350 + d + 1] = 1
    t = RandomScale(k, generator=_gen(2))
    spans = []
    for _ in range(500):
        y = t(x)
        assert y.shape == x.shape
        idx = torch.nonzero(y[10]).flatten()
        spans.append(float(idx.max() - idx.min()) / (2 * d))
    spans = torch.tensor(spans)
    assert 1 - k - 0.01 < spans.min() < 1 - k + 0.05 and 1 + k - 0.05 < spans.max() < 1 + k + 0.01
    assert abs(float(spans.mean()) - 1) < 0.03


def test_deterministic_under_seed_and_compose():
    x = (torch.rand(50, 40, generator=_gen(9)) < 0.2).float()

    def aug(seed):
        g = _gen(seed)
        return Compose([RandomChannelShift(0.1, generator=g), RandomScale(0.3, generator=g)])

    a, b, c = aug(3), aug(3), aug(4)
    ya = [a(x) for _ in range(5)]
    yb = [b(x) for _ in range(5)]
    yc = [c(x) for _ in range(5)]
    assert all(u.equal(v) for u, v in zip(ya, yb))
    assert not all(u.equal(v) for u, v in zip(ya, yc))
    assert all(u.shape == x.shape for u in ya)
    # global RNG when no generator is given
    torch.manual_seed(5)
    p = RandomChannelShift(0.2)(x)
    torch.manual_seed(5)
    assert RandomChannelShift(0.2)(x).equal(p)
    # extra middle dims: channel axis is last
    assert RandomScale(0.3, generator=_gen(0))(torch.ones(7, 2, 9)).shape == (7, 2, 9)


def test_draw_then_apply_equals_call():
    x = torch.rand(30, 20)
    t1, t2 = RandomScale(0.3, generator=_gen(7)), RandomScale(0.3, generator=_gen(7))
    assert t1(x).equal(t2.apply(x, t2.draw()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_shift"):
        RandomChannelShift(1.5)
    with pytest.raises(ValueError, match="k_scale"):
        RandomScale(-0.1)
    with pytest.raises(ValueError, match="anchor"):
        RandomScale(0.1, anchor="end")
    with pytest.raises(ValueError, match="at least 2 dims"):
        RandomScale(0.1)(torch.ones(5))
    with pytest.raises(TypeError, match="callable"):
        Compose([1])
