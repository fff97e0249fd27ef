"""The Keras datasets: imdb, reuters, boston_housing, mnist, fashion_mnist and cifar10.

Each loader gives exactly what `keras.datasets.<name>.load_data(**options)` gives (same shuffling,
offsets, filtering and split), computed with numpy on flat arrays, from the file(s) `kexp.data.files`
finds, caches or downloads and parses safely. Images stay uint8 (preprocessing scales them);
imdb/reuters sequences are `Ragged`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from kexp.config import BostonData, ImageData, ImdbData, ReutersData
from kexp.data.files import (
    CIFAR10_BATCHES,
    RemoteFile,
    cache_root,
    keras_file,
    local_file,
    read_cifar_batches,
    read_idx,
    read_keras_npz,
)
from kexp.data.types import Data, Ragged, gather_rows
from kexp.errors import DataError

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_ORIGIN = "https://www.cs.toronto.edu/~kriz/"

BOSTON_FEATURES = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX",
                   "PTRATIO", "B", "LSTAT"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck"]
FASHION_MNIST_FILES = ["train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"


# Keras' own addresses and published sha256 (keras/src/datasets/*.py); fashion_mnist has none.
REMOTE_FILES = {
    "imdb": RemoteFile("imdb.npz", KERAS_ORIGIN,
                       "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"),
    "reuters": RemoteFile("reuters.npz", KERAS_ORIGIN,
                          "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"),
    "boston_housing": RemoteFile("boston_housing.npz", KERAS_ORIGIN,
                                 "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5"),
    "mnist": RemoteFile("mnist.npz", KERAS_ORIGIN,
                        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),
    "cifar10": RemoteFile(CIFAR10_ARCHIVE, CIFAR10_ORIGIN,
                          "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    **{f"fashion_mnist/{name}": RemoteFile(name, KERAS_ORIGIN, None, "datasets/fashion-mnist")
       for name in FASHION_MNIST_FILES},
}


def load_imdb(spec: ImdbData, *, config_dir: Path, cache_dir=None) -> Data:
    """IMDB movie reviews, labelled by sentiment (`keras.datasets.imdb.load_data`).

    Source: `imdb.npz` (object arrays `x_train`, `x_test` of word-rank lists; `y_train`, `y_test`).
    Returns Ragged int32 sequences, 25,000 train / 25,000 test (fewer with `maxlen`), each
    `[start_char] + [rank + index_from ...]` with ranks outside `[skip_top, num_words)` turned into
    `oov_char` (or dropped when it is None); labels int64 0 = negative, 1 = positive; task binary.
    As in Keras, `num_words: null` means the largest id over train and test, so that id itself
    becomes `oov_char`.
    """
    path = keras_file(spec, REMOTE_FILES["imdb"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = read_keras_npz(path, ("x_train", "y_train", "x_test", "y_test"), key, pickled=True)
    rng = np.random.RandomState(spec.seed)
    xs, ys = [], []
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):  # one generator, train first
        x, y = _pair(arrays, x_key, y_key, path, key)
        order = np.arange(len(x))
        rng.shuffle(order)
        xs.append(x[order])
        ys.append(y[order])
    x, y, kept, vocab_size = _encode_sequences(xs, np.concatenate(ys), spec, path, key)
    n_train = int(kept[: len(xs[0])].sum())
    if n_train == 0 or n_train == len(y):
        raise DataError(
            f"dataset.maxlen: no sequence shorter than maxlen={spec.maxlen} is left in the "
            f"{'training' if n_train == 0 else 'test'} part; increase dataset.maxlen"
        )
    return Data(
        x_train=_rows(x, 0, n_train), y_train=y[:n_train], x_test=_rows(x, n_train, len(x)),
        y_test=y[n_train:], task="binary", num_classes=2, source=str(path), vocab_size=vocab_size,
    )


def load_reuters(spec: ReutersData, *, config_dir: Path, cache_dir=None) -> Data:
    """Reuters newswires labelled over 46 topics (`keras.datasets.reuters.load_data`).

    Source: `reuters.npz` (object array `x` of word-rank lists, `y` topics 0..45). All 11,228 are
    shuffled with `RandomState(seed)`, encoded as imdb's (start_char, index_from, maxlen, num_words,
    skip_top, oov_char), then split at `int(n * (1 - test_split))`: 8,982 / 2,246 by default.
    Returns Ragged int32 sequences, labels int64 topic ids; task multiclass, num_classes = the
    largest label in the file + 1.
    """
    path = keras_file(spec, REMOTE_FILES["reuters"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = read_keras_npz(path, ("x", "y"), key, pickled=True)
    x, y = _pair(arrays, "x", "y", path, key)
    order = np.arange(len(x))
    np.random.RandomState(spec.seed).shuffle(order)
    x, y, _, vocab_size = _encode_sequences([x[order]], y[order], spec, path, key)
    if len(y) == 0:
        raise DataError(
            f"dataset.maxlen: no sequence shorter than maxlen={spec.maxlen} is left; "
            "increase dataset.maxlen"
        )
    split = int(len(y) * (1 - spec.test_split))
    return Data(
        x_train=_rows(x, 0, split), y_train=y[:split], x_test=_rows(x, split, len(x)), y_test=y[split:],
        task="multiclass", num_classes=int(arrays["y"].max()) + 1 if arrays["y"].size else 0,
        source=str(path), vocab_size=vocab_size,
    )


def load_boston_housing(spec: BostonData, *, config_dir: Path, cache_dir=None) -> Data:
    """Boston house prices (`keras.datasets.boston_housing.load_data`).

    Source: `boston_housing.npz` (`x` 506 x 13, `y` median price in $1000s), shuffled with
    `RandomState(seed)` and split at `int(n * (1 - test_split))`: 404 / 102 by default.
    Returns x float32 (n, 13) (Keras gives float64; the values are the same), y float32; task
    regression; feature_names the 13 StatLib column names (CRIM ... LSTAT).
    """
    path = keras_file(spec, REMOTE_FILES["boston_housing"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = read_keras_npz(path, ("x", "y"), key)
    x, y = _pair(arrays, "x", "y", path, key)
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise DataError(f"{key}: {path}: x must be a 2-D array of numbers; got {x.dtype} {x.shape}")
    order = np.arange(len(x))
    np.random.RandomState(spec.seed).shuffle(order)
    x, y = x[order].astype(np.float32), y[order].astype(np.float32)
    split = int(len(x) * (1 - spec.test_split))
    return Data(
        x_train=x[:split], y_train=y[:split], x_test=x[split:], y_test=y[split:],
        task="regression", num_classes=None,
        feature_names=list(BOSTON_FEATURES) if x.shape[1] == len(BOSTON_FEATURES) else None,
        source=str(path),
    )


def load_mnist(spec: ImageData, *, config_dir: Path, cache_dir=None) -> Data:
    """MNIST handwritten digits (`keras.datasets.mnist.load_data`).

    Source: `mnist.npz` (`x_train`, `y_train`, `x_test`, `y_test`). Returns x uint8 (60000, 28, 28)
    and (10000, 28, 28), pixels 0..255; y int64 digits 0..9; task multiclass, 10 classes.
    """
    path = keras_file(spec, REMOTE_FILES["mnist"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = read_keras_npz(path, ("x_train", "y_train", "x_test", "y_test"), key)
    x_train, y_train = _pair(arrays, "x_train", "y_train", path, key)
    x_test, y_test = _pair(arrays, "x_test", "y_test", path, key)
    return Data(x_train, y_train, x_test, y_test, task="multiclass", num_classes=10, source=str(path))


def load_fashion_mnist(spec: ImageData, *, config_dir: Path, cache_dir=None) -> Data:
    """Fashion-MNIST clothing images (`keras.datasets.fashion_mnist.load_data`).

    Source: the four gzipped IDX files `train-labels-idx1-ubyte.gz`, `train-images-idx3-ubyte.gz`,
    `t10k-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz` (Keras publishes no checksum for them).
    Returns x uint8 (60000, 28, 28) and (10000, 28, 28); y int64 0..9; task multiclass, 10 classes;
    class_names T-shirt/top, Trouser, ... Ankle boot.
    """
    if spec.file_hash is not None:
        raise DataError(
            "dataset.file_hash: fashion_mnist is four files, so one checksum cannot check them; "
            "remove it"
        )
    paths = [keras_file(spec, REMOTE_FILES[f"fashion_mnist/{name}"], config_dir, cache_dir)
             for name in FASHION_MNIST_FILES]
    key = f"dataset.name: {spec.name}"
    y_train = read_idx(paths[0], 8, key).astype(np.int64)
    x_train = _images(read_idx(paths[1], 16, key), len(y_train), paths[1], key)
    y_test = read_idx(paths[2], 8, key).astype(np.int64)
    x_test = _images(read_idx(paths[3], 16, key), len(y_test), paths[3], key)
    return Data(x_train, y_train, x_test, y_test, task="multiclass", num_classes=10,
                class_names=list(FASHION_MNIST_CLASSES), source=str(paths[0].parent))


def load_cifar10(spec: ImageData, *, config_dir: Path, cache_dir=None) -> Data:
    """CIFAR-10 colour images (`keras.datasets.cifar10.load_data`).

    Source: the `cifar-10-batches-py` folder (`data_batch_1`..`5`, `test_batch`) or the
    `cifar-10-python.tar.gz` archive it comes in (read without unpacking); the download comes from
    the CIFAR home page as in Keras. Returns x uint8 (50000, 32, 32, 3) and (10000, 32, 32, 3)
    (channels last, always); y int64 0..9 of shape (n,) (Keras gives (n, 1)); task multiclass,
    10 classes; class_names airplane ... truck.
    """
    found = local_file(spec, config_dir, (CIFAR10_FOLDER, CIFAR10_ARCHIVE))
    if found is None:  # a folder Keras' own loader already unpacked
        keras_copy = cache_root(cache_dir) / "datasets" / "cifar-10-batches-py-target" / CIFAR10_FOLDER
        if all((keras_copy / name).is_file() for name in CIFAR10_BATCHES):
            found = keras_copy
    if found is None:
        found = keras_file(spec, REMOTE_FILES["cifar10"], config_dir, cache_dir)
    batches = read_cifar_batches(found, f"dataset.name: {spec.name}")
    x_train = np.concatenate([batches[name][0] for name in CIFAR10_BATCHES[:-1]])
    y_train = np.concatenate([batches[name][1] for name in CIFAR10_BATCHES[:-1]])
    x_test, y_test = batches["test_batch"]
    return Data(x_train, y_train, x_test, y_test, task="multiclass", num_classes=10,
                class_names=list(CIFAR10_CLASSES), source=str(found))


# --------------------------------------------------------------------------- reading the files
def _pair(arrays: dict, x_key: str, y_key: str, path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = arrays[x_key], arrays[y_key]
    if x.ndim == 0 or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"{key}: {path}: {x_key} {x.shape} and {y_key} {y.shape} "
            "do not match (one label per sample)"
        )
    if y.dtype.kind not in "iuf":
        raise DataError(f"{key}: {path}: {y_key} is {y.dtype}, not numbers")
    return x, (y.astype(np.int64) if y.dtype.kind in "iu" else y)


def _images(pixels: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if pixels.size != n * 28 * 28:
        raise DataError(
            f"{key}: {path}: {pixels.size} pixels is not {n} images of 28 x 28"
        )
    return pixels.reshape(n, 28, 28)


# --------------------------------------------------------------------------- sequences (imdb, reuters)
def _encode_sequences(xs: list[np.ndarray], y: np.ndarray, spec, path: Path, key: str):
    """Keras' imdb/reuters encoding of the (already shuffled) rows of `xs`, all parts together.

    Returns (Ragged, y, keep, vocab_size); `keep` marks the rows that passed the maxlen filter.
    Steps, as Keras does them: [start_char] + [w + index_from ...]; keep rows with
    len < maxlen; num_words = the largest id when not given; ids outside [skip_top, num_words)
    (start_char included) become oov_char, or are dropped when oov_char is None.
    """
    limit = np.iinfo(np.int32)
    for name in ("start_char", "oov_char", "index_from"):
        value = getattr(spec, name)
        if value is not None and not limit.min <= value <= limit.max:
            raise DataError(f"dataset.{name}: must fit in 32 bits; got {value}")
    rows = list(itertools.chain.from_iterable(xs))
    try:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        splits = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(splits[-1]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{key}: {path}: the sequences must be lists of integer word ranks ({exc})") from None
    del rows
    if spec.index_from:
        if values.size and int(values.max()) + spec.index_from > limit.max:
            raise DataError(f"dataset.index_from: {spec.index_from} pushes word ids past 32 bits")
        values += spec.index_from
    if spec.start_char is not None:
        values = np.insert(values, splits[:-1], np.int32(spec.start_char))
        splits = splits + np.arange(splits.size, dtype=np.int64)
    keep = np.ones(len(y), dtype=bool)
    if spec.maxlen:
        keep = np.diff(splits) < spec.maxlen
        if not keep.all():
            (values, splits), y = gather_rows(values, splits, np.flatnonzero(keep)), y[keep]
    num_words = spec.num_words or (int(values.max()) if values.size else 0)
    out = values >= num_words
    if spec.skip_top:
        out |= values < spec.skip_top
    if spec.oov_char is not None:
        values[out] = spec.oov_char
    else:
        kept = np.zeros(values.size + 1, dtype=np.int64)
        np.cumsum(~out, out=kept[1:])
        values, splits = values[~out], kept[splits]
    vocab_size = int(values.max()) + 1 if values.size else 0
    return Ragged(values, splits), y, keep, vocab_size


def _rows(x: Ragged, start: int, stop: int) -> Ragged:
    splits = x.row_splits[start:stop + 1]
    return Ragged(x.values[splits[0]:splits[-1]], splits - splits[0])
