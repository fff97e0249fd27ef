"""Datasets: one loader per `dataset.name`, each returning a `kexp.data.types.Data`.

`DATASETS` is the one registry of dataset names: it maps every name the config allows to its loader,
and kexp.config's schema reads its names from here. `load_dataset(spec)` is the one entry point. Every
loader has the signature `loader(spec, *, config_dir, cache_dir) -> Data` and a docstring giving its
source, shapes, dtypes and labels.

Where the data comes from, one module each:
- `keras`: imdb, reuters, boston_housing, mnist, fashion_mnist, cifar10, exactly as
  `keras.datasets.<name>.load_data(**options)` gives them; `files` finds, caches, downloads, checks
  and safely parses their files.
- `sklearn`: scikit-learn's toy datasets, shipped inside scikit-learn (no network).
- `csv`, `npz`: the user's own files, relative to the config's folder; `tables` holds what they and
  `sklearn` share (feature columns, target encoding, the test split, `dataset.positive_class`).
- `types`: `Data`, `Ragged` (integer sequences) and `take` (rows of either), also importable from here.

Every problem is a `DataError` naming the key, the file and what is wrong; a file's bad cells are all
reported at once. This module imports no loader, and not even numpy, until one is used (`Data`,
`Ragged` and `take` too are imported on first use), so that kexp.config can read the names cheaply;
nothing here imports TensorFlow or Keras until a file has to be downloaded.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from kexp.errors import DataError, close_matches

if TYPE_CHECKING:
    from kexp.data.types import Data, Loader, Ragged, take

# dataset.name -> its loader, as "module.function" in kexp.data (imported on first use)
DATASETS: dict[str, str] = {
    "boston_housing": "keras.load_boston_housing",
    "breast_cancer": "sklearn.load_sklearn",
    "cifar10": "keras.load_cifar10",
    "csv": "csv.load_csv",
    "diabetes": "sklearn.load_sklearn",
    "digits": "sklearn.load_sklearn",
    "fashion_mnist": "keras.load_fashion_mnist",
    "imdb": "keras.load_imdb",
    "iris": "sklearn.load_sklearn",
    "mnist": "keras.load_mnist",
    "npz": "npz.load_npz",
    "reuters": "keras.load_reuters",
    "wine": "sklearn.load_sklearn",
}


def dataset_names(*loaders: str) -> tuple[str, ...]:
    """The dataset names served by any of `loaders` ("sklearn.load_sklearn"), sorted."""
    names = tuple(sorted(name for name, where in DATASETS.items() if where in loaders))
    if not names:
        raise KeyError(f"no dataset is loaded by {', '.join(loaders)}")
    return names


def loader(name: str) -> Loader:
    """The loader registered for `name` (its module is imported here)."""
    module, function = DATASETS[name].rsplit(".", 1)
    return getattr(import_module(f"kexp.data.{module}"), function)


def load_dataset(spec, *, config_dir: Path | None = None, cache_dir: str | Path | None = None) -> Data:
    """Load the dataset a config's `dataset` section describes.

    `config_dir`: the folder relative paths (`path`, `test_path`, `data_dir`) start from (default:
    the working directory). `cache_dir`: Keras' cache folder for downloads (default: `$KERAS_HOME`,
    else `~/.keras`), as `keras.utils.get_file` takes it.
    """
    from kexp.config import show  # kexp.config imports this module

    if spec.name not in DATASETS:
        raise DataError(
            f"dataset.name: unknown dataset{close_matches(spec.name, DATASETS)}; got {show(spec.name)}; "
            f"allowed: {', '.join(sorted(DATASETS))}"
        )
    config_dir = Path.cwd() if config_dir is None else Path(config_dir)
    data = loader(spec.name)(spec, config_dir=config_dir, cache_dir=cache_dir)
    positive = getattr(spec, "positive_class", None)
    if positive is None:
        return data
    from kexp.data.tables import with_positive_class

    return with_positive_class(data, positive)


def __getattr__(name: str):
    """`Data`, `Ragged` and `take`, imported from kexp.data.types when first asked for (PEP 562)."""
    if name in ("Data", "Ragged", "take"):
        return getattr(import_module("kexp.data.types"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASETS", "Data", "Ragged", "dataset_names", "load_dataset", "loader", "take"]
