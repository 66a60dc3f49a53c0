import os
import pickle
import struct
import subprocess

import numpy as np
import pytest
import torch

from spikescan.data.cifar import CIFAR10, CIFAR100, read_cifar_batch, write_cifar_batch


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def c10(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    imgs = [_images(2, k) for k in range(6)]
    for k in range(5):
        write_cifar_batch(d / f"data_batch_{k + 1}", imgs[k], [k, 9])
    write_cifar_batch(d / "test_batch", imgs[5], [3, 4])
    return tmp_path, imgs


def test_batch_round_trip_and_layout(tmp_path):
    imgs = _images(3, 0)
    p = write_cifar_batch(tmp_path / "b", imgs, [1, 2, 3])
    a, y = read_cifar_batch(p)
    assert np.array_equal(a, imgs) and y.tolist() == [1, 2, 3]
    # the raw row layout: 1024 red values, then green, then blue, each row-major
    raw = pickle.loads(p.read_bytes(), encoding="bytes")[b"data"]
    assert raw[0, 1024 + 32 * 5 + 7] == imgs[0, 1, 5, 7]


def test_cifar10_modes(c10):
    root, imgs = c10
    ds = CIFAR10(root)
    assert len(ds) == 10 and [ds[i][1] for i in range(4)] == [0, 9, 1, 9]
    x, _ = ds[2]  # batch 2, first image
    ref = torch.from_numpy(imgs[1][0]).float() / 255
    assert x.shape == (3, 32, 32) and torch.equal(x, ref)
    row = CIFAR10(root, mode="row")[2][0]
    assert row.shape == (32, 96)
    assert torch.equal(row[5], torch.cat([ref[0, 5], ref[1, 5], ref[2, 5]]))
    col = CIFAR10(root, mode="column")[2][0]
    assert col.shape == (32, 96) and torch.equal(col[7], torch.cat([ref[0, :, 7], ref[1, :, 7], ref[2, :, 7]]))
    st = CIFAR10(root, train=False, mode="static", num_steps=4)[1]
    assert st[0].shape == (4, 3, 32, 32) and st[1] == 4
    assert torch.equal(st[0][3], torch.from_numpy(imgs[5][1]).float() / 255)
    n = CIFAR10(root, normalize=True)[0][0]
    assert abs(float(n[0, 0, 0]) - (imgs[0][0, 0, 0, 0] / 255 - 0.4914) / 0.2470) < 1e-5
    flip = CIFAR10(root, mode="row", transform=lambda im: im.flip(-1))[2][0]
    assert torch.equal(flip[5, :32], ref[0, 5].flip(0))


def test_cifar100(tmp_path):
    imgs = _images(3, 1)
    write_cifar_batch(tmp_path / "train", imgs, [0, 50, 99], label_key="fine_labels")
    write_cifar_batch(tmp_path / "test", imgs[:1], [7], label_key="fine_labels")
    ds = CIFAR100(tmp_path)
    assert ds.num_classes == 100 and [ds[i][1] for i in range(3)] == [0, 50, 99]
    assert len(CIFAR100(tmp_path, train=False)) == 1


def test_errors(tmp_path, c10):
    root, _ = c10
    p = root / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="data_batch_3.*truncated or corrupt"):
        CIFAR10(root)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        CIFAR10(root, train=False)
    bad = tmp_path / "evil"
    bad.write_bytes(pickle.dumps({b"data": __import__("os").getcwd}))
    with pytest.raises(ValueError, match="refusing"):
        read_cifar_batch(bad)
    wrong = write_cifar_batch(tmp_path / "w", _images(1, 0), [1], label_key="fine_labels")
    with pytest.raises(ValueError, match="'labels'"):
        read_cifar_batch(wrong)
    with pytest.raises(ValueError, match="mode"):
        CIFAR10(root, mode="diagonal")


def test_out_of_range_label_names_file_value_and_sample(c10):
    root, imgs = c10
    p = write_cifar_batch(root / "cifar-10-batches-py" / "data_batch_2", imgs[1], [4, 10])
    with pytest.raises(ValueError, match=r"data_batch_2.*\[0, 10\).*label 10 at sample 1\b"):
        CIFAR10(root)
    assert read_cifar_batch(p)[1].tolist() == [4, 10]  # no class count given: not checked
    with pytest.raises(ValueError, match=r"data_batch_2.*label 10 at sample 1\b"):
        read_cifar_batch(p, num_classes=10)
    write_cifar_batch(p, imgs[1], [4, -1])
    with pytest.raises(ValueError, match=r"data_batch_2.*label -1 at sample 1\b"):
        CIFAR10(root)


# ------------------------------------------------------------------------------ what real pickles hold
def _batch(n=3, seed=7):
    imgs = _images(n, seed)
    return imgs, imgs.reshape(n, 3072), [int(v) for v in np.arange(n) % 10]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "labels-array", "str-keys", "empty"])
def test_numpy2_pickles_of_every_protocol_load(tmp_path, protocol, layout):
    """What ``pickle.dump`` of numpy 2 writes for plain arrays (protocol 5: ``numpy._core.numeric._frombuffer``)."""
    imgs, data, labels = _batch()
    if layout == "fortran":
        data = np.asfortranarray(data)
    elif layout == "strided":  # not contiguous: pickled through _reconstruct even by protocol 5
        wide = np.zeros((3, 2 * 3072), np.uint8)
        wide[:, ::2] = data
        data = wide[:, ::2]
    elif layout == "empty":
        imgs, data, labels = imgs[:0], data[:0], []
    d = {b"batch_label": b"" if layout == "empty" else b"training batch 1 of 5", b"data": data,
         b"labels": np.asarray(labels, np.int64) if layout == "labels-array" else labels,
         b"filenames": [b"a.png"] * len(labels)}
    if layout == "str-keys":
        d = {k.decode(): v for k, v in d.items()}
    p = tmp_path / "data_batch_1"
    with open(p, "wb") as f:
        pickle.dump(d, f, protocol=protocol)
    a, y = read_cifar_batch(p, num_classes=10)
    assert np.array_equal(a, imgs) and y.tolist() == labels


def _py2(obj) -> bytes:
    """The opcodes Python 2.7's cPickle writes (protocol 2) for a CIFAR batch of numpy 1.x arrays.

    Python 2 ``str`` is bytes (SHORT_BINSTRING / BINSTRING, which ``encoding=`` decodes), and
    arrays go through ``numpy.core.multiarray._reconstruct`` with a version-1 state tuple.
    """
    def s(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v):
        if 0 <= v < 256:
            return b"K" + bytes([v])
        return b"M" + struct.pack("<H", v) if 0 <= v < 65536 else b"J" + struct.pack("<i", v)

    def save(o):
        if isinstance(o, bytes):
            return s(o)
        if isinstance(o, int):
            return i(o)
        if isinstance(o, list):
            return b"](" + b"".join(save(v) for v in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(save(k) + save(v) for k, v in o.items()) + b"u"
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8 and o.ndim == 2
        dtype = b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) \
            + i(0) + b"tb"
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R("
                + i(1) + i(o.shape[0]) + i(o.shape[1]) + b"\x86" + dtype + b"\x89" + s(o.tobytes()) + b"tb")

    return b"\x80\x02" + save(obj) + b"."


def test_python2_batches_as_the_official_files_load(tmp_path):
    imgs, data, labels = _batch(4)
    raw = _py2({b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
                b"filenames": [b"leptodactylus_pentadactylus_s_000004.png"] * 4})
    assert pickle.loads(raw, encoding="latin1")["labels"] == labels  # the hand-made opcodes are a valid pickle
    p = tmp_path / "data_batch_1"
    p.write_bytes(raw)
    a, y = read_cifar_batch(p, num_classes=10)
    assert np.array_equal(a, imgs) and y.tolist() == labels


@pytest.mark.parametrize("protocol, old, new", [
    (2, b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"),
    (5, b"\x8c\x13numpy._core.numeric", b"\x8c\x12numpy.core.numeric"),
])
def test_numpy1_module_names_load(tmp_path, protocol, old, new):
    """numpy 1.x writes the same pickles under the module ``numpy.core`` instead of ``numpy._core``."""
    import pickletools

    imgs, data, labels = _batch()
    raw = pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol)
    assert old in raw
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickletools.optimize(raw.replace(old, new)))  # optimize re-frames protocol 5
    a, y = read_cifar_batch(p)
    assert np.array_equal(a, imgs) and y.tolist() == labels


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_with_the_file_named(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = _Reduce(os.system, (f"touch {marker}",))
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _batch()[1], b"labels": evil}, protocol=protocol))
    with pytest.raises(ValueError, match=r"data_batch_1.*refusing.*(posix|os)\.system"):
        read_cifar_batch(p)
    assert not marker.exists()


@pytest.mark.parametrize("fn, args", [
    (eval, ("1",)), (exec, ("1",)), (getattr, ("", "join")), (np.load, ("x",)), (subprocess.Popen, (["true"],)),
    (np.frombuffer, (b"\0",)), (np.ndarray, ((1,), np.uint8)), (bytearray, (4,)),
])
def test_other_globals_are_refused(tmp_path, fn, args):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": _Reduce(fn, args), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"'.*/b'.*refusing"):
        read_cifar_batch(p)


def test_latin1_encode_only(tmp_path):
    import codecs

    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": _Reduce(codecs.encode, ("x", "rot13")), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"'.*/b'.*refusing.*latin1"):  # _codecs.encode: only latin1
        read_cifar_batch(p)


@pytest.mark.parametrize("protocol, code", [(2, b"X\x02\x00\x00\x00"), (5, b"\x8c\x02")])
def test_raw_bytes_never_become_object_pointers(tmp_path, protocol, code):
    """numpy's own dtype.__setstate__ takes the flags of the pickle: 'O8' with the flags of 'u1' makes an
    object array whose pointers are the file's bytes.  The dtype must be refused, not rebuilt."""
    raw = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=protocol)
    assert raw.count(code + b"u1") == 1
    p = tmp_path / "b"
    p.write_bytes(raw.replace(code + b"u1", code + b"O8"))
    with pytest.raises(ValueError, match=r"'.*/b'.*refusing.*dtype\('O8'\)"):
        read_cifar_batch(p)


@pytest.mark.parametrize("array", [np.array([1, 2], dtype=object), np.zeros(2, dtype="i4,f8"),
                                   np.zeros(2, dtype="V4"), np.zeros(2, dtype="M8[ns]")])
@pytest.mark.parametrize("protocol", [2, 5])
def test_arrays_of_other_dtypes_are_refused(tmp_path, array, protocol):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": array, b"labels": []}, protocol=protocol))
    with pytest.raises(ValueError, match=r"'.*/b'.*refusing"):
        read_cifar_batch(p)


@pytest.mark.parametrize("data", [b"", b"\x80\x05", b"not a pickle at all", bytes(range(256))])
def test_not_a_pickle_is_refused_with_the_file_named(tmp_path, data):
    p = tmp_path / "data_batch_4"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=r"data_batch_4.*(truncated or corrupt|refusing|expected a pickled dict)"):
        read_cifar_batch(p)
