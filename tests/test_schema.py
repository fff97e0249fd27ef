"""`kexp schema`: the config's JSON Schema for editors, the committed kexp.schema.json and the modeline
of the shipped configs."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from cli_runner import invoke

from kexp.config import read_config_file, validate_config
from kexp.errors import ConfigError
from kexp.schema import FILE_NAME, config_schema

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
MODELINE = f"# yaml-language-server: $schema=../{FILE_NAME}"

BASE = {"dataset": {"name": "iris"}, "model": {"layers": [{"layer": "Dense", "units": 3}]},
        "compile": {"loss": "sparse_categorical_crossentropy"}}


@pytest.fixture(scope="module")
def validator():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_the_schema_validates_every_shipped_config(validator, path):
    assert errors(validator, read_config_file(path)) == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_carries_the_modeline_to_the_committed_schema(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == MODELINE
    assert (path.parent / first.split("$schema=", 1)[1]).resolve() == ROOT / FILE_NAME


def test_the_schema_rejects_a_misspelled_key(validator):
    data = {**BASE, "training": {"epoch": 3}}
    with pytest.raises(ConfigError):  # as kexp itself does
        validate_config(data)
    assert errors(validator, data) == ["training: Additional properties are not allowed ('epoch' was unexpected)"]
    assert errors(validator, {**BASE, "trainig": {"epochs": 3}})  # a misspelled section too


@pytest.mark.parametrize("extra", [
    {},  # no name (the file's name), optimizer and loss by name, hold-out by default
    {"name": "x", "compile": {"optimizer": "adam", "loss": {"name": "mse"}, "metrics": ["mae", {"name": "mse"}]}},
    {"validation": {"size": 0.3, "shuffle": True}},  # a validation section without scheme is a hold-out
    {"validation": {"scheme": "kfold", "n_splits": 4}},
    {"model": {"layers": ["Flatten", {"layer": "Dense", "units": 3}]}},
    {"training": {"epochs": 2, "callbacks": ["TerminateOnNaN", {"name": "EarlyStopping", "patience": 2}]}},
])
def test_the_schema_accepts_what_kexp_accepts(validator, extra):
    data = {**BASE, **extra}
    validate_config(data)
    assert errors(validator, data) == []


@pytest.mark.parametrize("extra", [
    {"validation": {"scheme": "holdout", "n_splits": 4}},  # a K-fold key in a hold-out section
    {"validation": {"scheme": "kfold", "size": 0.2}},
    {"dataset": {"name": "imbd"}},
    {"training": {"epochs": 0}},
    {"training": {"steps_per_execution": "batch"}},
    {"preprocessing": {"labels": "onehot"}},
])
def test_the_schema_rejects_what_kexp_rejects(validator, extra):
    data = {**BASE, **extra}
    with pytest.raises(ConfigError):
        validate_config(data)
    assert errors(validator, data)


def test_the_schema_documents_defaults_and_descriptions():
    schema = config_schema()
    training = schema["$defs"]["Training"]["properties"]
    assert training["epochs"]["default"] == 10
    assert "one host round trip per epoch" in training["steps_per_execution"]["description"]
    assert schema["properties"]["training"]["default"]["batch_size"] == 32  # a section's default: its mapping
    assert schema["$defs"]["Compile"]["properties"]["optimizer"]["default"] == {"name": "rmsprop"}
    assert "fitted on the training part only" in schema["$defs"]["Preprocessing"]["properties"]["standardize"][
        "description"]


def test_the_committed_schema_file_is_what_kexp_schema_prints():
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["$schema"].startswith("https://json-schema.org/")
    assert (ROOT / FILE_NAME).read_text(encoding="utf-8") == result.stdout, (
        f"{FILE_NAME} is stale: run `kexp schema > {FILE_NAME}` after changing kexp/config.py")


def test_kexp_schema_does_not_import_tensorflow():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom kexp.cli import app\n"
            "result = CliRunner().invoke(app, ['schema'])\nassert result.exit_code == 0, result.output\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
