"""kexp.datasets: Keras-exact loaders on tiny Keras-format files, the download mirror, scikit-learn,
CSV and NPZ. Nothing here touches the network or /work/shared: every file is made in tmp_path and
downloads go to a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexp.config import (
    KERAS_DATASETS,
    SKLEARN_DATASETS,
    BostonData,
    CsvData,
    ImageData,
    ImdbData,
    NpzData,
    ReutersData,
    SklearnData,
)
from kexp.datasets import DATASETS, Data, Ragged, load_dataset
from kexp.errors import DataError


# --------------------------------------------------------------------------- fixtures and files
@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No test may reach the internet: downloads go to a closed loopback port unless a test
    starts its own mirror, and Keras' cache lives in tmp_path."""
    for name in ("KEXP_DATA_DIR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                 "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEXP_DATASETS_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


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


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server for KEXP_DATASETS_URL; `requests` lists every path asked for."""
    served = tmp_path / "mirror"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("KEXP_DATASETS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield SimpleNamespace(folder=served, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------- registry and import
def test_registry_has_a_documented_loader_for_every_dataset_name():
    assert set(DATASETS) == {*KERAS_DATASETS, *SKLEARN_DATASETS, "csv", "npz"}
    for name, loader in DATASETS.items():
        assert "Source:" in loader.__doc__ and "Returns" in loader.__doc__, name


def test_unknown_dataset_name_lists_the_available_ones():
    with pytest.raises(DataError, match=r"dataset\.name: unknown dataset.*allowed: boston_housing, "):
        load_dataset(SimpleNamespace(name="imbd"))


def test_importing_datasets_does_not_import_tensorflow_or_keras():
    code = ("import kexp.datasets, sys; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Ragged
@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-2**31, 2**31 - 1), max_size=6), max_size=8))
def test_ragged_round_trips_lists(rows):
    ragged = Ragged.from_lists(rows)
    assert ragged.to_lists() == rows
    assert len(ragged) == len(rows)
    assert ragged.lengths().tolist() == [len(row) for row in rows]
    assert ragged.values.dtype == np.int32 and ragged.row_splits.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_ragged_take_matches_indexing_the_lists(data):
    rows = data.draw(st.lists(st.lists(st.integers(0, 99), max_size=5), min_size=1, max_size=8))
    index = data.draw(st.lists(st.integers(-len(rows), len(rows) - 1), max_size=12))
    taken = Ragged.from_lists(rows).take(index)
    assert taken.to_lists() == [rows[i] for i in index]


def test_ragged_take_accepts_a_mask_and_rejects_out_of_range_rows():
    ragged = Ragged.from_lists([[1], [], [2, 3]])
    assert ragged.take(np.array([True, False, True])).to_lists() == [[1], [2, 3]]
    with pytest.raises(IndexError):
        ragged.take([3])


def test_ragged_rejects_inconsistent_row_splits():
    with pytest.raises(ValueError, match="row_splits"):
        Ragged(np.array([1, 2, 3]), np.array([0, 2]))


# --------------------------------------------------------------------------- Keras datasets: exact
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


# --------------------------------------------------------------------------- Keras datasets: where from
def test_data_dir_is_relative_to_the_config_folder(tmp_path):
    make_imdb(tmp_path / "configs" / "data")
    data = load_dataset(ImdbData(name="imdb", data_dir="data"), config_dir=tmp_path / "configs")
    assert data.source == str(tmp_path / "configs" / "data" / "imdb.npz")
    assert len(data.x_train) == 20 and len(data.x_test) == 15


def test_kexp_data_dir_is_used_without_a_checksum(tmp_path, monkeypatch):
    path = make_reuters(tmp_path / "shared")  # not Keras' file: its checksum would fail
    monkeypatch.setenv("KEXP_DATA_DIR", str(path.parent))
    data = load_dataset(ReutersData(name="reuters"))
    assert data.source == str(path)
    assert len(data.x_train) + len(data.x_test) == 30


def test_data_dir_wins_over_kexp_data_dir(tmp_path, monkeypatch):
    make_boston(tmp_path / "env")
    chosen = make_boston(tmp_path / "chosen")
    monkeypatch.setenv("KEXP_DATA_DIR", str(tmp_path / "env"))
    data = load_dataset(BostonData(name="boston_housing", data_dir=str(chosen.parent)))
    assert data.source == str(chosen)


def test_download_from_the_mirror_happens_once(tmp_path, mirror):
    path = make_imdb(mirror.folder)
    spec = ImdbData(name="imdb", num_words=20, file_hash=sha256(path))
    cache = tmp_path / "cache"
    first = load_dataset(spec, cache_dir=cache)
    second = load_dataset(spec, cache_dir=cache)
    assert mirror.requests == ["/imdb.npz"]
    assert (cache / "datasets" / "imdb.npz").read_bytes() == path.read_bytes()
    assert first.x_train.to_lists() == second.x_train.to_lists()
    local = load_dataset(ImdbData(name="imdb", num_words=20, data_dir=str(mirror.folder)))
    assert first.x_test.to_lists() == local.x_test.to_lists()


def test_download_follows_keras_home_without_cache_dir(tmp_path, mirror):
    path = make_boston(mirror.folder)
    data = load_dataset(BostonData(name="boston_housing", file_hash=sha256(path)))
    assert data.source == str(tmp_path / "keras_home" / "datasets" / "boston_housing.npz")


def test_fashion_mnist_downloads_its_four_files_into_keras_folder(tmp_path, mirror):
    arrays = make_fashion(mirror.folder)
    data = load_dataset(ImageData(name="fashion_mnist"), cache_dir=tmp_path / "cache")
    assert sorted(mirror.requests) == sorted(f"/{p.name}" for p in mirror.folder.iterdir())
    assert (tmp_path / "cache" / "datasets" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    np.testing.assert_array_equal(data.x_test, arrays["x_test"])


def test_download_with_the_wrong_checksum_is_refused(tmp_path, mirror):
    make_imdb(mirror.folder)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"dataset\.file_hash: imdb\.npz downloaded from .* has sha256 "):
        load_dataset(ImdbData(name="imdb", file_hash="0" * 64), cache_dir=cache)
    with pytest.raises(DataError, match=r"has sha256 .*not 69664113"):  # Keras' own checksum
        load_dataset(ImdbData(name="imdb"), cache_dir=cache)
    assert not (cache / "datasets" / "imdb.npz").exists()


def test_cached_copy_with_the_wrong_checksum_is_kept_and_reported(tmp_path, mirror):
    cached = make_imdb(tmp_path / "cache" / "datasets")
    with pytest.raises(DataError, match=r"the cached .*imdb\.npz has sha256 .*KEXP_DATA_DIR"):
        load_dataset(ImdbData(name="imdb"), cache_dir=tmp_path / "cache")
    assert cached.is_file() and mirror.requests == []


def test_missing_everywhere_names_both_ways_to_provide_the_file(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("KEXP_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as error:
        load_dataset(ReutersData(name="reuters"), cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert f"reuters.npz not found in {tmp_path / 'empty'} (KEXP_DATA_DIR, no such folder)" in message
    assert "HTTP 404" in message and "/reuters.npz" in message
    assert "set KEXP_DATA_DIR or dataset.data_dir" in message and "KEXP_DATASETS_URL" in message


def test_unreachable_download_without_a_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"^dataset\.name: mnist: no local folder is set .* the download "
                                        r"from http://127\.0\.0\.1:1/mnist\.npz failed \(.+\); put mnist\.npz"):
        load_dataset(ImageData(name="mnist"), cache_dir=tmp_path / "cache")


def test_a_damaged_keras_file_is_a_data_error(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "imdb.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"imdb\.npz: not a valid \.npz"):
        load_dataset(ImdbData(name="imdb", data_dir=str(folder)))
    np.savez(folder / "reuters.npz", x=np.arange(3))
    with pytest.raises(DataError, match=r"reuters\.npz: has no array y; it has: x"):
        load_dataset(ReutersData(name="reuters", data_dir=str(folder)))


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_keras_file_with_a_code_running_pickle_is_refused(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    marker = tmp_path / "ran"
    rows = object_array([[1, 2], _Payload(marker)])
    np.savez(folder / "reuters.npz", x=rows, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"reuters\.npz: cannot read: refusing to unpickle"):
        load_dataset(ReutersData(name="reuters", data_dir=str(folder)))
    assert not marker.exists()


# --------------------------------------------------------------------------- scikit-learn
def test_sklearn_split_is_stratified_and_seeded():
    spec = SklearnData(name="iris", test_split=0.2, seed=3)
    data = load_dataset(spec)
    assert data.x_train.shape == (120, 4) and data.x_test.shape == (30, 4)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    counts = {tuple(np.bincount(load_dataset(SklearnData(name="iris", seed=seed, stratify=stratify))
                                .y_test, minlength=3)) for seed in range(5) for stratify in (True, False)}
    assert (10, 10, 10) in counts and len(counts) > 1  # stratified: always 10 each; plain: not
    for seed in range(5):
        assert np.bincount(load_dataset(SklearnData(name="iris", seed=seed)).y_test).tolist() == [10] * 3
    assert data.class_names == ["setosa", "versicolor", "virginica"] and data.num_classes == 3
    np.testing.assert_array_equal(load_dataset(spec).y_train, data.y_train)
    assert data.source == "sklearn.datasets.load_iris"


def test_sklearn_feature_subsets_and_grouped_inputs_select_columns():
    full = load_dataset(SklearnData(name="iris"))
    subset = load_dataset(SklearnData(name="iris", features=["petal length (cm)", "sepal width (cm)"]))
    np.testing.assert_array_equal(subset.x_train, full.x_train[:, [2, 1]])
    assert subset.feature_names == ["petal length (cm)", "sepal width (cm)"]
    grouped = load_dataset(SklearnData(name="iris", features={
        "sepal": ["sepal length (cm)", "sepal width (cm)"], "petal": ["petal width (cm)"]}))
    assert set(grouped.x_train) == {"sepal", "petal"}
    np.testing.assert_array_equal(grouped.x_test["sepal"], full.x_test[:, :2])
    np.testing.assert_array_equal(grouped.x_test["petal"], full.x_test[:, [3]])


def test_sklearn_unknown_feature_lists_the_available_names():
    with pytest.raises(DataError, match=r"dataset\.features\.b: unknown feature \(did you mean petal "
                                        r"length \(cm\).*\?\); got 'petal lenght \(cm\)'; allowed: sepal"):
        load_dataset(SklearnData(name="iris", features={"a": ["sepal length (cm)"],
                                                        "b": ["petal lenght (cm)"]}))


@pytest.mark.parametrize("name, task, shape, classes", [
    ("diabetes", "regression", (442, 10), None), ("breast_cancer", "binary", (569, 30), 2),
    ("digits", "multiclass", (1797, 64), 10), ("wine", "multiclass", (178, 13), 3)])
def test_sklearn_datasets_have_their_task_and_size(name, task, shape, classes):
    data = load_dataset(SklearnData(name=name, test_split=0.25))
    assert data.task == task and data.num_classes == classes
    assert len(data.x_train) + len(data.x_test) == shape[0] and data.x_train.shape[1] == shape[1]
    assert data.y_train.dtype == (np.float32 if task == "regression" else np.int64)


# --------------------------------------------------------------------------- CSV
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_string_labels_become_sorted_class_ids(tmp_path):
    rows = "".join(f"{i},{i * 0.5},{['cat', 'dog', 'bird'][i % 3]}\n" for i in range(10))
    write(tmp_path / "d.csv", "a,b,label\n" + rows)
    data = load_dataset(CsvData(name="csv", path="d.csv", target="label", seed=1), config_dir=tmp_path)
    assert data.class_names == ["bird", "cat", "dog"] and data.task == "multiclass"
    assert data.num_classes == 3 and data.feature_names == ["a", "b"]
    assert len(data.x_train) == 8 and len(data.x_test) == 2 and data.x_train.dtype == np.float32
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    for (a, _), label in zip(x, y):  # each row keeps its own label
        assert data.class_names[label] == ["cat", "dog", "bird"][int(a) % 3]


def test_csv_split_is_shuffled_by_seed_and_keeps_every_row_once(tmp_path):
    write(tmp_path / "d.csv", "i,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    tests = []
    for seed in (0, 1):
        data = load_dataset(CsvData(name="csv", path="d.csv", target="y", seed=seed, test_split=0.25),
                            config_dir=tmp_path)
        rows = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]).astype(int)
        assert sorted(rows.tolist()) == list(range(20)) and len(data.x_test) == 5
        np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), rows % 2)
        tests.append(set(data.x_test[:, 0].tolist()))
    assert tests[0] != tests[1] and tests[0] != {15.0, 16.0, 17.0, 18.0, 19.0}


@pytest.mark.parametrize("values, task, dtype, classes", [
    ([0, 1, 1, 0, 1], "binary", np.int64, 2),
    ([0, 2, 1, 2, 0], "multiclass", np.int64, 3),
    ([0.5, 1.5, 2.25, 3, 4], "regression", np.float32, None),
    ([1, 2, 3, 4, 5], "regression", np.float32, None)])  # ratings 1..5: not read as class ids
def test_csv_numeric_targets_get_a_conservative_task(values, task, dtype, classes, tmp_path):
    write(tmp_path / "d.csv", "x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    data = load_dataset(CsvData(name="csv", path=str(tmp_path / "d.csv"), target="y", test_split=0.4))
    assert (data.task, data.num_classes, data.y_train.dtype) == (task, classes, dtype)
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == sorted(values)


def test_csv_test_path_keeps_rows_and_shares_class_ids(tmp_path):
    write(tmp_path / "train.csv", "f,kind\n1,b\n2,c\n3,b\n")
    write(tmp_path / "test.csv", "kind,f\na,9\nc,8\n")  # other column order, a label only in test
    data = load_dataset(CsvData(name="csv", path="train.csv", test_path="test.csv", target="kind"),
                        config_dir=tmp_path)
    assert data.class_names == ["a", "b", "c"]
    assert data.y_train.tolist() == [1, 2, 1] and data.y_test.tolist() == [0, 2]
    assert data.x_test[:, 0].tolist() == [9, 8]


def test_csv_several_targets_and_grouped_features(tmp_path):
    write(tmp_path / "d.csv", "a,b,c,kind,price\n" + "".join(
        f"{i},{i + 1},{i + 2},{'yn'[i % 2]},{i * 1.5}\n" for i in range(10)))
    data = load_dataset(CsvData(name="csv", path="d.csv", target={"kind": "kind", "price": "price"},
                                features={"left": ["a"], "right": ["c", "b"]}), config_dir=tmp_path)
    assert data.task == {"kind": "binary", "price": "regression"}
    assert data.num_classes == {"kind": 2, "price": None}
    assert data.class_names == {"kind": ["n", "y"], "price": None}
    assert data.x_train["right"].shape == (8, 2)
    np.testing.assert_array_equal(data.x_train["right"][:, 0] - data.x_train["left"][:, 0], 2)
    np.testing.assert_array_equal(data.y_train["price"], data.x_train["left"][:, 0] * 1.5)


def test_csv_bad_cell_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError, match=rf"dataset\.path: {path}: line 3, column 'b': not a finite number; got 'oops'"):
        load_dataset(CsvData(name="csv", path="d.csv", target="y"), config_dir=tmp_path)


@pytest.mark.parametrize("spec, text, match", [
    ({"target": "label"}, "a,y\n1,2\n", r"no column 'label' .*columns: a, y"),
    ({"target": "y", "test_path": "t.csv", "test_split": 0.3}, "a,y\n1,2\n", r"test_split: has no effect"),
    ({"target": "y", "features": ["a", "y"]}, "a,y\n1,2\n", r"y is also a target"),
    ({"target": "y"}, "a,y\n1,2\n3\n", r"line 3: 1 cells, but the header has 2"),
    ({"target": "y", "path": "missing.csv"}, "", r"missing\.csv: no such file"),
])
def test_csv_problems_are_data_errors(spec, text, match, tmp_path):
    write(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=match):
        load_dataset(CsvData(name="csv", **{"path": "d.csv", **spec}), config_dir=tmp_path)


# --------------------------------------------------------------------------- NPZ
def test_npz_named_arrays_with_test_part(tmp_path):
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "d.npz", feats=rng.normal(size=(6, 3)), labels=np.array([0, 1, 2, 0, 1, 2]),
             tf=rng.normal(size=(2, 3)), tl=np.array([2, 0]))
    data = load_dataset(NpzData(name="npz", path="d.npz", x="feats", y="labels", x_test="tf",
                                y_test="tl"), config_dir=tmp_path)
    assert data.x_train.shape == (6, 3) and data.x_train.dtype == np.float32
    assert data.y_test.tolist() == [2, 0] and data.task == "multiclass" and data.num_classes == 3


def test_npz_grouped_inputs_split_when_no_test_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", img=np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2),
             meta=np.arange(10.0)[:, None], y_train=np.array(["no", "yes"] * 5))
    data = load_dataset(NpzData(name="npz", path="d.npz", x={"image": "img", "meta": "meta"}, seed=2),
                        config_dir=tmp_path)
    assert len(data.y_train) == 8 and len(data.y_test) == 2
    assert data.x_train["image"].dtype == np.uint8 and data.x_train["meta"].dtype == np.float32
    rows = np.concatenate([data.x_train["meta"][:, 0], data.x_test["meta"][:, 0]]).astype(int)
    assert sorted(rows.tolist()) == list(range(10))  # every row once
    assert data.class_names == ["no", "yes"] and data.task == "binary"
    np.testing.assert_array_equal(data.x_train["image"][:, 0, 0], rows[:8] * 4)  # rows stay aligned
    np.testing.assert_array_equal(data.y_train, rows[:8] % 2)


def test_npz_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=object_array([[1], [2, 3]]), y_train=np.array([0, 1]))
    with pytest.raises(DataError, match=r"dataset\.x: .*'x_train' is a pickled \(object\) array, which is refused"):
        load_dataset(NpzData(name="npz", path="d.npz"), config_dir=tmp_path)


def test_npz_missing_array_lists_what_the_file_has(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 2)), y_train=np.zeros(4))
    with pytest.raises(DataError, match=r"dataset\.x: .*has no array 'x_train'.*; it has: inputs, y_train"):
        load_dataset(NpzData(name="npz", path="d.npz"), config_dir=tmp_path)
    with pytest.raises(DataError, match=r"has no array 'xt'"):
        load_dataset(NpzData(name="npz", path="d.npz", x="inputs", x_test="xt"), config_dir=tmp_path)


def test_npz_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=rf"dataset\.path: {tmp_path / 'nope.npz'}: no such file"):
        load_dataset(NpzData(name="npz", path="nope.npz"), config_dir=tmp_path)


# --------------------------------------------------------------------------- mnist and cifar10 vs Keras
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


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_batch_with_a_forbidden_global_is_refused(packed, tmp_path):
    batches = make_cifar_batches(np.random.default_rng(7))
    marker = tmp_path / "ran"
    batches["data_batch_3"][b"labels"] = _Payload(marker)
    folder = write_cifar_batches(batches, tmp_path / "data", packed)
    with pytest.raises(DataError, match=r"cannot read data_batch_3: refusing to unpickle pathlib"):
        load_dataset(ImageData(name="cifar10", data_dir=str(folder)))
    assert not marker.exists(), "the pickle's code ran"
