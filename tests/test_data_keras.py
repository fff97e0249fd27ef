"""kexp.data.keras: each Keras dataset loader gives what `keras.datasets.<name>.load_data` gives, read from
tiny Keras-format files made in tmp_path (nothing touches the network)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from keras_files import (
    make_boston,
    make_cifar_batches,
    make_fashion,
    make_imdb,
    make_mnist,
    make_reuters,
    write_cifar_batches,
)

from kexp.config import BostonData, ImageData, ImdbData, ReutersData
from kexp.data import Data, load_dataset
from kexp.errors import DataError

pytestmark = pytest.mark.usefixtures("no_downloads")


@pytest.fixture(scope="module")
def keras_datasets():
    """Keras' own dataset modules (imported once; the slow part of this file)."""
    import keras.src.datasets.boston_housing as boston_housing
    import keras.src.datasets.fashion_mnist as fashion_mnist
    import keras.src.datasets.imdb as imdb
    import keras.src.datasets.reuters as reuters

    return SimpleNamespace(imdb=imdb, reuters=reuters, boston_housing=boston_housing,
                           fashion_mnist=fashion_mnist)


def keras_load(module, monkeypatch, path, **options):
    """`keras.datasets.<name>.load_data(**options)` reading `path` instead of downloading."""
    monkeypatch.setattr(module, "get_file", lambda *args, **kwargs: str(path))
    return module.load_data(**options)


IMDB_OPTIONS = [
    {},
    {"num_words": 20},
    {"num_words": 20, "skip_top": 3},
    {"maxlen": 8},
    {"num_words": 15, "skip_top": 2, "oov_char": None},
    {"start_char": None, "index_from": 0},
    {"start_char": None, "oov_char": None, "num_words": 12},
    {"seed": 5, "num_words": 10, "maxlen": 10, "skip_top": 1, "index_from": 1, "start_char": 7},
]


def assert_same_sequences(data: Data, expected):
    (x_train, y_train), (x_test, y_test) = expected
    assert data.x_train.to_lists() == [list(row) for row in x_train]
    assert data.x_test.to_lists() == [list(row) for row in x_test]
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)


@pytest.mark.parametrize("options", IMDB_OPTIONS, ids=str)
def test_imdb_equals_keras_load_data(options, tmp_path, monkeypatch, keras_datasets):
    path = make_imdb(tmp_path / "data")
    data = load_dataset(ImdbData(name="imdb", data_dir=str(path.parent), **options))
    assert_same_sequences(data, keras_load(keras_datasets.imdb, monkeypatch, path, **options))
    assert data.task == "binary" and data.num_classes == 2 and data.y_train.dtype == np.int64
    assert data.vocab_size == max(data.x_train.values.max(), data.x_test.values.max()) + 1


@pytest.mark.parametrize("options", [*IMDB_OPTIONS, {"test_split": 0.3, "num_words": 25}], ids=str)
def test_reuters_equals_keras_load_data(options, tmp_path, monkeypatch, keras_datasets):
    path = make_reuters(tmp_path / "data")
    data = load_dataset(ReutersData(name="reuters", data_dir=str(path.parent), **options))
    assert_same_sequences(data, keras_load(keras_datasets.reuters, monkeypatch, path, **options))
    assert data.task == "multiclass" and data.num_classes == 5


@pytest.mark.parametrize("options", [{}, {"test_split": 0.35, "seed": 1}], ids=str)
def test_boston_housing_equals_keras_load_data(options, tmp_path, monkeypatch, keras_datasets):
    path = make_boston(tmp_path / "data")
    data = load_dataset(BostonData(name="boston_housing", data_dir=str(path.parent), **options))
    (x_train, y_train), (x_test, y_test) = keras_load(keras_datasets.boston_housing, monkeypatch,
                                                      path, **options)
    for ours, theirs in ((data.x_train, x_train), (data.y_train, y_train), (data.x_test, x_test),
                         (data.y_test, y_test)):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs.astype(np.float32))
    assert data.task == "regression" and data.feature_names[0] == "CRIM"


def test_fashion_mnist_equals_keras_load_data(tmp_path, monkeypatch, keras_datasets):
    folder = tmp_path / "data"
    make_fashion(folder)
    monkeypatch.setattr(keras_datasets.fashion_mnist, "get_file",
                        lambda fname, **kwargs: str(folder / fname))
    (x_train, y_train), (x_test, y_test) = keras_datasets.fashion_mnist.load_data()
    data = load_dataset(ImageData(name="fashion_mnist", data_dir=str(folder)))
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.class_names[9] == "Ankle boot"


def test_mnist_reads_the_npz_as_keras_stores_it(tmp_path):
    path = make_mnist(tmp_path / "data")
    data = load_dataset(ImageData(name="mnist", data_dir=str(path.parent)))
    with np.load(path) as f:
        np.testing.assert_array_equal(data.x_train, f["x_train"])
        np.testing.assert_array_equal(data.y_test, f["y_test"])
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.task == "multiclass" and data.num_classes == 10


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_reads_the_python_batches_channels_last(packed, tmp_path):
    batches = make_cifar_batches(np.random.default_rng(5))
    folder = write_cifar_batches(batches, tmp_path / "data", packed)
    data = load_dataset(ImageData(name="cifar10", data_dir=str(folder)))
    assert data.x_train.shape == (10, 32, 32, 3) and data.x_test.shape == (2, 32, 32, 3)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(data.x_train[0], first)
    assert data.y_train.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.y_test.tolist() == batches["test_batch"][b"labels"]


def test_imdb_maxlen_that_keeps_nothing_is_a_data_error(tmp_path):
    path = make_imdb(tmp_path / "data")
    with pytest.raises(DataError, match=r"dataset\.maxlen: .*increase"):
        load_dataset(ImdbData(name="imdb", data_dir=str(path.parent), maxlen=1))


def test_mnist_equals_keras_load_data(tmp_path, monkeypatch):
    import keras.src.datasets.mnist as keras_mnist

    path = make_mnist(tmp_path / "data")
    monkeypatch.setattr(keras_mnist, "get_file", lambda *args, **kwargs: str(path))
    (x_train, y_train), (x_test, y_test) = keras_mnist.load_data()
    data = load_dataset(ImageData(name="mnist", data_dir=str(path.parent)))
    for ours, theirs in ((data.x_train, x_train), (data.y_train, y_train), (data.x_test, x_test),
                         (data.y_test, y_test)):
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64 == data.y_test.dtype


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """Full-size CIFAR-10 python batches (Keras' loader assumes 10,000 images per batch), each batch's
    content distinct, as the original pickles: bytes keys, a numpy uint8 `data` array, list labels."""
    rng = np.random.default_rng(6)
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, 10_000).tolist(),
                 b"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * 10_000}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


def test_cifar10_equals_keras_load_data(cifar_folder, monkeypatch):
    import keras.src.datasets.cifar10 as keras_cifar10

    monkeypatch.setattr(keras_cifar10, "get_file", lambda *args, **kwargs: str(cifar_folder.parent))
    (x_train, y_train), (x_test, y_test) = keras_cifar10.load_data()
    data = load_dataset(ImageData(name="cifar10", data_dir=str(cifar_folder.parent)))
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    assert data.x_train.shape == (50_000, 32, 32, 3) and data.x_test.shape == (10_000, 32, 32, 3)
    # labels: Keras gives (n, 1) uint8; kexp gives (n,) int64 class ids, the same values in the same order
    assert y_train.shape == (50_000, 1) and y_test.shape == (10_000, 1)
    assert data.y_train.shape == (50_000,) and data.y_test.shape == (10_000,)
    assert data.y_train.dtype == np.int64 == data.y_test.dtype
    np.testing.assert_array_equal(data.y_train, y_train[:, 0])
    np.testing.assert_array_equal(data.y_test, y_test[:, 0])
