"""The config schema: defaults, overrides and every-error-at-once messages (no TensorFlow)."""

import subprocess
import sys
import textwrap

import pytest

from kexp.config import KFold, apply_overrides, load_config, validate_config
from kexp.errors import ConfigError

BASE = """
dataset: {name: boston_housing}
model:
  layers:
    - {layer: Dense, units: 8, activation: relu}
    - {layer: Dense, units: 1}
compile: {loss: mse, metrics: [mae]}
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), list(overrides))
    return info.value.problems


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, BASE, "my_exp.yaml"))
    assert config.name == "my_exp"
    assert config.seed == 0
    assert config.training.epochs == 10 and config.training.batch_size == 32
    assert config.compile.optimizer == {"name": "rmsprop"}
    assert config.compile.loss == {"name": "mse"}
    assert config.compile.metrics == [{"name": "mae"}]
    assert config.validation.scheme == "holdout" and config.validation.size == 0.2
    assert config.model.layers[0] == {"layer": "Dense", "units": 8, "activation": "relu"}


def test_string_shorthands_become_mappings(tmp_path):
    config = load_config(write(tmp_path, BASE + "training:\n  callbacks: [TerminateOnNaN]\n"),
                         ["model.layers=[Flatten, {layer: Dense, units: 1}]"])
    assert config.model.layers[0] == {"layer": "Flatten"}
    assert config.training.callbacks == [{"name": "TerminateOnNaN"}]


def test_overrides_set_nested_keys_and_parse_yaml_values(tmp_path):
    config = load_config(write(tmp_path, BASE), [
        "training.epochs=4",
        "compile.optimizer.learning_rate=0.0005",
        "model.layers.0.units=32",
        "validation={scheme: kfold, n_splits: 3}",
    ])
    assert config.training.epochs == 4
    assert config.compile.optimizer == {"name": "rmsprop", "learning_rate": 0.0005}
    assert config.model.layers[0]["units"] == 32
    assert isinstance(config.validation, KFold) and config.validation.n_splits == 3


def test_bad_override_syntax_is_reported(tmp_path):
    errors = problems(tmp_path, BASE, ["training.epochs", "model.layers.9.units=3"])
    assert any("expected KEY=VALUE" in e for e in errors)
    assert any("no list item '9'" in e for e in errors)


def test_every_problem_is_reported_at_once_with_file_and_dotted_key(tmp_path):
    errors = problems(tmp_path, """
        datset: 1
        dataset: {name: imbd}
        model: {layers: [{layer: Dense, units: 1}]}
        compile: {loss: mse}
        training: {epochs: -1, batch_size: "32", bogus: 1}
        """)
    path = str(tmp_path / "exp.yaml")
    assert all(e.startswith(path + ": ") for e in errors)
    text = "\n".join(errors)
    assert "datset: unknown key (did you mean dataset?)" in text
    assert "dataset.name: unknown" in text and "did you mean imdb?" in text and "got 'imbd'" in text
    assert "training.epochs: input should be greater than 0; got -1" in text
    assert "training.batch_size:" in text and "got '32'" in text
    assert "training.bogus: unknown key" in text and "allowed: batch_size, callbacks, epochs" in text
    assert len(errors) == 5


def test_unknown_key_inside_a_dataset_lists_that_datasets_keys(tmp_path):
    errors = problems(tmp_path, BASE.replace("{name: boston_housing}", "{name: imdb, num_wrds: 10}"))
    assert len(errors) == 1
    assert "dataset.num_wrds: unknown key (did you mean num_words?)" in errors[0]
    assert "maxlen" in errors[0] and "skip_top" in errors[0]


def test_settings_that_do_nothing_are_errors(tmp_path):
    errors = problems(tmp_path, BASE + "validation: {scheme: kfold, repeats: 3}\n")
    assert errors == [f"{tmp_path / 'exp.yaml'}: validation: repeats > 1 gives the same folds every repeat "
                      "without shuffling; set shuffle: true"]
    errors = problems(tmp_path, BASE + "validation: {scheme: holdout, seed: 3}\n")
    assert "seed has no effect when shuffle is false" in errors[0]
    errors = problems(tmp_path, BASE + "preprocessing: {multi_hot: 10, pad_sequences: {maxlen: 5}}\n")
    assert "exclude each other" in errors[0]


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("a: [1, 2\n", "invalid YAML"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("x: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e]\n",
     "expands to more than"),
])
def test_malformed_files_give_one_clear_line(tmp_path, text, expected):
    errors = problems(tmp_path, text)
    assert len(errors) == 1 and expected in errors[0], errors


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_nan_and_inf_are_rejected(tmp_path):
    errors = problems(tmp_path, BASE, ["compile.optimizer.learning_rate=.nan", "preprocessing.scale=.inf"])
    assert any("preprocessing.scale" in e for e in errors)


def test_name_cannot_be_a_path(tmp_path):
    errors = problems(tmp_path, BASE, ["name=../../etc"])
    assert "name: must be letters, digits" in errors[0]


def test_default_name_from_an_odd_file_name_is_safe(tmp_path):
    config = validate_config(load_config(write(tmp_path, BASE)).to_dict() | {"name": None},
                             default_name="../weird name")
    assert config.name == "weird_name"


def test_overrides_apply_to_raw_data_without_touching_other_keys():
    data = {"training": {"epochs": 3}, "compile": {"optimizer": "adam"}}
    apply_overrides(data, ["compile.optimizer.learning_rate=0.1"])
    assert data == {"training": {"epochs": 3}, "compile": {"optimizer": {"name": "adam", "learning_rate": 0.1}}}


def test_loading_a_config_does_not_import_tensorflow(tmp_path):
    path = write(tmp_path, BASE)
    code = f"import sys; from kexp.config import load_config; load_config({str(path)!r}); " \
           "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
