import functools

import pytest
import torch

from spikescan.data.collate import pad_collate


def _batch():
    return [(torch.ones(2, 3), 4), (2 * torch.ones(4, 3), 1), (3 * torch.ones(1, 3), 0)]


def test_left_padding_ends_together():
    x, y, n = pad_collate(_batch())
    assert x.shape == (4, 3, 3) and y.tolist() == [4, 1, 0] and n.tolist() == [2, 4, 1]
    assert y.dtype == n.dtype == torch.long
    assert x[:, 0, 0].tolist() == [0, 0, 1, 1]
    assert x[:, 1, 0].tolist() == [2, 2, 2, 2]
    assert x[:, 2, 0].tolist() == [0, 0, 0, 3]


def test_right_padding_and_value():
    x, _, n = functools.partial(pad_collate, pad="right", value=-1.0)(_batch())
    assert x[:, 0, 0].tolist() == [1, 1, -1, -1] and x[:, 2, 1].tolist() == [3, -1, -1, -1]


def test_in_a_dataloader():
    dl = torch.utils.data.DataLoader(_batch(), batch_size=3, collate_fn=pad_collate)
    x, y, n = next(iter(dl))
    assert x.shape == (4, 3, 3)


def test_errors():
    with pytest.raises(ValueError, match="pad"):
        pad_collate(_batch(), pad="middle")
    with pytest.raises(ValueError, match="per-step shape"):
        pad_collate([(torch.ones(2, 3), 0), (torch.ones(2, 4), 1)])
    with pytest.raises(ValueError, match="at least one"):
        pad_collate([])
    with pytest.raises(ValueError, match="T >= 1"):
        pad_collate([(torch.ones(0, 3), 0)])
