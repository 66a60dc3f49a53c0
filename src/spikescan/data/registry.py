"""Data sets by name: which loader, which files, how many inputs and classes, and default T / dt / encoding.

The training loop (``spikescan train --dataset NAME --data-dir PATH``) builds its data through
:func:`build_datasets`.  Every sample comes out flattened to ``[T, n_in]`` for the feed-forward
networks of :mod:`spikescan.train.models`; a training transform (e.g. the SPSN augmentation) is
applied to the loader's own sample *before* flattening, so that the channel axis of SHD/SSC is
the last one it sees.

==============  ====  =====  =====  ==========  ========================================================
name            n_in  class  T      dt          files expected under ``data_dir``
==============  ====  =====  =====  ==========  ========================================================
digits            64     10    64   1 ms        none (embedded scikit-learn digits)
shd              700     20  1400   1 ms        ``shd_train.h5``, ``shd_test.h5`` (gunzipped)
ssc              700     35  1400   1 ms        ``ssc_train.h5``, ``ssc_test.h5``
nmnist          1156     10   300   1 ms        ``Train/<digit>/*.bin``, ``Test/<digit>/*.bin``
mnist            784     10   784   1 ms        ``train-images-idx3-ubyte[.gz]`` ... ``t10k-labels-idx1-ubyte[.gz]``
fmnist           784     10   784   1 ms        same IDX names (Fashion-MNIST)
cifar10         3072     10     4   (steps)     ``cifar-10-batches-py/data_batch_1..5, test_batch``
cifar100        3072    100     4   (steps)     ``cifar-100-python/train, test``
scifar10          96     10    32   (steps)     as cifar10; one pixel row per step
dvs-cifar10     4608     10    10   (frames)    tonic's ``CIFAR10DVS`` folder (``pip install spikescan[tonic]``)
==============  ====  =====  =====  ==========  ========================================================

N-MNIST merges the two polarities (34 x 34 = 1156 inputs, FastSNN Table 1); DVS-CIFAR10 frames
are resized to 48 x 48 (PSU) with both polarities; CIFAR images are normalised per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

__all__ = ["DATASETS", "DatasetSpec", "build_datasets", "dataset_spec", "supports_events"]


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: sizes, defaults, the files it needs and how to build its two splits."""

    name: str
    n_in: int
    n_classes: int
    num_steps: int
    dt: float
    encoding: str
    encodings: tuple[str, ...]
    expected: str
    build: Callable  # (data_dir: Path | None, train: bool, num_steps, dt, encoding, transform) -> Dataset
    needs_dir: bool = True


class _Mapped(Dataset):
    """``(transform(x), y)`` for each item of ``base``; ``transform`` may be ``None``."""

    def __init__(self, base: Dataset, transform: Callable | None):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, y


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _then_flatten(transform: Callable | None) -> Callable:
    if transform is None:
        return _flatten
    return lambda x: _flatten(transform(x))


def _shd(cls_name: str):
    def build(root, train, num_steps, dt, encoding, transform):
        from . import shd

        cls = getattr(shd, cls_name)
        return cls(root, "train" if train else "test", dt=dt, max_time=num_steps * dt,
                   binary=encoding == "binary", transform=transform)
    return build


def _nmnist(root, train, num_steps, dt, encoding, transform):
    from .nmnist import NMNIST

    return NMNIST(root, train, dt=dt, max_time=num_steps * dt, merge_polarity=True, flatten=True,
                  binary=encoding == "binary", transform=transform)


def _idx(cls_name: str):
    def build(root, train, num_steps, dt, encoding, transform):
        from . import idx

        kwargs = {"dt": dt} if encoding in ("ttfs", "ttfs-code") else {}
        return getattr(idx, cls_name)(root, train, encoding=encoding, num_steps=num_steps, flatten=True,
                                      transform=transform, **kwargs)
    return build


def _cifar(cls_name: str, mode: str | None = None):
    def build(root, train, num_steps, dt, encoding, transform):
        from . import cifar

        m = mode or encoding
        if m in ("row", "column") and num_steps != 32:
            raise ValueError(f"sequential CIFAR has one step per pixel {m}: num_steps must be 32, got {num_steps}")
        base = getattr(cifar, cls_name)(root, train, mode=m, num_steps=num_steps, normalize=True)
        return _Mapped(base, transform)
    return build


def _dvs(root, train, num_steps, dt, encoding, transform):
    from .dvs import DVSCIFAR10

    return DVSCIFAR10(root, n_frames=num_steps, size=48, train=train, transform=transform)


def _digits(root, train, num_steps, dt, encoding, transform, seed=0):  # built in build_datasets
    raise AssertionError("digits are built together")  # pragma: no cover


_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz allowed)"

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("digits", 64, 10, 64, 1e-3, "rate", ("rate", "latency"),
                "nothing (the digits ship with scikit-learn)", _digits, needs_dir=False),
    DatasetSpec("shd", 700, 20, 1400, 1e-3, "binary", ("binary", "counts"),
                "shd_train.h5 and shd_test.h5 (gunzipped), https://zenkelab.org/datasets/", _shd("SHD")),
    DatasetSpec("ssc", 700, 35, 1400, 1e-3, "binary", ("binary", "counts"),
                "ssc_train.h5 and ssc_test.h5 (gunzipped), https://zenkelab.org/datasets/", _shd("SSC")),
    DatasetSpec("nmnist", 1156, 10, 300, 1e-3, "binary", ("binary", "counts"),
                "Train/<digit>/*.bin and Test/<digit>/*.bin (N-MNIST event files)", _nmnist),
    DatasetSpec("mnist", 784, 10, 784, 1e-3, "ttfs", ("ttfs", "ttfs-code", "latency", "rate"), _IDX_FILES,
                _idx("MNIST")),
    DatasetSpec("fmnist", 784, 10, 784, 1e-3, "ttfs", ("ttfs", "ttfs-code", "latency", "rate"), _IDX_FILES,
                _idx("FashionMNIST")),
    DatasetSpec("cifar10", 3072, 10, 4, 1e-3, "static", ("static",),
                "cifar-10-batches-py/ with data_batch_1..data_batch_5 and test_batch (python version)",
                _cifar("CIFAR10")),
    DatasetSpec("cifar100", 3072, 100, 4, 1e-3, "static", ("static",),
                "cifar-100-python/ with train and test (python version)", _cifar("CIFAR100")),
    DatasetSpec("scifar10", 96, 10, 32, 1e-3, "row", ("row", "column"),
                "cifar-10-batches-py/ with data_batch_1..data_batch_5 and test_batch (python version)",
                _cifar("CIFAR10")),
    DatasetSpec("dvs-cifar10", 2 * 48 * 48, 10, 10, 1e-3, "frames", ("frames",),
                "the CIFAR10DVS folder that tonic.datasets.CIFAR10DVS(save_to=DATA_DIR) reads", _dvs),
)}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    return DATASETS[name]


def supports_events(name: str, encoding: str | None = None, train_transform: Callable | None = None) -> bool:
    """Whether :func:`build_datasets` can serve ``name`` with ``encoding`` as :class:`~spikescan.data.events.EncodedSpikes`.

    The samples must be spikes encoded deterministically (TTFS / latency images, N-MNIST, SHD,
    SSC and the digits' fixed-seed code; not rate-coded images, drawn anew each epoch, nor
    CIFAR / DVS frames), and there must be no on-the-fly training transform.
    """
    from .events import ENCODINGS_AS_EVENTS

    spec = dataset_spec(name)
    encoding = spec.encoding if encoding is None else encoding
    if train_transform is not None:
        return False
    if name in ("mnist", "fmnist"):
        return encoding in ENCODINGS_AS_EVENTS
    return name in ("nmnist", "shd", "ssc", "digits")


def build_datasets(name: str, data_dir=None, *, num_steps: int | None = None, dt: float | None = None,
                   encoding: str | None = None, seed: int = 0, train_transform: Callable | None = None,
                   test_only: bool = False, events: bool = False):
    """``(train, test, n_in, n_classes)`` for data set ``name``; samples are ``([T, n_in], label)``.

    ``None`` for ``num_steps`` / ``dt`` / ``encoding`` takes the data set's default (table above).
    ``train_transform`` is applied to training samples only, on the fly, before flattening.
    ``seed`` draws the digits' rate code (the other data sets encode per item, from torch's RNG).
    A missing ``data_dir`` or missing files raise ``FileNotFoundError`` naming the path and the
    files expected there.  ``test_only`` skips building the training split (returned as ``None``).
    ``events=True`` returns both splits encoded once as :class:`~spikescan.data.events.EncodedSpikes`
    (batched as events, same samples) where :func:`supports_events` allows it, else raises.
    """
    if events and not supports_events(name, encoding, train_transform):
        raise ValueError(f"dataset {name!r} with encoding {encoding!r}" +
                         (" and a training transform" if train_transform is not None else "") +
                         " cannot be served as events (see supports_events)")
    out = _build_datasets(name, data_dir, num_steps, dt, encoding, seed, train_transform, test_only)
    if not events:
        return out
    from .events import EncodedSpikes

    train, test, n_in, n_classes = out
    enc = dataset_spec(name).encoding if encoding is None else encoding

    def encode(ds, split):
        if ds is None:
            return None
        source = f"{name} {split}"
        if name in ("mnist", "fmnist"):  # the loader's own images, encoder and its arguments
            return EncodedSpikes.from_images(ds.images.numpy(), ds.labels.numpy(), enc, ds.num_steps,
                                             num_classes=n_classes, source=source, **ds.encoding_kwargs)
        return EncodedSpikes.from_dataset(ds, num_classes=n_classes, source=source)

    return encode(train, "train"), encode(test, "test"), n_in, n_classes


def _build_datasets(name, data_dir, num_steps, dt, encoding, seed, train_transform, test_only):
    spec = dataset_spec(name)
    num_steps = spec.num_steps if num_steps is None else int(num_steps)
    dt = spec.dt if dt is None else float(dt)
    encoding = spec.encoding if encoding is None else encoding
    if encoding not in spec.encodings:
        raise ValueError(f"encoding for dataset {name!r} must be one of {list(spec.encodings)}, got {encoding!r}")
    if name == "digits":
        from .digits import digits_datasets

        train, test = digits_datasets(encoding, num_steps, seed=seed)
        return (None if test_only else _Mapped(train, train_transform)), test, spec.n_in, spec.n_classes
    if data_dir is None:
        raise FileNotFoundError(f"dataset {name!r} needs --data-dir PATH: a folder holding {spec.expected}")
    root = Path(data_dir).expanduser()
    try:
        train = None if test_only else spec.build(root, True, num_steps, dt, encoding, _then_flatten(train_transform))
        test = spec.build(root, False, num_steps, dt, encoding, _flatten)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"dataset {name!r}: {e}\n  expected in {str(root)!r}: {spec.expected}") from None
    return train, test, spec.n_in, spec.n_classes
