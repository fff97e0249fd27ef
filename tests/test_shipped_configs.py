"""Every config shipped in configs/ validates: README's quick start and examples depend on them."""

from pathlib import Path

import pytest
from cli_runner import invoke, stderr_of

from kexp.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
# Only these read data that ships offline (scikit-learn's toy sets); the others download Keras datasets.
OFFLINE = [p for p in CONFIGS if p.stem.startswith("quickstart_") or p.stem == "diabetes_two_inputs"]


def test_the_shipped_configs_are_found():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart_digits", "quickstart_breast_cancer", "diabetes_two_inputs", "boston", "mnist"} <= names
    assert len(OFFLINE) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_passes_the_schema(path):
    config = load_config(path)
    assert config.dataset.name and config.model.layers


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_passes_kexp_validate_no_data(path):
    result = invoke("validate", path, "--no-data")
    assert result.exit_code == 0, stderr_of(result)
    assert result.stdout.strip() == f"{path}: OK"


@pytest.mark.parametrize("path", OFFLINE, ids=lambda p: p.stem)
def test_offline_shipped_config_passes_kexp_validate_with_its_data(path):
    result = invoke("validate", path)
    assert result.exit_code == 0, stderr_of(result)
    assert result.stdout.strip() == f"{path}: OK"
