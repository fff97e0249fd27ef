"""The config schema: defaults, overrides and every-error-at-once messages (no TensorFlow)."""

import subprocess
import sys
import textwrap

import pytest
import yaml

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
    assert "training.bogus: unknown key" in text and "allowed: batch_size, callbacks, class_weight, epochs" in text
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
    path = tmp_path / "exp.yaml"
    assert f"{path}: preprocessing.scale: input should be a finite number; got inf" in errors, errors
    assert f"{path}: compile.optimizer.learning_rate: must be a positive, finite number; got nan" in errors, errors
    assert len(errors) == 2, errors


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


# ---- issue 14: defaults as documented, list overrides, scheme switches, learning rates, merged lines
def test_validation_section_without_scheme_is_a_holdout(tmp_path):
    config = load_config(write(tmp_path, BASE + "validation: {size: 0.3, shuffle: true}\n"))
    assert config.validation.scheme == "holdout" and config.validation.size == 0.3


def test_a_key_of_the_other_scheme_says_which_scheme_it_belongs_to(tmp_path):
    errors = problems(tmp_path, BASE + "validation: {n_splits: 3}\n")
    assert errors == [(f"{tmp_path / 'exp.yaml'}: validation.n_splits: belongs to scheme kfold, not holdout; "
                       "set validation.scheme: kfold or remove it")]


def test_set_appends_inserts_and_takes_negative_indexes(tmp_path):
    config = load_config(write(tmp_path, BASE), [
        "model.layers.-1.units=2",                      # the last layer
        "model.layers.2={layer: Dense, units: 1}",      # one past the end appends
        "model.layers.+1={layer: Dropout, rate: 0.5}",  # insert before item 1
    ])
    assert [layer["layer"] for layer in config.model.layers] == ["Dense", "Dropout", "Dense", "Dense"]
    assert config.model.layers[2]["units"] == 2 and config.model.layers[3] == {"layer": "Dense", "units": 1}
    assert config.model.layers[1] == {"layer": "Dropout", "rate": 0.5}


@pytest.mark.parametrize("override, expected", [
    ("model.layers.3={layer: Dense, units: 1}", "no list item '3' (the list has 2 items)"),
    ("model.layers.-3.units=1", "no list item '-3' (the list has 2 items)"),
    ("model.layers.2.units=1", "append a whole item with model.layers.2={...}"),
    ("model.layers.+1.units=1", "+1 inserts a whole item"),
    ("model.layers.+5={layer: Dense}", "cannot insert before item 5: the list has 2 items"),
])
def test_set_list_items_out_of_range_are_reported(tmp_path, override, expected):
    errors = problems(tmp_path, BASE, [override])
    assert len(errors) == 1 and expected in errors[0], errors


def test_set_scheme_switch_drops_the_other_schemes_keys(tmp_path):
    kfold = BASE + "validation: {scheme: kfold, n_splits: 4, repeats: 2, shuffle: true}\n"
    config = load_config(write(tmp_path, kfold), ["validation.scheme=holdout"])
    assert config.validation.scheme == "holdout" and config.validation.shuffle is True
    holdout = BASE + "validation: {scheme: holdout, size: 100}\n"
    config = load_config(write(tmp_path, holdout), ["validation.scheme=kfold", "validation.n_splits=3"])
    assert isinstance(config.validation, KFold) and config.validation.n_splits == 3


@pytest.mark.parametrize("value, expected", [
    (".nan", "must be a positive, finite number; got nan"),
    (".inf", "must be a positive, finite number; got inf"),
    ("0", "must be a positive, finite number; got 0"),
    ("-0.1", "must be a positive, finite number; got -0.1"),
    ("fast", "must be a positive number or a schedule"),
])
def test_learning_rate_must_be_positive_and_finite(tmp_path, value, expected):
    errors = problems(tmp_path, BASE, [f"compile.optimizer.learning_rate={value}", "training.epochs=0"])
    assert any(e.startswith(f"{tmp_path / 'exp.yaml'}: compile.optimizer.learning_rate: {expected}")
               for e in errors), errors
    assert any("training.epochs" in e for e in errors), "reported together with the schema's errors"


def test_a_learning_rate_schedule_passes_the_schema(tmp_path):
    config = load_config(write(tmp_path, BASE), [
        ("compile.optimizer={name: adam, learning_rate: {name: ExponentialDecay, initial_learning_rate: 0.01, "
         "decay_steps: 10, decay_rate: 0.9}}")])
    assert config.compile.optimizer["learning_rate"]["name"] == "ExponentialDecay"


@pytest.mark.parametrize("override, expected", [
    ("training.steps_per_execution=epoc",
     ("training.steps_per_execution: input should be a valid integer or not an allowed value (did you mean "
      "epoch?); got 'epoc'; allowed: epoch")),
    ("validation.size=1.5", "validation.size: input should be a valid integer or less than 1; got 1.5"),
    ("compile.loss_weights=x", "compile.loss_weights: input should be a valid dictionary or a valid list; got 'x'"),
    ("validation.mode=mn", ("validation.mode: not an allowed value (did you mean min?); got 'mn'; "
                            "allowed: auto, min or max")),
])
def test_union_errors_for_one_key_are_one_line_keeping_hint_and_allowed(tmp_path, override, expected):
    errors = problems(tmp_path, BASE, [override])
    assert errors == [f"{tmp_path / 'exp.yaml'}: {expected}"]


# ---- YAML values that are not plain data (helper A1, issue 15): each one refused, exactly
@pytest.mark.parametrize("line, key, shown", [
    ("name: 2001-12-14", "name", "2001"),
    ("name: 2001-12-14t21:59:43.10-05:00", "name", "2001"),
    ("name: !!timestamp 2001-12-14", "name", "2001"),
    ("name: !!binary aGVsbG8=", "name", "hello"),
    ("name: !!set {a, b}", "name", "a"),
    ("dataset: {name: boston_housing, seed: !!set {1, 2}}", "dataset.seed", "1"),
])
def test_yaml_dates_binary_and_sets_are_refused_by_name(tmp_path, line, key, shown):
    from kexp.config import parse_yaml

    path = tmp_path / "exp.yaml"
    path.write_text(BASE.replace("dataset: {name: boston_housing}\n", "") + line + "\n"
                    + ("" if line.startswith("dataset:") else "dataset: {name: boston_housing}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (message,) = str(info.value).splitlines()
    assert message.startswith(f"{path}: {key}: not plain data (YAML binary, sets, dates and times are not "
                              "config values; quote text that looks like a date); got "), message
    assert shown in message.rpartition("; got ")[2]
    with pytest.raises(ConfigError, match=rf"^where: {key}: not plain data"):
        parse_yaml(line, "where")


@pytest.mark.parametrize("value", ["2001-12-14", "!!binary aGVsbG8=", "!!set {a, b}"])
def test_set_override_with_a_date_binary_or_set_is_refused(tmp_path, value):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=r"^--set name: \(top level\): not plain data"):
        load_config(path, [f"name={value}"])


def test_quoted_dates_are_plain_text(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(BASE + "name: '2001-12-14'\n")
    assert load_config(path).name == "2001-12-14"


def test_dump_yaml_quotes_text_the_loader_would_read_as_a_number():
    import yaml

    from kexp.config import dump_yaml, parse_yaml

    data = {"name": "1e3", "rate": 1e-3, "tags": ["2e5", 7], "text": "plain"}
    assert parse_yaml(yaml.safe_dump(data), "x")["name"] == 1000.0  # what safe_dump alone gives back
    assert parse_yaml(dump_yaml(data), "x") == data


# --------------------------------------------------------------------------- mutation-testing kills (TESTING.md)
# The config error formatter (format_errors, _merge, _section_at): whole lines, as a user reads them.

FORMATTER_BASE = {"name": "t", "dataset": {"name": "iris"}, "model": {"layers": [{"layer": "Dense", "units": 3}]},
                  "compile": {"optimizer": "adam", "loss": "mse"}}


def error_lines(tmp_path, **changes) -> list[str]:
    doc = {k: v for k, v in {**FORMATTER_BASE, **changes}.items() if v is not None}
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [line.replace(str(path), "F", 1) for line in info.value.problems]


@pytest.mark.parametrize("changes, lines", [
    ({"dataset": None}, ["F: dataset: required key is missing"]),
    ({"dataset": {"test_split": 0.2}}, ["F: dataset.name: required key is missing"]),
    ({"dataset": {"name": "irsi"}}, [
        "F: dataset.name: unknown dataset name (did you mean iris?); got 'irsi'; allowed: boston_housing, "
        "breast_cancer, cifar10, csv, diabetes, digits, fashion_mnist, imdb, iris, mnist, npz, reuters, wine"]),
    ({"validation": {"scheme": "holdout", "n_splits": 3, "bogus": 1}}, [
        "F: validation.bogus: unknown key; allowed: final, mode, monitor, scheme, seed, shuffle, size, stratify",
        "F: validation.n_splits: belongs to scheme kfold, not holdout; set validation.scheme: kfold or remove it"]),
    ({"validation": {"scheme": "kfold", "size": 3, "n_splits": 1}}, [
        "F: validation.n_splits: input should be greater than or equal to 2; got 1",
        "F: validation.size: belongs to scheme holdout, not kfold; set validation.scheme: holdout or remove it"]),
    ({"name": [1]}, ["F: name: input should be a valid string; got [1]"]),
    ({"name": "../x"}, ["F: name: must be letters, digits, '.', '_' or '-' (no paths), at most 100 characters; "
                        "got '../x'"]),
    ({"validation": {"scheme": "holdout", "size": "abc"}}, [
        "F: validation.size: input should be a valid integer or a valid number; got 'abc'"]),
    ({"training": {"steps_per_execution": "epochs"}}, [
        "F: training.steps_per_execution: input should be a valid integer or not an allowed value (did you mean "
        "epoch?); got 'epochs'; allowed: epoch"]),
    ({"training": {"steps_per_execution": 0}}, [
        "F: training.steps_per_execution: input should be greater than 0 or not an allowed value; got 0; "
        "allowed: epoch"]),
    ({"compile": {"optimizer": "adam", "loss": "mse", "metrics": {"a": 1}}}, [
        "F: compile.metrics: input should be a valid list; got {'a': 1}",
        "F: compile.metrics.a: input should be a valid list; got 1"]),
])
def test_config_error_lines_in_full(tmp_path, changes, lines):
    assert error_lines(tmp_path, **changes) == lines


def test_merge_keeps_every_hint_and_allowed_value_and_joins_differing_values_with_or():
    from kexp.config import _merge

    assert _merge(["a; got 1"]) == "a; got 1"
    assert _merge(["input should be x; got 1", "input should be y; got 1; allowed: p, q",
                   "input should be y; got 1; allowed: r"]) == "input should be x or y; got 1; allowed: p, q, r"
    assert _merge(["too big; got 1", "not allowed; got 1"]) == "too big or not allowed; got 1"
    assert _merge(["a; got 1", "b; got 2"]) == "a; got 1; or b; got 2"
    assert _merge(["a; got 1", "b"]) == "a; got 1; or b"
    assert _merge(["a; got 1", "b; got 1", "c; got 2"]) == "a; got 1; or b; got 1; or c; got 2"
    assert _merge(["a; got x; got y", "b; got x; got y"]) == "a or b; got x; got y"


def test_long_values_are_cut_to_sixty_characters_in_error_lines(tmp_path):
    exactly_60 = "x" * 58  # its repr, quotes included, is 60 characters: shown whole
    assert error_lines(tmp_path, seed=exactly_60) == [f"F: seed: input should be a valid integer; got '{exactly_60}'"]
    assert error_lines(tmp_path, seed="x" * 59) == [  # 61 characters: cut to 57 and '...'
        "F: seed: input should be a valid integer; got '" + "x" * 56 + "..."]


def test_a_key_of_the_other_scheme_does_not_hide_the_problems_after_it(tmp_path):
    assert error_lines(tmp_path, validation={"scheme": "holdout", "n_splits": 3, "zzz": 1, "size": 0}) == [
        "F: validation.size: input should be greater than 0; got 0",
        "F: validation.n_splits: belongs to scheme kfold, not holdout; set validation.scheme: kfold or remove it",
        "F: validation.zzz: unknown key; allowed: final, mode, monitor, scheme, seed, shuffle, size, stratify"]
