"""CIFAR-10 / CIFAR-100 from the "python version" pickle batches, as static or sequential input.

CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``,
each a pickled dict with ``b"data"`` (``[N, 3072]`` uint8, per row the 1024 red, then green,
then blue values of a 32 x 32 image in row-major order) and ``b"labels"``.  CIFAR-100
(``cifar-100-python/``): ``train`` and ``test`` with ``b"fine_labels"`` (100 classes) and
``b"coarse_labels"`` (20).

The pickles are read with a restricted unpickler that only rebuilds numpy arrays and plain
Python containers, so a tampered file cannot run code.  It reads what numpy 1.x and 2.x write
under every pickle protocol (0..5) from Python 2 (the official files) or Python 3.

Modes (``x`` for one sample, pixels scaled to ``[0, 1]``, optionally normalised):

- ``"image"``: ``[3, 32, 32]``;
- ``"static"``: the image repeated over ``num_steps`` steps, ``[num_steps, 3, 32, 32]`` (PSU: T = 4);
- ``"row"``: sequential CIFAR, one pixel row per step, ``[32, 96]`` (step ``r`` holds row ``r``
  of the red, then green, then blue plane); PSU uses T = 32;
- ``"column"``: one pixel column per step, ``[32, 96]``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_labels, require_dir

__all__ = ["CIFAR10", "CIFAR100", "read_cifar_batch", "write_cifar_batch"]

_MEAN = {10: (0.4914, 0.4822, 0.4465), 100: (0.5071, 0.4865, 0.4409)}
_STD = {10: (0.2470, 0.2435, 0.2616), 100: (0.2673, 0.2564, 0.2762)}
_MODES = ("image", "static", "row", "column")


class _Refused(pickle.UnpicklingError):
    pass


class _DType:
    """A pickled ``numpy.dtype(code, align, copy)`` and its ``__setstate__``, resolved to a plain dtype.

    Never handed to numpy's own ``dtype.__setstate__``: that accepts any flags, and an object
    dtype whose flags say "no objects" turns raw bytes into object pointers.  Only the type code
    (e.g. ``'u1'``, ``'f8'``, ``'S5'``) and the byte order of the state are used.
    """

    _KINDS = "biufcSU"  # bool, integers, floats, complex, fixed-size strings: no pointers inside

    def __init__(self, code, *flags):
        self.code, self.state = code, None

    def __setstate__(self, state):
        self.state = state

    def resolve(self) -> np.dtype:
        code = self.code.decode("ascii") if isinstance(self.code, bytes) else self.code
        dt = np.dtype(code) if isinstance(code, str) else None
        if dt is None or dt.kind not in self._KINDS or dt.fields is not None or dt.subdtype is not None:
            raise _Refused(f"numpy.dtype({self.code!r}): only plain numeric or string dtypes are allowed")
        st = self.state
        if st is None:
            return dt
        if not isinstance(st, tuple) or len(st) < 5 or any(v is not None for v in st[2:5]):
            raise _Refused(f"a numpy.dtype state {st!r}: only plain dtypes (no fields or subarrays) are allowed")
        order = st[1].decode("ascii") if isinstance(st[1], bytes) else st[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"a numpy.dtype byte order {st[1]!r}")
        return dt.newbyteorder(order) if order in "<>" else dt


class _PickledArray(np.ndarray):
    """What ``_reconstruct`` makes; its ``__setstate__`` takes only raw bytes of a plain dtype."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"an ndarray state of {type(state).__name__}")
        *head, dtype, fortran, data = state
        if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
            raise _Refused(f"an ndarray state with dtype {type(dtype).__name__} and data {type(data).__name__}: "
                           "only raw bytes of a plain dtype are allowed")
        super().__setstate__((*head, dtype.resolve(), fortran, data))


def _reconstruct(subtype, shape, typecode):
    """``numpy.core.multiarray._reconstruct`` (every protocol; protocol 5 only for strided arrays)."""
    if subtype is not _NDARRAY:
        raise _Refused(f"_reconstruct of {subtype!r}: only numpy.ndarray is allowed")
    return _np_reconstruct(_PickledArray, shape, typecode)


def _frombuffer(buf, dtype, shape, order, axis_order=None):
    """``numpy.core.numeric._frombuffer`` (protocol 5, contiguous arrays) for in-band bytes only."""
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, _DType):
        raise _Refused(f"_frombuffer of {type(buf).__name__} with dtype {type(dtype).__name__}")
    return _np_frombuffer(buf, dtype.resolve(), shape, order, axis_order)


def _latin1(text, encoding):
    """``_codecs.encode(text, 'latin1')``: how Python 3 writes ``bytes`` under protocols 0..2."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}: only 'latin1' of a str is allowed")
    return text.encode("latin1")


def _empty_bytes():
    """``bytes()``: how Python 3 writes ``b""`` under protocols 0..2."""
    return b""


class _NDArrayName:
    """Stands in for ``numpy.ndarray``: array pickles pass it to ``_reconstruct``, never call it."""

    def __call__(self, *args, **kwargs):
        raise _Refused("calling numpy.ndarray directly")


_NDARRAY = _NDArrayName()
_np_reconstruct = np.zeros(1).__reduce__()[0]
_np_frombuffer = np.zeros(1).__reduce_ex__(5)[0]


class _SafeUnpickler(pickle.Unpickler):
    """Only what numpy 1.x / 2.x pickles of plain arrays name (protocols 0..5, Python 2 and 3); nothing else.

    Each allowed name maps to a narrow stand-in that can do no more than rebuild an array of a
    plain dtype from raw bytes, or a bytes object.
    """

    _ALLOWED = {
        **{(f"numpy.{core}.multiarray", "_reconstruct"): _reconstruct for core in ("core", "_core")},
        **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _DType,
        ("_codecs", "encode"): _latin1,
        ("__builtin__", "bytes"): _empty_bytes,  # protocols 0..2 name builtins so (fix_imports=True)
        ("builtins", "bytes"): _empty_bytes,  # ... or so with fix_imports=False
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def read_cifar_batch(path, label_key: str = "labels", num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> ``(images [N, 3, 32, 32] uint8, labels [N] int64)``.

    Labels must be integers ``>= 0``, and below ``num_classes`` when it is given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch file not found: {str(path)!r}")
    try:
        d = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except _Refused as e:
        raise ValueError(f"{str(path)!r}: refusing to unpickle {e}: a CIFAR batch holds only numpy arrays and "
                         "plain Python values (a tampered or malicious file?)") from None
    except Exception as e:  # truncated pickles raise EOFError, UnpicklingError, ValueError, ...
        raise ValueError(f"{str(path)!r} is not a readable CIFAR python batch (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{str(path)!r}: expected a pickled dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise ValueError(f"{str(path)!r} lacks 'data' or {label_key!r}; keys: {sorted(d)}")
    data = np.asarray(d["data"])
    labels = check_labels(d[label_key], num_classes, repr(str(path)))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{str(path)!r}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{str(path)!r}: {data.shape[0]} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


def write_cifar_batch(path, images, labels, label_key: str = "labels") -> Path:
    """Write ``images`` (``[N, 3, 32, 32]`` uint8) and ``labels`` as a CIFAR python batch (tests, tools)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise ValueError(f"images must be [N, 3, 32, 32], got {list(images.shape)}")
    d = {b"batch_label": b"spikescan", b"data": images.reshape(len(images), 3072),
         label_key.encode(): [int(v) for v in labels],
         b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    path = Path(path)
    path.write_bytes(pickle.dumps(d, protocol=2))
    return path


class _CIFAR(Dataset):
    num_classes = 10
    folder = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    label_key = "labels"

    def __init__(self, root, train: bool = True, *, mode: str = "image", num_steps: int = 4,
                 normalize: bool = False, transform: Callable | None = None):
        root = require_dir(root, f"{type(self).__name__} root")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        folder = root / self.folder if (root / self.folder).is_dir() else root
        names = self.train_files if train else self.test_files
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{type(self).__name__} batch files not found in {str(folder)!r}: {missing} "
                                    f"(expected the python version, folder {self.folder!r})")
        parts = [read_cifar_batch(folder / n, self.label_key, self.num_classes) for n in names]
        self.images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        self.labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        self.mode, self.num_steps, self.normalize, self.transform = mode, num_steps, normalize, transform
        self._mean = torch.tensor(_MEAN[self.num_classes]).view(3, 1, 1)
        self._std = torch.tensor(_STD[self.num_classes]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i].to(torch.float32) / 255.0
        if self.normalize:
            img = (img - self._mean) / self._std
        if self.transform is not None:  # image-space augmentation, before the time axis is made
            img = self.transform(img)
        if self.mode == "static":
            x = img.unsqueeze(0).expand(self.num_steps, *img.shape).contiguous()
        elif self.mode == "row":
            x = img.permute(1, 0, 2).reshape(img.shape[1], -1)  # [H, C*W]
        elif self.mode == "column":
            x = img.permute(2, 0, 1).reshape(img.shape[2], -1)  # [W, C*H]
        else:
            x = img
        return x, int(self.labels[i])


class CIFAR10(_CIFAR):
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (or ``root`` itself); see the module docstring."""

    num_classes = 10
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{k}" for k in range(1, 6))
    test_files = ("test_batch",)


class CIFAR100(_CIFAR):
    """CIFAR-100 (fine labels) from ``root/cifar-100-python/`` (or ``root`` itself)."""

    num_classes = 100
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
