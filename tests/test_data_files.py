"""kexp.data.files: where a Keras dataset file is found (data_dir, $KEXP_DATA_DIR, Keras' cache), its
download from a loopback mirror and its checksum, and safe parsing (damaged files, pickles that would
run code). Nothing here touches the network."""

from __future__ import annotations

import numpy as np
import pytest
from keras_files import (
    Payload,
    make_boston,
    make_cifar_batches,
    make_fashion,
    make_imdb,
    make_reuters,
    object_array,
    sha256,
    write_cifar_batches,
)

from kexp.config import BostonData, ImageData, ImdbData, ReutersData
from kexp.data import load_dataset
from kexp.errors import DataError

pytestmark = pytest.mark.usefixtures("no_downloads")


# --------------------------------------------------------------------------- where a file comes from
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


# --------------------------------------------------------------------------- safe parsing
def test_a_damaged_keras_file_is_a_data_error(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "imdb.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"imdb\.npz: not a valid \.npz"):
        load_dataset(ImdbData(name="imdb", data_dir=str(folder)))
    np.savez(folder / "reuters.npz", x=np.arange(3))
    with pytest.raises(DataError, match=r"reuters\.npz: has no array y; it has: x"):
        load_dataset(ReutersData(name="reuters", data_dir=str(folder)))


def test_a_keras_file_with_a_code_running_pickle_is_refused(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    marker = tmp_path / "ran"
    rows = object_array([[1, 2], Payload(marker)])
    np.savez(folder / "reuters.npz", x=rows, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"reuters\.npz: cannot read: refusing to unpickle"):
        load_dataset(ReutersData(name="reuters", data_dir=str(folder)))
    assert not marker.exists()


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_batch_with_a_forbidden_global_is_refused(packed, tmp_path):
    batches = make_cifar_batches(np.random.default_rng(7))
    marker = tmp_path / "ran"
    batches["data_batch_3"][b"labels"] = Payload(marker)
    folder = write_cifar_batches(batches, tmp_path / "data", packed)
    with pytest.raises(DataError, match=r"cannot read data_batch_3: refusing to unpickle pathlib"):
        load_dataset(ImageData(name="cifar10", data_dir=str(folder)))
    assert not marker.exists(), "the pickle's code ran"
