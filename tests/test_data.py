"""kexp.data: the one registry of dataset names, the entry point, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import get_args

import pytest

from kexp.config import Config
from kexp.data import DATASETS, dataset_names, load_dataset, loader
from kexp.errors import DataError


def schema_names() -> set[str]:
    """Every `dataset.name` the config schema accepts."""
    sections = get_args(Config.model_fields["dataset"].annotation)
    return {name for section in sections for name in get_args(section.model_fields["name"].annotation)}


def test_registry_has_a_documented_loader_for_every_dataset_name():
    assert schema_names() == set(DATASETS)
    for name in DATASETS:
        doc = loader(name).__doc__
        assert "Source:" in doc and "Returns" in doc, name


def test_dataset_names_are_those_of_a_loader_sorted():
    assert dataset_names("sklearn.load_sklearn") == ("breast_cancer", "diabetes", "digits", "iris", "wine")
    assert dataset_names("keras.load_mnist", "keras.load_cifar10") == ("cifar10", "mnist")
    with pytest.raises(KeyError, match="no dataset is loaded by keras.load_nothing"):
        dataset_names("keras.load_nothing")


def test_unknown_dataset_name_lists_the_available_ones():
    with pytest.raises(DataError, match=r"dataset\.name: unknown dataset.*allowed: boston_housing, "):
        load_dataset(SimpleNamespace(name="imbd"))


def test_importing_every_data_module_does_not_import_tensorflow_or_keras():
    code = ("import sys, kexp.data.csv, kexp.data.files, kexp.data.keras, kexp.data.npz, kexp.data.sklearn; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_reading_the_dataset_names_imports_no_loader_and_not_numpy():
    code = ("import sys, kexp.config; "
            "loaded = sorted(m for m in sys.modules if m == 'numpy' or m.startswith('kexp.data.')); "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
