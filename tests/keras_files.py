"""Tiny dataset files in Keras' own formats (imdb.npz, reuters.npz, boston_housing.npz, mnist.npz,
Fashion-MNIST's gzipped IDX files, CIFAR-10's python batches), written to a folder, for the tests of
kexp.data's Keras loaders and file handling."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np


def object_array(rows):
    array = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        array[i] = row
    return array


def random_rows(rng, n, low=1, high=30, max_len=12):
    return [rng.integers(low, high, size=int(rng.integers(1, max_len + 1))).tolist() for _ in range(n)]


def make_imdb(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "imdb.npz"
    np.savez(path, x_train=object_array(random_rows(rng, 20)), y_train=rng.integers(0, 2, 20),
             x_test=object_array(random_rows(rng, 15)), y_test=rng.integers(0, 2, 15))
    return path


def make_reuters(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reuters.npz"
    np.savez(path, x=object_array(random_rows(rng, 30)), y=rng.integers(0, 5, 30))
    return path


def make_boston(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "boston_housing.npz"
    np.savez(path, x=rng.normal(size=(20, 13)), y=rng.uniform(5, 50, size=20))
    return path


def make_mnist(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 6, dtype=np.uint8),
             x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 4, dtype=np.uint8))
    return path


def make_fashion(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"y_train": rng.integers(0, 10, 5, dtype=np.uint8),
              "x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 3, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)}
    for name, key, header in (("train-labels-idx1-ubyte.gz", "y_train", 8),
                              ("train-images-idx3-ubyte.gz", "x_train", 16),
                              ("t10k-labels-idx1-ubyte.gz", "y_test", 8),
                              ("t10k-images-idx3-ubyte.gz", "x_test", 16)):
        (folder / name).write_bytes(gzip.compress(b"\0" * header + arrays[key].tobytes()))
    return arrays


def make_cifar_batches(rng) -> dict[str, dict]:
    """CIFAR-10 python batches (2 images each): dicts with bytes keys, as the originals unpickle
    with encoding="bytes" (protocol 4 here: Python 3's protocol 2 would wrap bytes in _codecs)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                   b"labels": rng.integers(0, 10, 2).tolist(), b"batch_label": name.encode()}
            for name in names}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_cifar_batches(batches, folder, packed):
    """Keras' CIFAR-10 python batches in `folder`: as the extracted folder, or packed as the tar.gz."""
    inner = folder / "cifar-10-batches-py"
    inner.mkdir(parents=True)
    for name, batch in batches.items():
        (inner / name).write_bytes(pickle.dumps(batch, protocol=4))
    if packed:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as archive:
            archive.add(inner, arcname="cifar-10-batches-py")
        for item in inner.iterdir():
            item.unlink()
        inner.rmdir()
    return folder


class Payload:
    """Unpickling it runs code (touches `marker`): what kexp must refuse to unpickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)
