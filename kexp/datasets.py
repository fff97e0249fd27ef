"""Datasets: one loader per `dataset.name`, each returning a `Data`.

`DATASETS` maps every name the config allows to its loader; `load_dataset(spec)` is the one entry
point. Every loader has the signature `loader(spec, *, config_dir, cache_dir) -> Data`.

Where the data comes from:
- The Keras datasets (imdb, reuters, boston_housing, mnist, fashion_mnist, cifar10) give exactly
  what `keras.datasets.<name>.load_data(**options)` gives (same shuffling, offsets, filtering and
  split), computed with numpy on flat arrays. Each file is looked for, in order, in
  `dataset.data_dir` (relative to the config's folder) or else `$KEXP_DATA_DIR`, read as it is
  (no checksum); then in Keras' cache (`$KERAS_HOME/datasets`, checked against the checksum); and is
  otherwise downloaded into that cache with `keras.utils.get_file` from Keras' own address, or from
  `$KEXP_DATASETS_URL` + file name when that mirror is set. `dataset.file_hash` replaces Keras'
  published checksum (sha256; 32 hex digits mean md5, as in Keras).
- scikit-learn's toy datasets ship inside scikit-learn (no network).
- `csv` and `npz` read the user's own files, relative to the config's folder.

Conventions: labels are int64 class ids for classification and float32 for regression; tabular
inputs are float32 (NaN where `dataset.missing` leaves a cell to impute), or object arrays for a
CSV input with `dataset.categorical` columns (`Data.categorical` says which; kexp.preprocessing
imputes and one-hot encodes them per fold); images stay uint8 (preprocessing scales them);
imdb/reuters sequences are `Ragged`. `dataset.positive_class` renumbers a binary target after any
loader. Every problem is a `DataError` naming the key, the file and what is wrong; a file's bad
cells are all reported at once. Nothing here imports TensorFlow or Keras until a file has to be
downloaded.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import math
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp.config import (
    BostonData,
    CsvData,
    ImageData,
    ImdbData,
    NpzData,
    ReutersData,
    SklearnData,
    show,
)
from kexp.errors import DataError, close_matches

DATA_DIR_ENV = "KEXP_DATA_DIR"
MIRROR_ENV = "KEXP_DATASETS_URL"
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_ORIGIN = "https://www.cs.toronto.edu/~kriz/"
MAX_CSV_CLASSES = 50  # integer targets 0..k-1 with k above this are read as regression

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
CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@dataclass(frozen=True)
class RemoteFile:
    """A file as Keras downloads it: its name, the folder URL it comes from and its checksum."""

    fname: str
    origin: str
    file_hash: str | None
    cache_subdir: str = "datasets"


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


# --------------------------------------------------------------------------- return types
@dataclass(eq=False)
class Ragged:
    """Integer sequences stored flat: row i is `values[row_splits[i]:row_splits[i + 1]]`."""

    values: np.ndarray  # int32, every token of every row, concatenated
    row_splits: np.ndarray  # int64, len(self) + 1 offsets, starting at 0

    def __post_init__(self):
        self.values = _int32(np.asarray(self.values).ravel())
        self.row_splits = np.asarray(self.row_splits, dtype=np.int64).ravel()
        splits = self.row_splits
        if splits.size == 0 or splits[0] != 0 or splits[-1] != self.values.size:
            raise ValueError(
                f"row_splits must start at 0 and end at len(values)={self.values.size}; "
                f"got {splits[:1].tolist()}...{splits[-1:].tolist()}"
            )
        if np.any(splits[1:] < splits[:-1]):
            raise ValueError("row_splits must not decrease")

    def __len__(self) -> int:
        return self.row_splits.size - 1

    def lengths(self) -> np.ndarray:
        """Each row's length (int64)."""
        return np.diff(self.row_splits)

    def take(self, indices) -> Ragged:
        """The rows at `indices` (integers, negatives counting from the end, or a boolean mask), in
        that order; a copy, computed without a Python loop over rows."""
        index = np.asarray(indices)
        n = len(self)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"a boolean mask needs shape ({n},); got {index.shape}")
            index = np.flatnonzero(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise IndexError(f"indices must be a 1-D list of integers; got {index.dtype} {index.shape}")
        index = index.astype(np.int64, copy=False)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        index = np.where(index < 0, index + n, index)
        return Ragged(*_gather_rows(self.values, self.row_splits, index))

    def to_lists(self) -> list[list[int]]:
        flat, splits = self.values.tolist(), self.row_splits.tolist()
        return [flat[a:b] for a, b in zip(splits[:-1], splits[1:])]

    @classmethod
    def from_lists(cls, seqs) -> Ragged:
        """From any sequence of integer sequences (lists, arrays, an object array of lists)."""
        if not hasattr(seqs, "__len__"):
            seqs = list(seqs)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        splits = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(splits[-1]))
        return cls(values, splits)


Inputs = np.ndarray | Ragged | dict[str, np.ndarray]
Targets = np.ndarray | dict[str, np.ndarray]


@dataclass(eq=False)
class Data:
    """A loaded dataset. Dict-valued fields are keyed by model input (x) or output (y) name."""

    x_train: Inputs
    y_train: Targets
    x_test: Inputs | None
    y_test: Targets | None
    task: str | dict[str, str]  # "binary" | "multiclass" | "regression", per output for dict y
    num_classes: int | None | dict[str, int | None]  # 2 for binary, None for regression
    class_names: list[str] | None | dict[str, list[str] | None] = None  # names of ids 0..k-1
    feature_names: list[str] | None = None  # tabular data: the selected columns, in input order
    source: str = ""  # the file or folder read, or e.g. "sklearn.datasets.load_digits"
    vocab_size: int | None = None  # sequences: the largest token id + 1
    # CSV inputs with `dataset.categorical` columns: input ("x" for a single one) -> positions of the
    # columns holding category strings (that input is then an object array); None: none
    categorical: dict[str, list[int]] | None = None


Loader = Callable[..., Data]


# --------------------------------------------------------------------------- entry point
def load_dataset(spec, *, config_dir: Path | None = None, cache_dir: str | Path | None = None) -> Data:
    """Load the dataset a config's `dataset` section describes.

    `config_dir`: the folder relative paths (`path`, `test_path`, `data_dir`) start from (default:
    the working directory). `cache_dir`: Keras' cache folder for downloads (default: `$KERAS_HOME`,
    else `~/.keras`), as `keras.utils.get_file` takes it.
    """
    loader = DATASETS.get(spec.name)
    if loader is None:
        raise DataError(
            f"dataset.name: unknown dataset{close_matches(spec.name, DATASETS)}; got {show(spec.name)}; "
            f"allowed: {', '.join(sorted(DATASETS))}"
        )
    config_dir = Path.cwd() if config_dir is None else Path(config_dir)
    data = loader(spec, config_dir=config_dir, cache_dir=cache_dir)
    positive = getattr(spec, "positive_class", None)
    return data if positive is None else _with_positive_class(data, positive)


def _with_positive_class(data: Data, positive: str | dict[str, str]) -> Data:
    """`dataset.positive_class`: the named class of a binary target becomes id 1, the other id 0
    (binary metrics such as precision, recall and AUC measure class 1)."""
    if isinstance(data.task, dict):
        if not isinstance(positive, dict):
            raise DataError(
                f"dataset.positive_class: the data has several outputs ({', '.join(data.task)}); "
                f"name the output, e.g. positive_class: {{{next(iter(data.task))}: {positive}}}"
            )
        unknown = [out for out in positive if out not in data.task]
        if unknown:
            raise DataError([
                f"dataset.positive_class.{out}: unknown output{close_matches(out, data.task)}; "
                f"allowed: {', '.join(data.task)}" for out in unknown
            ])
        names, y_train, y_test = dict(data.class_names or {}), dict(data.y_train), \
            dict(data.y_test) if data.y_test is not None else None
        for out, wanted in positive.items():
            order = _positive_order(data.task[out], names.get(out), wanted, f"dataset.positive_class.{out}")
            names[out] = [names[out][i] for i in order]
            y_train[out] = _reorder(y_train[out], order)
            if y_test is not None:
                y_test[out] = _reorder(y_test[out], order)
        data.class_names, data.y_train, data.y_test = names, y_train, y_test
        return data
    if isinstance(positive, dict):
        raise DataError(f"dataset.positive_class: the data has one output; give the class name alone; "
                        f"got {show(positive)}")
    order = _positive_order(data.task, data.class_names, positive, "dataset.positive_class")
    data.class_names = [data.class_names[i] for i in order]
    data.y_train = _reorder(data.y_train, order)
    if data.y_test is not None:
        data.y_test = _reorder(data.y_test, order)
    return data


def _positive_order(task: str, names: list[str] | None, wanted: str, key: str) -> list[int]:
    """Old class ids in their new order: [the other class, the positive class]."""
    if task != "binary" or names is None:
        if task == "regression":
            what = "is a regression target"
        elif task != "binary":
            what = f"has {len(names) if names else 'more than two'} classes"
            what += f" ({', '.join(names)})" if names else ""
        else:
            what = "holds 0/1 numbers, where 1 is the positive class already"
        raise DataError(f"{key}: applies to a target of two named classes; this target {what}; remove it")
    if wanted not in names:
        raise DataError(f"{key}: not a class of the target{close_matches(wanted, names)}; got {show(wanted)}; "
                        f"allowed: {', '.join(names)}")
    positive = names.index(wanted)
    return [1 - positive, positive]


def _reorder(y: np.ndarray, order: list[int]) -> np.ndarray:
    """Class ids renumbered so that old id `order[i]` becomes i."""
    new_id = np.empty(len(order), dtype=np.int64)
    new_id[np.asarray(order)] = np.arange(len(order))
    return new_id[np.asarray(y, dtype=np.int64)].astype(np.asarray(y).dtype, copy=False)


# --------------------------------------------------------------------------- Keras datasets
def load_imdb(spec: ImdbData, *, config_dir: Path, cache_dir=None) -> Data:
    """IMDB movie reviews, labelled by sentiment (`keras.datasets.imdb.load_data`).

    Source: `imdb.npz` (object arrays `x_train`, `x_test` of word-rank lists; `y_train`, `y_test`).
    Returns Ragged int32 sequences, 25,000 train / 25,000 test (fewer with `maxlen`), each
    `[start_char] + [rank + index_from ...]` with ranks outside `[skip_top, num_words)` turned into
    `oov_char` (or dropped when it is None); labels int64 0 = negative, 1 = positive; task binary.
    As in Keras, `num_words: null` means the largest id over train and test, so that id itself
    becomes `oov_char`.
    """
    path = _keras_file(spec, REMOTE_FILES["imdb"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = _read_keras_npz(path, ("x_train", "y_train", "x_test", "y_test"), key, pickled=True)
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
    path = _keras_file(spec, REMOTE_FILES["reuters"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = _read_keras_npz(path, ("x", "y"), key, pickled=True)
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
    path = _keras_file(spec, REMOTE_FILES["boston_housing"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = _read_keras_npz(path, ("x", "y"), key)
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
    path = _keras_file(spec, REMOTE_FILES["mnist"], config_dir, cache_dir)
    key = f"dataset.name: {spec.name}"
    arrays = _read_keras_npz(path, ("x_train", "y_train", "x_test", "y_test"), key)
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
    paths = [_keras_file(spec, REMOTE_FILES[f"fashion_mnist/{name}"], config_dir, cache_dir)
             for name in FASHION_MNIST_FILES]
    key = f"dataset.name: {spec.name}"
    y_train = _read_idx(paths[0], 8, key).astype(np.int64)
    x_train = _images(_read_idx(paths[1], 16, key), len(y_train), paths[1], key)
    y_test = _read_idx(paths[2], 8, key).astype(np.int64)
    x_test = _images(_read_idx(paths[3], 16, key), len(y_test), paths[3], key)
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
    found = _local_file(spec, config_dir, (CIFAR10_FOLDER, CIFAR10_ARCHIVE))
    if found is None:  # a folder Keras' own loader already unpacked
        keras_copy = _cache_root(cache_dir) / "datasets" / "cifar-10-batches-py-target" / CIFAR10_FOLDER
        if all((keras_copy / name).is_file() for name in CIFAR10_BATCHES):
            found = keras_copy
    if found is None:
        found = _keras_file(spec, REMOTE_FILES["cifar10"], config_dir, cache_dir)
    batches = _read_cifar_batches(found, f"dataset.name: {spec.name}")
    x_train = np.concatenate([batches[name][0] for name in CIFAR10_BATCHES[:-1]])
    y_train = np.concatenate([batches[name][1] for name in CIFAR10_BATCHES[:-1]])
    x_test, y_test = batches["test_batch"]
    return Data(x_train, y_train, x_test, y_test, task="multiclass", num_classes=10,
                class_names=list(CIFAR10_CLASSES), source=str(found))


# --------------------------------------------------------------------------- scikit-learn
SKLEARN_TASKS = {"breast_cancer": "binary", "diabetes": "regression", "digits": "multiclass",
                 "iris": "multiclass", "wine": "multiclass"}


def load_sklearn(spec: SklearnData, *, config_dir: Path, cache_dir=None) -> Data:
    """A scikit-learn toy dataset.

    Source: `sklearn.datasets.load_<name>()`, shipped inside scikit-learn (no network): digits
    1797 x 64 (10 classes), breast_cancer 569 x 30 (binary), wine 178 x 13 (3 classes), iris
    150 x 4 (3 classes), diabetes 442 x 10 (regression). Split by
    `train_test_split(test_size=test_split, random_state=seed)`, stratified for classification when
    `stratify` is true.
    Returns x float32 (n, features), or a dict of float32 arrays, one per input in `features`;
    y int64 class ids (class_names from `target_names`), or float32 for diabetes.
    """
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    bunch = getattr(sklearn.datasets, f"load_{spec.name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    names = [str(name) for name in bunch.feature_names]
    task = SKLEARN_TASKS[spec.name]
    if task == "regression":
        y, num_classes, class_names = np.asarray(bunch.target, dtype=np.float32), None, None
    else:
        y = np.asarray(bunch.target, dtype=np.int64)
        class_names = [str(name) for name in bunch.target_names]
        num_classes = len(class_names)
    selection = _select_features(spec.features, names, "dataset.features")
    stratify = y if spec.stratify and task != "regression" else None
    train, test = train_test_split(np.arange(len(y)), test_size=spec.test_split,
                                   random_state=spec.seed, stratify=stratify)
    inputs = _gather(x, selection)
    return Data(
        x_train=_take(inputs, train), y_train=y[train], x_test=_take(inputs, test), y_test=y[test],
        task=task, num_classes=num_classes, class_names=class_names,
        feature_names=_selected_names(selection, names), source=f"sklearn.datasets.load_{spec.name}",
    )


# --------------------------------------------------------------------------- CSV
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null"})  # numeric feature cells read as missing
SHOWN_LINES = 5  # line numbers shown per column in a CSV problem


def load_csv(spec: CsvData, *, config_dir: Path, cache_dir=None) -> Data:
    """A user's CSV file.

    Source: `path` (and `test_path`), relative to the config's folder, UTF-8 with a header row,
    read with the `csv` module and `delimiter`. Returns x float32 (n, features), or a dict of
    them when `features` maps input names to columns (default: every column that is not a
    target); y an array, or a dict when `target` maps output names to columns.
    Feature cells must be finite numbers, except in the `categorical` columns, whose cells are
    category strings: an input holding one is an object array (strings there, floats elsewhere)
    that `kexp.preprocessing` one-hot encodes per fold (`Data.categorical` says which columns).
    Missing cells (empty; in numeric columns also NA, N/A, NaN, null, any case) follow
    `missing`: `error` reports them; `drop` drops their rows (in the training and the test file);
    `mean` / `most_frequent` keep them as NaN (None in categorical columns) for the preprocessing
    to impute from the training part. Every bad cell of every column is found in one pass and
    reported once per column (count and first lines). Targets:
    - strings (any cell that is not a number): classification, ids in sorted order of the names
      (class_names), binary with 2 names, else multiclass;
    - numbers that are all 0 or 1: binary, int64;
    - integers that are exactly 0..k-1, 3 <= k <= 50: multiclass, int64;
    - anything else (fractions, 1..5 ratings, counts that skip values): regression, float32.
    An empty target cell is an error, or drops its row with `missing: drop` (targets are never
    imputed). The task is inferred over train and test together. Without `test_path`, the rows are
    shuffled with `seed` and `test_split` (default 0.2) of them become the test part.
    """
    if spec.test_path is not None and spec.test_split is not None:
        raise DataError("dataset.test_split: has no effect when test_path is set; remove one of them")
    if len(spec.delimiter) != 1:
        raise DataError(f"dataset.delimiter: must be one character; got {show(spec.delimiter)}")
    targets = {"": spec.target} if isinstance(spec.target, str) else dict(spec.target)
    path = _user_path(spec.path, config_dir)
    header, rows, lines = _read_csv(path, spec.delimiter, "dataset.path")
    target_columns = list(dict.fromkeys(targets.values()))
    _check_columns(target_columns, header, f"dataset.path: {path}", "dataset.target")
    default = [name for name in header if name not in target_columns]
    selection = _select_features(spec.features, header, "dataset.features", default=default)
    leaks = [name for name in _selected_names(selection, header) if name in target_columns]
    if leaks:
        raise DataError(f"dataset.features: {', '.join(leaks)} is also a target; remove it from features")
    feature_columns = list(dict.fromkeys(_selected_names(selection, header)))
    if not feature_columns:
        raise DataError(f"dataset.features: {path} has no column left to use as input besides the target")
    categorical = _check_categorical(spec.categorical, header, feature_columns, target_columns)

    def columns(key, file, head, body, numbers):
        index = {name: i for i, name in enumerate(head)}
        _check_columns(feature_columns + target_columns, head, f"{key}: {file}", "the config")
        where = f"{key}: {file}"
        parsed = {name: _feature_column([row[index[name]] for row in body], where, name, numbers,
                                        name in categorical, spec.missing)
                  for name in feature_columns}
        parsed.update({name: _target_column([row[index[name]] for row in body], where, name, numbers,
                                            spec.missing)
                       for name in target_columns})
        problems = [problem for _, _, problem in parsed.values() if problem]
        keep = np.ones(len(body), dtype=bool)
        if spec.missing == "drop":
            for _, missing, _ in parsed.values():
                keep &= ~missing
        if keep.all():
            features = {name: parsed[name][0] for name in feature_columns}
            labels = {name: parsed[name][0] for name in target_columns}
        else:
            features = {name: parsed[name][0][keep] for name in feature_columns}
            labels = {name: [cell for cell, kept in zip(parsed[name][0], keep) if kept] for name in target_columns}
        return features, labels, problems, int(keep.sum())

    train_features, train_labels, problems, n_train = columns("dataset.path", path, header, rows, lines)
    if spec.test_path is not None:
        test_path = _user_path(spec.test_path, config_dir, key="dataset.test_path")
        test_header, test_rows, test_lines = _read_csv(test_path, spec.delimiter, "dataset.test_path")
        test_features, test_labels, test_problems, _ = columns(
            "dataset.test_path", test_path, test_header, test_rows, test_lines)
        problems += test_problems
        features = {n: np.concatenate([train_features[n], test_features[n]]) for n in feature_columns}
        labels = {n: train_labels[n] + test_labels[n] for n in target_columns}
        source = f"{path}; test: {test_path}"
    else:
        features, labels, source = train_features, train_labels, str(path)
    if problems:
        raise DataError(problems)
    if rows and n_train == 0:
        raise DataError(f"dataset.missing: drop leaves no row of {path}: every row has a missing cell")
    n_total = len(next(iter(labels.values())))
    encoded = {column: _encode_cells(labels[column], column) for column in target_columns}
    inputs, kinds = _csv_inputs(features, _reindex(selection, header, feature_columns), feature_columns,
                                categorical, n_total)
    y, task, num_classes, class_names = _outputs(targets, encoded)
    if spec.test_path is not None:
        train, test = np.arange(n_train), np.arange(n_train, n_total)
    else:
        train, test = _split(n_total, spec.test_split, spec.seed, f"dataset.path: {path}")
    if len(train) == 0:
        raise DataError(f"dataset.path: {path}: has a header but no data rows")
    return Data(
        x_train=_take(inputs, train), y_train=_take(y, train),
        x_test=_take(inputs, test), y_test=_take(y, test),
        task=task, num_classes=num_classes, class_names=class_names,
        feature_names=_selected_names(selection, header), source=source, categorical=kinds,
    )


def _check_categorical(names: list[str], header: list[str], features: list[str], targets: list[str]) -> set[str]:
    """The `dataset.categorical` columns, every one a feature column."""
    problems = []
    for name in dict.fromkeys(names):
        if name in targets:
            problems.append(f"dataset.categorical: {name!r} is a target; string labels are class ids "
                            "already; remove it from dataset.categorical")
        elif name not in header:
            problems.append(f"dataset.categorical: unknown column{close_matches(name, features)}; "
                            f"got {show(name)}; allowed: {', '.join(features)}")
        elif name not in features:
            problems.append(f"dataset.categorical: {name!r} is not one of dataset.features; add it "
                            "there or remove it here")
    if problems:
        raise DataError(problems)
    return set(names)


def _lines_text(lines: list[int], word: str = "line") -> str:
    """`line 4`, `lines 2, 3, 5`, `lines 2, 3, 5, 6, 8 and 12 more`."""
    shown = ", ".join(map(str, lines[:SHOWN_LINES]))
    more = len(lines) - SHOWN_LINES
    return f"{word}{'s' if len(lines) != 1 else ''} {shown}" + (f" and {more} more" if more > 0 else "")


def _cells_text(count: int, what: str) -> str:
    """`1 missing cell`, `3 missing cells`."""
    return f"{count} {what}{'s' if count != 1 else ''}"


def _feature_column(cells: list[str], where: str, column: str, lines: list[int], categorical: bool,
                    policy: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(values, missing mask, problem) of one feature column: float64 with NaN for missing cells, or
    for a categorical column an object array of stripped strings with None for missing cells. The
    problem is one line for the column (all its bad cells), or None."""
    if categorical:
        stripped = [cell.strip() for cell in cells]
        missing = np.array([not cell for cell in stripped], dtype=bool)
        values = np.array([cell or None for cell in stripped], dtype=object)
        bad: list[int] = []
    else:
        try:  # numpy skips the whitespace around numbers
            values = np.array(cells, dtype=np.float64)
            bad_mask = ~np.isfinite(values)
            missing = np.zeros(len(cells), dtype=bool)
            if bad_mask.any():  # 'nan' cells are missing, 'inf' ones bad
                missing = np.isnan(values) & np.array([c.strip().lower() in MISSING_MARKERS for c in cells])
                bad_mask &= ~missing
        except ValueError:
            values = np.empty(len(cells), dtype=np.float64)
            missing = np.zeros(len(cells), dtype=bool)
            bad_mask = np.zeros(len(cells), dtype=bool)
            for i, cell in enumerate(cell.strip() for cell in cells):
                if cell.lower() in MISSING_MARKERS:
                    values[i], missing[i] = np.nan, True
                    continue
                try:
                    values[i] = float(cell)
                except ValueError:
                    values[i] = np.nan
                bad_mask[i] = not math.isfinite(values[i])
        bad = np.flatnonzero(bad_mask).tolist()
    parts = []
    if bad:
        first = bad[0]
        parts.append(
            f"line {lines[first]}, column {column!r}: not a finite number; got {show(cells[first])} "
            f"({_cells_text(len(bad), 'such cell')} in the column, {_lines_text([lines[i] for i in bad])})"
        )
    if policy == "error" and missing.any():
        at = [lines[i] for i in np.flatnonzero(missing)]
        marker = "empty" if categorical else "empty or NA"
        text = f"{_cells_text(len(at), 'missing cell')} ({marker}), {_lines_text(at)}"
        parts.append(text if parts else f"column {column!r}: {text}")
    if not parts:
        return values, missing, None
    hints = []
    if bad:
        hints.append(f"if {column!r} holds categories, add it to dataset.categorical")
    if policy == "error" and missing.any():
        hints.append("to drop or fill missing cells, set dataset.missing: drop, mean or most_frequent")
    return values, missing, f"{where}: {'; and '.join(parts)}; {'; '.join(hints)}"


def _target_column(cells: list[str], where: str, column: str, lines: list[int],
                   policy: str) -> tuple[list[str], np.ndarray, str | None]:
    """(stripped cells, missing mask, problem) of a target column; empty cells are missing."""
    stripped = [cell.strip() for cell in cells]
    missing = np.array([not cell for cell in stripped], dtype=bool)
    if policy == "drop" or not missing.any():
        return stripped, missing, None
    at = [lines[i] for i in np.flatnonzero(missing)]
    return stripped, missing, (
        f"{where}: column {column!r}: {_cells_text(len(at), 'empty target cell')}, {_lines_text(at)}; "
        "targets are never imputed; fill them, or set dataset.missing: drop to drop those rows"
    )


def _csv_inputs(features: dict[str, np.ndarray], selection: Selection, columns: list[str],
                categorical: set[str], n: int):
    """The inputs (an array, or a dict per input) and `Data.categorical` for them: float32 arrays, or
    object arrays where an input holds a categorical column."""
    groups = selection if isinstance(selection, dict) else {"": selection}
    inputs, kinds = {}, {}
    for group, positions in groups.items():
        names = [columns[i] for i in positions]
        cats = [i for i, name in enumerate(names) if name in categorical]
        if cats:
            array = np.empty((n, len(names)), dtype=object)
            for i, name in enumerate(names):
                array[:, i] = features[name]
            kinds[group or "x"] = cats
        else:
            array = np.empty((n, len(names)), dtype=np.float32)
            for i, name in enumerate(names):
                array[:, i] = features[name]
        inputs[group] = array
    return (inputs[""] if list(inputs) == [""] else inputs), (kinds or None)


# --------------------------------------------------------------------------- NPZ
def load_npz(spec: NpzData, *, config_dir: Path, cache_dir=None) -> Data:
    """A user's `.npz` file.

    Source: `path`, relative to the config's folder, read with `allow_pickle=False` (pickled
    object arrays are refused). Returns the arrays that `x`, `y`, `x_test`, `y_test` name (each
    an array name, or input/output name -> array name, giving dict x/y).
    Float inputs become float32; integer and bool inputs (images, token ids) keep their dtype.
    Targets follow the CSV rules (strings, 0/1, 0..k-1, else regression float32); a (n, 1) y is
    flattened, a one-hot (n, k) y becomes class ids, any other 2-D y is regression. When the file
    has none of the test arrays under their default names, or `x_test`/`y_test` are null, the rows
    are shuffled with `seed` and `test_split` (default 0.2) become the test part.
    """
    path = _user_path(spec.path, config_dir)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _read_error(path, exc, "dataset.path") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"dataset.path: {path}: is a single .npy array, not an .npz archive of named arrays")
    with archive:
        available = list(archive.files)
        use_test = _npz_has_test(spec, available, path)

        def fetch(field: str):
            names = getattr(spec, field)
            if isinstance(names, str):
                return _npz_array(archive, names, path, field, available)
            return {key: _npz_array(archive, name, path, f"{field}.{key}", available)
                    for key, name in names.items()}

        x, y = _npz_inputs(fetch("x"), "dataset.x"), fetch("y")
        x_test, y_test = (_npz_inputs(fetch("x_test"), "dataset.x_test"), fetch("y_test")) if use_test \
            else (None, None)
    _common_length({"x": x, "y": y}, path)
    x, y, problems = _npz_missing(spec.missing, x, y, "dataset.x", path)
    n_train = _common_length({"x": x, "y": y}, path)
    if use_test:
        _common_length({"x_test": x_test, "y_test": y_test}, path)
        x_test, y_test, test_problems = _npz_missing(spec.missing, x_test, y_test, "dataset.x_test", path)
        problems += test_problems
    if problems:
        raise DataError(problems)
    if n_train == 0:
        raise DataError(f"dataset.missing: drop leaves no row of {path}: every row has a missing value")
    outputs = y if isinstance(y, dict) else {"": y}
    if use_test:
        n_test = _common_length({"x_test": x_test, "y_test": y_test}, path)
        _same_shapes(x, x_test, "dataset.x_test", path)
        outputs_test = y_test if isinstance(y_test, dict) else {"": y_test}
        if set(outputs_test) != set(outputs):
            raise DataError("dataset.y_test: must name the same outputs as dataset.y")
        outputs = {key: _join(outputs[key], outputs_test[key], key, path) for key in outputs}
    encoded = {key: _encode_array(array, f"dataset.y.{key}" if key else "dataset.y")
               for key, array in outputs.items()}
    y_all, task, num_classes, class_names = _outputs({key: key for key in encoded}, encoded)
    if use_test:
        train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
        x_train = x
    else:
        train, test = _split(n_train, spec.test_split, spec.seed, f"dataset.path: {path}")
        x_train, x_test = _take(x, train), _take(x, test)
    return Data(
        x_train=x_train, y_train=_take(y_all, train), x_test=x_test, y_test=_take(y_all, test),
        task=task, num_classes=num_classes, class_names=class_names, source=str(path),
    )


def _npz_missing(policy: str, x, y, field: str, path: Path):
    """(x, y, problems) for the NaN values of float inputs under `dataset.missing`: `error` gives one
    problem per input; `drop` drops the rows; `mean` / `most_frequent` keep them for the
    preprocessing to fill (tabular (n, features) inputs only)."""
    items = x.items() if isinstance(x, dict) else [("", x)]
    holes = {key: np.isnan(array.reshape(len(array), -1)).any(axis=1)
             for key, array in items if array.dtype.kind == "f"}
    holes = {key: rows for key, rows in holes.items() if rows.any()}
    if not holes:
        return x, y, []
    problems = []
    for key, rows in holes.items():
        where = f"{field}.{key}" if key else field
        array = x[key] if key else x
        at = np.flatnonzero(rows).tolist()
        if policy == "error":
            verb = "holds" if len(at) == 1 else "hold"
            problems.append(f"{where}: {path}: {_cells_text(len(at), 'row')} {verb} missing values (NaN), "
                            f"{_lines_text(at, 'row')} (from 0); to drop or fill them, set dataset.missing: "
                            "drop, mean or most_frequent")
        elif policy != "drop" and array.ndim != 2:
            problems.append(f"dataset.missing: {policy} fills tabular (n, features) inputs; {where} has "
                            f"shape {array.shape}; use drop, or fill the NaN values in the file")
    if policy == "drop":
        keep = np.flatnonzero(~np.logical_or.reduce(list(holes.values())))
        return _take(x, keep), _take(y, keep), []
    return x, y, problems


def _npz_has_test(spec: NpzData, available: list[str], path: Path) -> bool:
    """Whether to read test arrays (True) or split the training arrays (False)."""
    # named: set to other than the default names (a resolved config, e.g. a run's config.yaml, writes the
    # defaults out; they still mean "x_test/y_test when the file has them, else split")
    named = {k for k in ("x_test", "y_test") if getattr(spec, k) != type(spec).model_fields[k].default}
    if (spec.x_test is None) != (spec.y_test is None):
        given = "x_test" if spec.y_test is None else "y_test"
        if given in named:
            raise DataError(
                f"dataset.{given}: has no effect while the other test array is null; set both or neither"
            )
        return False
    if spec.x_test is None:
        return False
    wanted = _array_names(spec.x_test) + _array_names(spec.y_test)
    missing = [name for name in wanted if name not in available]
    if missing and not named and len(missing) == len(wanted):
        return False  # default names, none of them in the file: split
    if missing:
        raise DataError(
            f"dataset.x_test/y_test: {path}: has no array {', '.join(map(repr, missing))}; it has: "
            f"{', '.join(available)}; name the test arrays, or set dataset.x_test and "
            "dataset.y_test to null to split the training arrays"
        )
    if spec.test_split is not None:
        raise DataError(
            f"dataset.test_split: has no effect: {path} has test arrays; remove it, or set "
            "dataset.x_test and dataset.y_test to null to split the training arrays"
        )
    return True


DATASETS: dict[str, Loader] = {
    "boston_housing": load_boston_housing,
    "breast_cancer": load_sklearn,
    "cifar10": load_cifar10,
    "csv": load_csv,
    "diabetes": load_sklearn,
    "digits": load_sklearn,
    "fashion_mnist": load_fashion_mnist,
    "imdb": load_imdb,
    "iris": load_sklearn,
    "mnist": load_mnist,
    "npz": load_npz,
    "reuters": load_reuters,
    "wine": load_sklearn,
}


# --------------------------------------------------------------------------- finding Keras files
def _local_folder(spec, config_dir: Path) -> tuple[Path | None, str]:
    """The folder to read Keras-format files from, and which setting named it."""
    if spec.data_dir is not None:
        folder = Path(spec.data_dir).expanduser()
        return (folder if folder.is_absolute() else config_dir / folder).absolute(), "dataset.data_dir"
    value = os.environ.get(DATA_DIR_ENV)
    if value:
        return Path(value).expanduser().absolute(), DATA_DIR_ENV
    return None, ""


def _local_file(spec, config_dir: Path, names) -> Path | None:
    folder, _ = _local_folder(spec, config_dir)
    if folder is None:
        return None
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


def _cache_root(cache_dir) -> Path:
    """Keras' cache folder as `keras.utils.get_file` resolves it (KERAS_HOME, else ~/.keras)."""
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    root = Path(os.path.expanduser(str(cache_dir)))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not os.access(root, os.W_OK):  # get_file falls back the same way
        root = Path("/tmp/.keras")
    return root


def _keras_file(spec, remote: RemoteFile, config_dir: Path, cache_dir) -> Path:
    """The local copy of a Keras dataset file: the data folder's, Keras' cache's, or a download."""
    found = _local_file(spec, config_dir, (remote.fname,))
    if found is not None:
        return found
    expected = (spec.file_hash or remote.file_hash or "").lower() or None
    where = "dataset.file_hash" if spec.file_hash else f"dataset.name: {spec.name}"
    root = _cache_root(cache_dir)
    cached = root / remote.cache_subdir / remote.fname
    if cached.is_file():
        if expected is None:
            return cached
        actual = _hash(cached, expected)
        if actual == expected:
            return cached
        # get_file would download again and, failing that, delete this copy: say so instead
        raise DataError(
            f"{where}: the cached {cached} has {_hash_name(expected)} {actual}, not {expected}; "
            f"delete it to download again, or move it to a folder and set {DATA_DIR_ENV} or "
            "dataset.data_dir to read it without a checksum"
        )
    base = os.environ.get(MIRROR_ENV) or remote.origin
    url = base if base.endswith("/") else base + "/"
    url += remote.fname
    import keras  # only here: importing it starts TensorFlow

    try:
        path = keras.utils.get_file(remote.fname, origin=url, file_hash=expected,
                                    cache_subdir=remote.cache_subdir, cache_dir=str(root))
    except Exception as exc:  # get_file raises bare Exception for network errors
        if cached.is_file() and expected is not None:
            actual = _hash(cached, expected)
            if actual != expected:
                cached.unlink(missing_ok=True)
                raise DataError(
                    f"{where}: {remote.fname} downloaded from {url} has {_hash_name(expected)} "
                    f"{actual}, not {expected}; the file is damaged or not the one expected "
                    "(if you trust it, set dataset.file_hash to its checksum)"
                ) from None
        folder, how = _local_folder(spec, config_dir)
        if folder is None:
            local = f"no local folder is set ({DATA_DIR_ENV} or dataset.data_dir)"
        else:
            missing = "" if folder.is_dir() else ", no such folder"
            local = f"{remote.fname} not found in {folder} ({how}{missing})"
        mirror = (f"or check the mirror {MIRROR_ENV}={os.environ[MIRROR_ENV]}"
                  if os.environ.get(MIRROR_ENV) else f"or set {MIRROR_ENV} to a mirror")
        raise DataError(
            f"dataset.name: {spec.name}: {local} and the download from {url} failed "
            f"({_download_reason(exc)}); put {remote.fname} in a folder and set {DATA_DIR_ENV} "
            f"or dataset.data_dir, {mirror}"
        ) from None
    return Path(path)


def _hash_name(expected: str) -> str:
    return "sha256" if len(expected) == 64 else "md5"  # as keras.utils.get_file decides


def _hash(path: Path, expected: str) -> str:
    hasher = hashlib.sha256() if len(expected) == 64 else hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _download_reason(exc: Exception) -> str:
    """get_file's `URL fetch failure on URL: CODE -- MESSAGE`, shortened to the reason."""
    text = str(exc)
    code, sep, message = text.rpartition(" -- ")
    if not sep:
        return text or type(exc).__name__
    code = code.rsplit(": ", 1)[-1]
    return f"HTTP {code} {message}" if code.isdigit() else message


# --------------------------------------------------------------------------- reading Keras files
_ALLOWED_PICKLE_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and numbers only: a crafted file cannot run code."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_keras_npz(path: Path, keys, key: str, *, pickled: bool = False) -> dict[str, np.ndarray]:
    """The named arrays of a Keras .npz; object arrays (imdb, reuters) only with `pickled`."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m[:-4] for m in archive.namelist() if m.endswith(".npy")]
            missing = [k for k in keys if k not in members]
            if missing:
                raise DataError(
                    f"{key}: {path}: has no array {', '.join(missing)}; it has: "
                    f"{', '.join(members) or 'none'} (not a Keras-format file?)"
                )
            for name in keys:
                with archive.open(name + ".npy") as raw:
                    arrays[name] = _read_npy(io.BytesIO(raw.read()), pickled)
    except DataError:
        raise
    except zipfile.BadZipFile:
        raise DataError(f"{key}: {path}: not a valid .npz (zip) file; replace it with a Keras-format copy") from None
    except Exception as exc:  # damaged members: zlib, pickle, header errors
        raise _read_error(path, exc, key) from None
    return arrays


def _read_npy(stream: io.BytesIO, pickled: bool) -> np.ndarray:
    try:
        return np.lib.format.read_array(stream, allow_pickle=False)
    except ValueError:
        if not pickled:
            raise
    stream.seek(0)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(stream)
    else:  # 2.0 and 3.0 differ only in the header's text encoding
        np.lib.format.read_array_header_2_0(stream)
    array = _ArrayUnpickler(stream).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"the pickle holds a {type(array).__name__}, not an array")
    return array


def _read_error(path: Path, exc: Exception, key: str) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{key}: {path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{key}: {path}: is a folder, not a file")
    if isinstance(exc, OSError) and exc.strerror:
        return DataError(f"{key}: {path}: cannot read: {exc.strerror}")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "allow_pickle" in text:
        text = "it holds pickled (object) arrays, which are refused; save plain numeric or string arrays"
    return DataError(f"{key}: {path}: cannot read: {text}")


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


def _read_idx(path: Path, offset: int, key: str) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = bytearray(handle.read())
    except (OSError, EOFError, ValueError) as exc:
        raise _read_error(path, exc, key) from None
    if len(data) < offset:
        raise DataError(f"{key}: {path}: too short for an IDX file")
    return np.frombuffer(data, dtype=np.uint8, offset=offset)


def _images(pixels: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if pixels.size != n * 28 * 28:
        raise DataError(
            f"{key}: {path}: {pixels.size} pixels is not {n} images of 28 x 28"
        )
    return pixels.reshape(n, 28, 28)


def _read_cifar_batches(found: Path, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 batches by name, from the unpacked folder or from the .tar.gz (read in one pass)."""
    raw: dict[str, bytes] = {}
    try:
        if found.is_dir():
            for name in CIFAR10_BATCHES:
                if (found / name).is_file():
                    raw[name] = (found / name).read_bytes()
        else:
            with tarfile.open(found, "r:*") as archive:
                for member in archive:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in CIFAR10_BATCHES:
                        raw[name] = archive.extractfile(member).read()
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise _read_error(found, exc, key) from None
    missing = [name for name in CIFAR10_BATCHES if name not in raw]
    if missing:
        raise DataError(f"{key}: {found}: has no {', '.join(missing)} (not the CIFAR-10 python version?)")
    batches = {}
    for name, data in raw.items():
        try:
            batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
            pixels = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
            images = pixels.reshape(len(pixels), 3, 32, 32).transpose(0, 2, 3, 1)
        except Exception as exc:
            raise DataError(f"{key}: {found}: cannot read {name}: {exc}") from None
        if len(images) != len(labels):
            raise DataError(f"{key}: {found}: {name} has {len(images)} images but {len(labels)} labels")
        batches[name] = (np.ascontiguousarray(images), labels)
    return batches


# --------------------------------------------------------------------------- sequences (imdb, reuters)
def _int32(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.int32:
        return values
    if values.size and values.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers; got {values.dtype}")
    if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ValueError("token ids do not fit in int32")
    return values.astype(np.int32)


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
            (values, splits), y = _gather_rows(values, splits, np.flatnonzero(keep)), y[keep]
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


def _gather_rows(values: np.ndarray, splits: np.ndarray, index: np.ndarray):
    """(values, row_splits) of the rows at `index` (valid, non-negative), without a loop per row."""
    starts = splits[index]
    lengths = splits[index + 1] - starts
    new_splits = np.zeros(index.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_splits[1:])
    positions = np.arange(new_splits[-1], dtype=np.int64) + np.repeat(starts - new_splits[:-1], lengths)
    return values[positions], new_splits


def _rows(x: Ragged, start: int, stop: int) -> Ragged:
    splits = x.row_splits[start:stop + 1]
    return Ragged(x.values[splits[0]:splits[-1]], splits - splits[0])


# --------------------------------------------------------------------------- user files
def _user_path(value: str, config_dir: Path, key: str = "dataset.path") -> Path:
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else config_dir / path).absolute()
    if not path.exists():
        raise DataError(f"{key}: {path}: no such file")
    if path.is_dir():
        raise DataError(f"{key}: {path}: is a folder, not a file")
    return path


def _read_csv(path: Path, delimiter: str, key: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number; blank lines are skipped."""
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{key}: {path}: the file is empty; a CSV needs a header row")
            header = [name.strip() for name in header]
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{key}: {path}: line {reader.line_num}: {len(row)} cells, but the header "
                        f"has {len(header)}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{key}: {path}: line {reader.line_num}: {exc}") from None
    except OSError as exc:
        raise _read_error(path, exc, key) from None
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{key}: {path}: the header repeats {', '.join(duplicates)}; names must be unique")
    return header, rows, lines


def _check_columns(wanted: list[str], header: list[str], where: str, key: str) -> None:
    missing = [name for name in wanted if name not in header]
    if missing:
        hints = "".join(close_matches(name, header) for name in missing[:1])
        raise DataError(
            f"{where}: no column {', '.join(map(repr, missing))} (named by {key}){hints}; "
            f"columns: {', '.join(header)}"
        )


def _encode_cells(cells: list[str], column: str):
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:  # a cell that is not a number: string labels
        return _encode_strings(np.array(cells))
    if not np.isfinite(values).all():
        bad = next(cell for cell, v in zip(cells, values) if not math.isfinite(v))
        raise DataError(f"dataset.target: column {column!r} holds {show(bad)}; targets must be finite")
    return _encode_numbers(values)


def _encode_strings(labels: np.ndarray):
    names, ids = np.unique(labels, return_inverse=True)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    task = "binary" if len(names) == 2 else "multiclass"
    return ids.astype(np.int64).reshape(-1), task, len(names), names


def _encode_numbers(values: np.ndarray):
    """(y, task, num_classes, class_names) for numeric targets; see load_csv for the rules."""
    if values.size and values.ndim == 1 and np.array_equal(values, np.round(values)):
        distinct = np.unique(values)
        if np.isin(distinct, (0, 1)).all():
            return values.astype(np.int64), "binary", 2, None
        k = distinct.size
        if 3 <= k <= MAX_CSV_CLASSES and distinct[0] == 0 and distinct[-1] == k - 1:
            return values.astype(np.int64), "multiclass", k, None
    return values.astype(np.float32), "regression", None, None


def _encode_array(y: np.ndarray, field: str):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind in "US":
        if y.ndim != 1:
            raise DataError(f"{field}: string labels must be 1-D; got shape {y.shape}")
        return _encode_strings(y)
    if y.dtype.kind == "b":
        return _encode_numbers(y.astype(np.float64))
    if y.dtype.kind not in "iuf":
        raise DataError(f"{field}: targets must be numbers or strings; got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{field}: holds NaN or infinite values")
    if y.ndim == 2 and y.size and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1).astype(np.int64), "multiclass", y.shape[1], None  # one-hot
    if y.ndim != 1:
        return y.astype(np.float32), "regression", None, None
    return _encode_numbers(y.astype(np.float64))


def _outputs(targets: dict[str, str], encoded: dict):
    """Assemble y/task/num_classes/class_names: plain values for one unnamed target, else dicts."""
    if list(targets) == [""]:
        return encoded[targets[""]]
    parts = {name: encoded[column] for name, column in targets.items()}
    return tuple({name: part[i] for name, part in parts.items()} for i in range(4))


def _array_names(value: str | dict[str, str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value.values())


def _npz_array(archive, name: str, path: Path, field: str, available: list[str]) -> np.ndarray:
    if name not in available:
        raise DataError(
            f"dataset.{field}: {path}: has no array {name!r}{close_matches(name, available)}; "
            f"it has: {', '.join(available) or 'none'}"
        )
    try:
        array = archive[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"dataset.{field}: {path}: array {name!r} is a pickled (object) array, which is "
                "refused (loading pickles can run code); save plain numeric or string arrays"
            ) from None
        raise _read_error(path, exc, f"dataset.{field}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _read_error(path, exc, f"dataset.{field}") from None
    if array.ndim == 0:
        raise DataError(f"dataset.{field}: {path}: array {name!r} is a single value, not one row per sample")
    return array


def _npz_inputs(x, field: str):
    def convert(array: np.ndarray, where: str) -> np.ndarray:
        if array.dtype.kind == "f":
            return array.astype(np.float32, copy=False)
        if array.dtype.kind in "iub":
            return array
        raise DataError(f"{where}: inputs must be numbers; got dtype {array.dtype}")

    if isinstance(x, dict):
        return {key: convert(array, f"{field}.{key}") for key, array in x.items()}
    return convert(x, field)


def _common_length(groups: dict, path: Path) -> int:
    lengths = {}
    for field, value in groups.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for key, array in items:
            lengths[f"{field}.{key}" if key else field] = len(array)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise DataError(f"dataset.path: {path}: the arrays have different numbers of rows: {shown}")
    return next(iter(lengths.values()))


def _same_shapes(x, x_test, field: str, path: Path) -> None:
    pairs = [(k, x[k], x_test.get(k)) for k in x] if isinstance(x, dict) else [("", x, x_test)]
    if isinstance(x, dict) and set(x) != set(x_test):
        raise DataError(f"{field}: must name the same inputs as dataset.x")
    for key, train, test in pairs:
        if train.shape[1:] != test.shape[1:]:
            raise DataError(
                f"{field}{'.' + key if key else ''}: {path}: test rows have shape {test.shape[1:]}, "
                f"training rows {train.shape[1:]}"
            )


def _join(train: np.ndarray, test: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Training and test targets as one array, so both get the same encoding."""
    train, test = (a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a for a in (train, test))
    field = f"dataset.y_test.{key}" if key else "dataset.y_test"
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"{field}: {path}: test targets have shape {test.shape[1:]}, training {train.shape[1:]}")
    if (train.dtype.kind in "US") != (test.dtype.kind in "US"):
        raise DataError(f"{field}: {path}: training and test targets must both be strings or both numbers")
    return np.concatenate([train, test])


# --------------------------------------------------------------------------- features and splits
Selection = list[int] | dict[str, list[int]]


def _select_features(features, names: list[str], key: str, default: list[str] | None = None) -> Selection:
    """Column indices for `features` (None: `default`, else every name); unknown names are errors."""
    position = {name: i for i, name in enumerate(names)}
    if features is None:
        return [position[name] for name in (names if default is None else default)]
    groups = {"": features} if isinstance(features, list) else features
    problems = []
    for group, wanted in groups.items():
        where = f"{key}.{group}" if group else key
        if not wanted:
            problems.append(f"{where}: needs at least one feature")
        for name in wanted:
            if name not in position:
                problems.append(
                    f"{where}: unknown feature{close_matches(name, names)}; got {show(name)}; "
                    f"allowed: {', '.join(names)}"
                )
    if problems:
        raise DataError(problems)
    if isinstance(features, list):
        return [position[name] for name in features]
    return {group: [position[name] for name in wanted] for group, wanted in features.items()}


def _selected_names(selection: Selection, names: list[str]) -> list[str]:
    groups = selection.values() if isinstance(selection, dict) else [selection]
    return [names[i] for group in groups for i in group]


def _reindex(selection: Selection, header: list[str], columns: list[str]) -> Selection:
    """Header positions -> positions in the matrix of `columns`."""
    where = {name: i for i, name in enumerate(columns)}
    if isinstance(selection, dict):
        return {k: [where[header[i]] for i in v] for k, v in selection.items()}
    return [where[header[i]] for i in selection]


def _gather(matrix: np.ndarray, selection: Selection):
    if isinstance(selection, dict):
        return {name: matrix[:, columns] for name, columns in selection.items()}
    if selection == list(range(matrix.shape[1])):
        return matrix
    return matrix[:, selection]


def _take(value, index: np.ndarray):
    if isinstance(value, dict):
        return {key: _take(item, index) for key, item in value.items()}
    return value.take(index) if isinstance(value, Ragged) else value[index]


def _split(n: int, test_split: float | None, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test row indices; the test part is ceil(n * test_split) rows (as scikit-learn)."""
    fraction = 0.2 if test_split is None else test_split
    n_test = math.ceil(n * fraction)
    if n_test < 1 or n_test >= n:
        raise DataError(
            f"{where}: {n} rows are too few to split off a test part of {fraction:g}; add rows "
            "or give separate test data"
        )
    order = np.random.RandomState(seed).permutation(n)
    return order[n_test:], order[:n_test]


__all__ = ["DATASETS", "Data", "Ragged", "load_dataset", "RemoteFile", "REMOTE_FILES"]
