"""Files: finding, caching and hashing Keras' dataset files, and reading them and the user's files safely.

A Keras dataset file is looked for, in order, in `dataset.data_dir` (relative to the config's folder)
or else `$KEXP_DATA_DIR`, read as it is (no checksum); then in Keras' cache (`$KERAS_HOME/datasets`,
checked against the checksum); and is otherwise downloaded into that cache with `keras.utils.get_file`
from Keras' own address, or from `$KEXP_DATASETS_URL` + file name when that mirror is set.
`dataset.file_hash` replaces Keras' published checksum (sha256; 32 hex digits mean md5, as in Keras).
Only a download imports Keras (and so TensorFlow).

Parsing never runs code: a Keras .npz is read with `allow_pickle=False`, and its object arrays (imdb,
reuters) and the CIFAR-10 batches with an unpickler that builds numpy arrays, lists and numbers only.
Every problem is a `DataError` naming the key and the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp.errors import DataError

DATA_DIR_ENV = "KEXP_DATA_DIR"
MIRROR_ENV = "KEXP_DATASETS_URL"
CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]  # the python version, training first


@dataclass(frozen=True)
class RemoteFile:
    """A file as Keras downloads it: its name, the folder URL it comes from and its checksum."""

    fname: str
    origin: str
    file_hash: str | None
    cache_subdir: str = "datasets"


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


def local_file(spec, config_dir: Path, names) -> Path | None:
    folder, _ = _local_folder(spec, config_dir)
    if folder is None:
        return None
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


def cache_root(cache_dir) -> Path:
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


def keras_file(spec, remote: RemoteFile, config_dir: Path, cache_dir) -> Path:
    """The local copy of a Keras dataset file: the data folder's, Keras' cache's, or a download."""
    found = local_file(spec, config_dir, (remote.fname,))
    if found is not None:
        return found
    expected = (spec.file_hash or remote.file_hash or "").lower() or None
    where = "dataset.file_hash" if spec.file_hash else f"dataset.name: {spec.name}"
    root = cache_root(cache_dir)
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


def read_keras_npz(path: Path, keys, key: str, *, pickled: bool = False) -> dict[str, np.ndarray]:
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
        raise read_error(path, exc, key) from None
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


def read_error(path: Path, exc: Exception, key: str) -> DataError:
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



def read_idx(path: Path, offset: int, key: str) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = bytearray(handle.read())
    except (OSError, EOFError, ValueError) as exc:
        raise read_error(path, exc, key) from None
    if len(data) < offset:
        raise DataError(f"{key}: {path}: too short for an IDX file")
    return np.frombuffer(data, dtype=np.uint8, offset=offset)



def read_cifar_batches(found: Path, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
        raise read_error(found, exc, key) from None
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


# --------------------------------------------------------------------------- user files
def user_path(value: str, config_dir: Path, key: str = "dataset.path") -> Path:
    """The user's file `value` names (relative to the config's folder): it must exist and be a file."""
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else config_dir / path).absolute()
    if not path.exists():
        raise DataError(f"{key}: {path}: no such file")
    if path.is_dir():
        raise DataError(f"{key}: {path}: is a folder, not a file")
    return path

