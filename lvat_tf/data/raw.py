"""Readers for the canonical dataset files, with no network.

Each returns ``(x_train, y_train, x_test, y_test)`` with images uint8 NHWC and
labels int64 in [0, 10).
"""
import gzip
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

from lvat_tf.data import DataError

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TAR = "cifar-10-python.tar.gz"


def read_idx(path: str) -> np.ndarray:
    """Reads a (gzipped) IDX file: uint8 images (N, H, W) or labels (N,)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
            ndim = head[3]
            if ndim not in (1, 3):
                raise DataError(f"{path}: IDX file with {ndim} dimensions; expected 1 (labels) "
                                "or 3 (images)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({4 + len(raw_dims)} of "
                                f"{4 + 4 * ndim} bytes)")
            dims = struct.unpack(">" + "I" * ndim, raw_dims)
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def has_mnist_files(data_dir: str) -> bool:
    return bool(data_dir) and all(os.path.isfile(os.path.join(data_dir, f)) for f in MNIST_FILES)


def load_mnist_dir(data_dir: str):
    """MNIST-format IDX gz files (MNIST and Fashion-MNIST use the same names)."""
    arrays = [read_idx(os.path.join(data_dir, f)) for f in MNIST_FILES]
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, xn, yn in ((x_tr, y_tr, MNIST_FILES[0], MNIST_FILES[1]),
                         (x_te, y_te, MNIST_FILES[2], MNIST_FILES[3])):
        if x.ndim != 3:
            raise DataError(f"{os.path.join(data_dir, xn)}: expected (N, H, W) images, got "
                            f"shape {x.shape}")
        if y.ndim != 1:
            raise DataError(f"{os.path.join(data_dir, yn)}: expected (N,) labels, got shape "
                            f"{y.shape}")
        if len(x) != len(y):
            raise DataError(f"{os.path.join(data_dir, yn)}: {len(y)} labels for {len(x)} images "
                            f"in {xn}")
        if y.size and y.max() > 9:
            raise DataError(f"{os.path.join(data_dir, yn)}: labels outside 0..9 (max {y.max()})")
    return x_tr[..., None], y_tr.astype(np.int64), x_te[..., None], y_te.astype(np.int64)


def has_svhn_files(data_dir: str) -> bool:
    return bool(data_dir) and all(os.path.isfile(os.path.join(data_dir, f)) for f in SVHN_FILES)


def _read_svhn_mat(path):
    from scipy import io as sio
    try:
        m = sio.loadmat(path)
    except Exception as e:  # scipy raises several types for corrupt files
        raise DataError(f"{path}: cannot read SVHN .mat file ({e})") from None
    missing = [k for k in ("X", "y") if k not in m]
    if missing:
        raise DataError(f"{path}: no variable {missing[0]} (expected X (32, 32, 3, N) and y (N, 1))")
    if m["X"].ndim != 4 or m["X"].shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {m['X'].shape}, expected (32, 32, 3, N)")
    if m["y"].size != m["X"].shape[3]:
        raise DataError(f"{path}: y holds {m['y'].size} labels for {m['X'].shape[3]} images")
    y = m["y"].reshape(-1).astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels outside 1..10 (found {y.min()}..{y.max()}; SVHN stores "
                        "digit 0 as 10)")
    x = np.ascontiguousarray(np.transpose(m["X"], (3, 0, 1, 2))).astype(np.uint8)
    y[y == 10] = 0  # SVHN stores digit 0 as label 10 (upstream svhn.py does the same)
    return x, y


def load_svhn_dir(data_dir: str):
    x_tr, y_tr = _read_svhn_mat(os.path.join(data_dir, SVHN_FILES[0]))
    x_te, y_te = _read_svhn_mat(os.path.join(data_dir, SVHN_FILES[1]))
    return x_tr, y_tr, x_te, y_te


def has_cifar10_files(data_dir: str) -> bool:
    if not data_dir:
        return False
    return (os.path.isfile(os.path.join(data_dir, CIFAR10_DIR, "test_batch"))
            or os.path.isfile(os.path.join(data_dir, "test_batch"))
            or os.path.isfile(os.path.join(data_dir, CIFAR10_TAR)))


def _unpickle(blob: bytes, name: str):
    try:
        d = pickle.loads(blob, encoding="bytes")
    except Exception as e:  # truncated or not a pickle: many exception types
        raise DataError(f"{name}: not a CIFAR-10 python batch ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        keys = sorted(d)[:5] if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{name}: not a CIFAR-10 python batch (expected keys b'data' and "
                        f"b'labels', found {keys})")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name}: data has shape {data.shape}, expected (N, 3072)")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{name}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name}: labels outside 0..9")
    x = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int64)


def load_cifar10_dir(data_dir: str):
    """``cifar-10-batches-py/`` (or its tarball) : data_batch_1..5 and test_batch."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    blobs, paths = {}, set()
    tar_path = os.path.join(data_dir, CIFAR10_TAR)
    for base in (os.path.join(data_dir, CIFAR10_DIR), data_dir):
        if os.path.isfile(os.path.join(base, "test_batch")):
            for n in names:
                p = os.path.join(base, n)
                if not os.path.isfile(p):
                    raise DataError(f"{p}: missing CIFAR-10 batch file")
                with open(p, "rb") as f:
                    blobs[n] = f.read()
                paths.add(n)
            break
    else:
        base = data_dir
        try:
            with tarfile.open(tar_path, "r:gz") as tar:
                for n in names:
                    blobs[n] = tar.extractfile(f"{CIFAR10_DIR}/{n}").read()
        except (OSError, KeyError, EOFError, zlib.error, tarfile.TarError) as e:
            raise DataError(f"{tar_path}: cannot read CIFAR-10 tarball ({e})") from None
    where = {n: (os.path.join(base, n) if n in paths else f"{tar_path}:{CIFAR10_DIR}/{n}")
             for n in names}
    train = [_unpickle(blobs[n], where[n]) for n in names[:5]]
    x_te, y_te = _unpickle(blobs["test_batch"], where["test_batch"])
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
            x_te, y_te)
