"""MNIST / Fashion-MNIST from IDX files, encoded as spike trains.

IDX format (LeCun et al.): a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type 0x08 =
uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), then ``ndim``
big-endian uint32 sizes, then the data, big-endian, row-major.  Images are magic 2051
(``0x00000803``: uint8, 3 dims ``[N, 28, 28]``), labels magic 2049 (``0x00000801``: uint8 ``[N]``).
Files may be gzipped (``.gz``).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .encodings import TTFS_CODE_NUM_STEPS, latency_encode, rate_encode, ttfs_code_encode, ttfs_encode
from ._common import check_labels, require_dir, require_file

__all__ = ["read_idx", "write_idx", "MNISTLike", "MNIST", "FashionMNIST", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("=").str[1:]: k for k, v in _TYPES.items()}


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            return gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{str(path)!r} is not a valid gzip file (truncated or corrupt?): {e}") from None
    return path.read_bytes()


def read_idx(path, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) into a numpy array in native byte order.

    ``expect_magic`` (e.g. :data:`IMAGES_MAGIC`) checks the magic number.  A wrong magic number,
    a header that does not fit, or a data size that differs from the header raises a
    ``ValueError`` naming the path and what was expected.
    """
    path = require_file(path, "IDX file")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{str(path)!r} is truncated: {len(data)} bytes, an IDX header needs at least 4")
    magic = struct.unpack(">I", data[:4])[0]
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{str(path)!r} has magic number {magic}, expected {expect_magic} "
                         f"({'images' if expect_magic == IMAGES_MAGIC else 'labels'} IDX file)")
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise ValueError(f"{str(path)!r} is not an IDX file: magic number {magic:#010x} "
                         f"(expected 0x0000TTNN with type TT in {[hex(c) for c in _TYPES]})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{str(path)!r} is truncated: {len(data)} bytes, the header needs {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{str(path)!r} is {what}: {len(data)} bytes, expected {expected} for shape {shape} "
                         f"of {dtype.name}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in ``.gz``); for tests and tools."""
    a = np.asarray(array)
    code = _CODES.get(a.dtype.newbyteorder("=").str[1:])
    if code is None:
        raise ValueError(f"array dtype {a.dtype} has no IDX type code (use uint8, int8, int16, int32, "
                         "float32 or float64)")
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"array must have 1..255 dims, got {a.ndim}")
    body = struct.pack(">I", (code << 8) | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    body += a.astype(_TYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)
    return path


_NAMES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_ENCODERS = {"ttfs": ttfs_encode, "ttfs-code": ttfs_code_encode, "latency": latency_encode, "rate": rate_encode}


def _find(root: Path, name: str, subdirs) -> Path:
    tried = []
    for d in (root, *(root / s for s in subdirs)):
        for cand in (name, name + ".gz", name.replace("-idx", ".idx")):
            tried.append(d / cand)
            if tried[-1].is_file():
                return tried[-1]
    raise FileNotFoundError(f"{name}[.gz] not found under {str(root)!r} (looked for {str(tried[0])!r} and "
                            f"the .gz / raw/ variants)")


class MNISTLike(Dataset):
    """MNIST-style images from IDX files, encoded as spike trains; items ``(x, label)``.

    Looks in ``root`` (and ``root/raw``, ``root/<Name>/raw`` as torchvision stores them) for
    ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]`` (``t10k-...`` for the
    test split).  Pixels are normalised to ``[0, 1]`` (``/ 255``) and encoded per item:

    - ``"ttfs"``: FastSNN's time-to-first-spike code (:func:`~spikescan.data.encodings.ttfs_encode`,
      ``tau_eff = 20 ms``, ``theta = 0.2``, ``dt = 1 ms``); ``num_steps`` defaults to 784 as in
      FastSNN's Table 1.
    - ``"ttfs-code"``: the same code as the FastSNN authors' code computes it
      (:func:`~spikescan.data.encodings.ttfs_code_encode`: spikes on steps 16-98);
      ``num_steps`` defaults to their 100.
    - ``"latency"``: :func:`~spikescan.data.encodings.latency_encode`.
    - ``"rate"``: :func:`~spikescan.data.encodings.rate_encode` (drawn from torch's global RNG,
      which ``DataLoader`` seeds per worker).
    - ``None``: the normalised image itself, ``[784]`` or ``[1, 28, 28]``.

    ``x`` is ``[num_steps, 784]`` with ``flatten`` (default) else ``[num_steps, 1, 28, 28]``.
    ``encoding_kwargs`` go to the encoder; ``transform`` is applied to the encoded ``x``.
    """

    folder_names: tuple[str, ...] = ()
    num_classes = 10

    def __init__(self, root, train: bool = True, *, encoding: str | None = "ttfs", num_steps: int | None = None,
                 flatten: bool = True, transform: Callable | None = None, **encoding_kwargs):
        root = require_dir(root, f"{type(self).__name__} root")
        if encoding is not None and encoding not in _ENCODERS:
            raise ValueError(f"encoding must be one of {sorted(_ENCODERS)} or None, got {encoding!r}")
        if num_steps is None and encoding == "ttfs":
            num_steps = 784
        if num_steps is None and encoding == "ttfs-code":
            num_steps = TTFS_CODE_NUM_STEPS
        if encoding is not None and num_steps is None:
            raise ValueError(f"num_steps is required for encoding={encoding!r}")
        subdirs = ["raw", *(f"{n}/raw" for n in self.folder_names), *self.folder_names]
        img_name, lbl_name = _NAMES[bool(train)]
        self.images_path = _find(root, img_name, subdirs)
        self.labels_path = _find(root, lbl_name, subdirs)
        images = read_idx(self.images_path, IMAGES_MAGIC)
        labels = read_idx(self.labels_path, LABELS_MAGIC)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(f"{str(self.images_path)!r} / {str(self.labels_path)!r}: expected uint8 data")
        if len(images) != len(labels):
            raise ValueError(f"{str(self.images_path)!r} holds {len(images)} images but "
                             f"{str(self.labels_path)!r} holds {len(labels)} labels")
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(check_labels(labels, self.num_classes, repr(str(self.labels_path))))
        self.encoding, self.num_steps, self.flatten = encoding, num_steps, bool(flatten)
        self.encoding_kwargs, self.transform = encoding_kwargs, transform
        if encoding is not None:  # fail now, not in a worker, on bad encoder arguments
            _ENCODERS[encoding](torch.zeros(1), num_steps, **encoding_kwargs)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        # float64 so that a pixel on the threshold (51 / 255 = 0.2 = theta) compares exactly
        img = self.images[i].to(torch.float64) / 255.0
        img = img.reshape(-1) if self.flatten else img.unsqueeze(0)
        if self.encoding is None:
            x = img.to(torch.float32)
        else:
            x = _ENCODERS[self.encoding](img, self.num_steps, **self.encoding_kwargs)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


class MNIST(MNISTLike):
    folder_names = ("MNIST",)


class FashionMNIST(MNISTLike):
    folder_names = ("FashionMNIST", "fashion-mnist", "fashion")
