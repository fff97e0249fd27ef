"""`kexp predict` / `kexp evaluate` (kexp/predict.py): a run's final model on new data, preprocessed exactly
as its training data was, and every way DATA can fail to match."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG, TWO_OUTPUTS_CONFIG

from kexp import layout

SIXTEEN_FOLDS = "validation: {scheme: kfold, n_splits: 2, final: {epochs: 2}}\n"


def _run(tmp, config_text, command="train", name="run"):
    config = tmp / f"{name}.yaml"
    config.write_text(config_text)
    runs = tmp / f"runs-{name}"
    result = invoke(command, config, "--runs-dir", runs, "--quiet")
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    return folder


def _read(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _model_outputs(run, x):
    """What the run's own model gives for already prepared features."""
    import keras

    model = keras.saving.load_model(run / layout.MODEL, safe_mode=True)
    return model.predict(x, batch_size=1024, verbose=0)


def _refit(run, rows_idx=None, split="train"):
    """The run's data and its preprocessing fitted again, by the training code, on the model's training rows."""
    from kexp.config import load_config
    from kexp.data import load_dataset, take
    from kexp.preprocessing import Preprocessor

    config = load_config(run / layout.CONFIG_YAML)
    config_dir = Path(json.loads((run / layout.ENVIRONMENT).read_text())["config_file"]).parent
    data = load_dataset(config.dataset, config_dir=config_dir)
    train = data.x_train if rows_idx is None else take(data.x_train, rows_idx)
    pre = Preprocessor(config, data).fit(train)
    return data, pre


# --------------------------------------------------------------------------- hold-out, built-in data
@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("iris"), TINY_CONFIG)


def test_predict_holdout_reproduces_the_models_own_probabilities(iris_run, tmp_path):
    from kexp.config import load_config
    from kexp.validation import splits_for

    out = tmp_path / "preds.csv"
    result = invoke("predict", iris_run, "iris:test", "--output", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "30 predictions" in result.output
    header, rows = _read(out)
    assert header == ["class", "class_name", "prob_setosa", "prob_versicolor", "prob_virginica"]
    config = load_config(iris_run / layout.CONFIG_YAML)
    data, _ = _refit(iris_run)
    (split,) = splits_for(config, data)
    data, pre = _refit(iris_run, split.train_idx)
    expected = _model_outputs(iris_run, pre.transform(data.x_test))
    got = np.array([[float(v) for v in row[2:]] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)  # exactly: the same statistics, the same float32 numbers
    assert [int(row[0]) for row in rows] == expected.argmax(axis=1).tolist()
    names = ["setosa", "versicolor", "virginica"]
    assert [row[1] for row in rows] == [names[i] for i in expected.argmax(axis=1)]


def test_predict_without_output_writes_csv_to_stdout(iris_run):
    result = invoke("predict", iris_run, "iris:train")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "class,class_name,prob_setosa,prob_versicolor,prob_virginica"
    assert len(lines) == 1 + 120


def test_evaluate_equals_the_runs_own_test_metrics(iris_run):
    from kexp.predict import evaluate

    recorded = json.loads((iris_run / layout.METRICS).read_text())["test"]
    assert evaluate(iris_run, "iris:test").metrics == recorded
    result = invoke("evaluate", iris_run, "iris:test")
    assert result.exit_code == 0, result.output
    assert "30 samples of iris:test" in result.output
    assert f"{recorded['accuracy']:.6g}" in result.output


@pytest.mark.parametrize("data, message", [
    ("wine:test", "DATA: wine:test: the run was trained on iris; give iris:train or iris:test"),
    ("iris:valid", "DATA: no such file; got iris:valid"),
    ("nothing.csv", "DATA: no such file; got nothing.csv"),
])
def test_data_that_is_not_the_runs_dataset_is_an_error(iris_run, data, message):
    result = invoke("predict", iris_run, data)
    assert result.exit_code == 2
    assert message in stderr_of(result)


def test_a_csv_for_a_run_on_a_builtin_dataset_is_an_error(iris_run, tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    result = invoke("predict", iris_run, tmp_path / "x.csv")
    assert result.exit_code == 2
    assert "trained on the built-in dataset iris; give iris:train or iris:test" in stderr_of(result)


def test_a_folder_that_is_no_run_or_has_no_model_is_an_error(tmp_path, iris_run):
    result = invoke("predict", tmp_path, "iris:test")
    assert result.exit_code == 1
    assert "not a kexp run folder" in stderr_of(result)


# --------------------------------------------------------------------------- K-fold final model, CSV, two outputs
def _two_csv(folder, n=60, seed=0, extra=None, drop=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    price = x @ [1.0, 0.5, -0.3]
    band = np.where(price > 0.5, "high", np.where(price < -0.5, "low", "mid"))
    header = ["a", "b", "c", "price", "band"] + ([extra] if extra else [])
    with open(folder / "two.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([h for h in header if h != drop])
        for row, p, b in zip(x.round(4), price.round(4), band, strict=True):
            cells = dict(zip(header, [*row, p, b, 7]))
            writer.writerow([cells[h] for h in header if h != drop])
    return folder / "two.csv"


@pytest.fixture(scope="module")
def two_kfold(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    _two_csv(tmp)
    return _run(tmp, TWO_OUTPUTS_CONFIG + SIXTEEN_FOLDS, command="kfold", name="two")


def test_kfold_final_model_has_its_preprocessing_and_predict_reproduces_it(two_kfold, tmp_path):
    record = json.loads((two_kfold / layout.PREPROCESSING).read_text())
    assert record["models"] == [layout.MODEL] and record["fitted_on"]["split"] == layout.FINAL_SPLIT
    data_file = _two_csv(tmp_path, n=20, seed=5)
    out = tmp_path / "p.csv"
    result = invoke("predict", two_kfold, data_file, "-o", out)
    assert result.exit_code == 0, result.output
    header, rows = _read(out)
    assert header == ["price_value", "band_class", "band_class_name", "band_prob_high", "band_prob_low",
                      "band_prob_mid"]
    data, pre = _refit(two_kfold)  # the final model: fitted on every training row
    x = np.array([[float(v) for v in line.split(",")[:3]] for line in data_file.read_text().splitlines()[1:]],
                 dtype=np.float32)
    outputs = _model_outputs(two_kfold, pre.transform(x))
    price, band = outputs["price"], outputs["band"]
    np.testing.assert_array_equal(np.array([float(r[0]) for r in rows], dtype=np.float32), price[:, 0])
    np.testing.assert_array_equal(np.array([[float(v) for v in r[3:]] for r in rows], dtype=np.float32), band)


def test_evaluate_kfold_final_model_equals_its_test_metrics(two_kfold):
    from kexp.predict import evaluate

    recorded = json.loads((two_kfold / layout.METRICS).read_text())["test"]
    assert evaluate(two_kfold, "csv:test").metrics == recorded


def test_evaluate_on_a_file_maps_class_names_as_the_run_did(two_kfold, tmp_path):
    """A file holding only some classes must not renumber them (ids come from the run's class names)."""
    from kexp.predict import evaluate, predict

    path = _two_csv(tmp_path, n=40, seed=1)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *[line for line in lines[1:] if line.endswith(("high", "low"))]]) + "\n")
    scores = evaluate(two_kfold, str(path)).metrics
    preds = predict(two_kfold, str(path))
    truth = [line.rsplit(",", 1)[1] for line in path.read_text().splitlines()[1:]]
    accuracy = np.mean(np.array(preds.columns["band_class_name"]) == np.array(truth))
    assert scores["band_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_csv_mismatches_are_reported_at_once_before_the_model_runs(two_kfold, tmp_path):
    path = _two_csv(tmp_path, extra="id", drop="b")
    result = invoke("predict", two_kfold, path)
    assert result.exit_code == 2
    text = stderr_of(result)
    assert f"DATA: {path}: missing column b; the model takes a, b, c" in text
    assert f"DATA: {path}: extra column id: the model was trained on a, b, c" in text


def test_evaluate_needs_the_target_columns(two_kfold, tmp_path):
    path = tmp_path / "unlabelled.csv"
    path.write_text("a,b,c\n0.1,0.2,0.3\n")
    assert invoke("predict", two_kfold, path).exit_code == 0
    result = invoke("evaluate", two_kfold, path)
    assert result.exit_code == 2
    assert "missing target columns price, band; evaluate needs the labels" in stderr_of(result)


def test_unknown_class_name_is_an_error(two_kfold, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("a,b,c,price,band\n0.1,0.2,0.3,1.0,huge\n")
    result = invoke("evaluate", two_kfold, path)
    assert result.exit_code == 2
    assert "unknown class huge; the model knows high, low, mid" in stderr_of(result)


def test_kfold_run_without_final_model_says_why(tmp_path):
    from kexp.errors import RunError
    from kexp.predict import predict

    run = tmp_path / "run"
    run.mkdir()
    (run / layout.CONFIG_YAML).write_text(TINY_CONFIG.replace(
        "validation: {scheme: holdout, size: 0.2, shuffle: true}", "validation: {scheme: kfold, n_splits: 2}"))
    with pytest.raises(RunError, match=r"has no model\.keras \(a K-fold run keeps a model only with validation\.final"):
        predict(run, "iris:test")


# --------------------------------------------------------------------------- NPZ
NPZ_CONFIG = """\
seed: 0
dataset: {name: npz, path: data.npz}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 1}
compile: {optimizer: adam, loss: mse, metrics: [mae]}
training: {epochs: 2, batch_size: 16}
validation: {scheme: holdout, size: 0.25, final: {epochs: 1}}
"""


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 5)).astype("float32") * 10 + 3
    y = (x @ rng.normal(size=5)).astype("float32")
    np.savez(tmp / "data.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return _run(tmp, NPZ_CONFIG, name="npz")


def test_npz_predict_reproduces_the_final_model_and_evaluate_its_test_metrics(npz_run, tmp_path):
    from kexp.predict import evaluate, predict

    data, pre = _refit(npz_run)  # the retrained final model: every training row
    np.savez(tmp_path / "new.npz", x_train=data.x_test)
    preds = predict(npz_run, str(tmp_path / "new.npz"))
    assert list(preds.columns) == ["value"]
    np.testing.assert_array_equal(preds.columns["value"], _model_outputs(npz_run, pre.transform(data.x_test))[:, 0])
    recorded = json.loads((npz_run / layout.METRICS).read_text())["test"]
    assert evaluate(npz_run, "npz:test").metrics == recorded
    config_dir = json.loads((npz_run / layout.ENVIRONMENT).read_text())["config_file"].rsplit("/", 1)[0]
    assert evaluate(npz_run, f"{config_dir}/data.npz").metrics.keys() == recorded.keys()


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 5))}, "missing array x_train; arrays: x"),
    ({"x_train": np.zeros((3, 5)), "ids": np.arange(3)}, "extra array ids: the model takes x_train"),
    ({"x_train": np.zeros((3, 6))}, "DATA: the input has shape (6,) per sample after preprocessing; the model "
                                    "takes (5,)"),
])
def test_npz_mismatches_name_what_is_wrong(npz_run, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    result = invoke("predict", npz_run, tmp_path / "bad.npz")
    assert result.exit_code == 2
    assert message in stderr_of(result)


# --------------------------------------------------------------------------- categorical columns, imputed cells
CATEGORICAL_CONFIG = """\
seed: 0
dataset: {name: csv, path: cats.csv, target: y, categorical: [colour], missing: mean, test_split: 0.2}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 1, activation: sigmoid}
compile: {optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}
training: {epochs: 1, batch_size: 16}
validation: {scheme: holdout, size: 0.25, final: {epochs: 1}}
"""


def _cats_csv(path, n, seed, colours=("red", "green", "blue")):
    rng = np.random.default_rng(seed)
    lines = ["size,colour,weight,y"]
    for i in range(n):
        size = "" if i % 7 == 3 else f"{rng.normal() * 5 + 10:.3f}"
        colour = "" if i % 11 == 5 else colours[i % len(colours)]
        lines.append(f"{size},{colour},{rng.normal():.3f},{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_categories_and_fill_values_are_applied_as_fitted(tmp_path):
    from kexp.data import Data
    from kexp.predict import predict

    _cats_csv(tmp_path / "cats.csv", 60, 0)
    run = _run(tmp_path, CATEGORICAL_CONFIG, name="cats")
    record = json.loads((run / layout.PREPROCESSING).read_text())
    assert record["statistics"]["x"]["one_hot"] == {"colour": ["blue", "green", "red"]}
    new = _cats_csv(tmp_path / "new.csv", 12, 3, colours=("red", "purple"))  # purple: never seen in training
    preds = predict(run, str(new))
    assert list(preds.columns) == ["class", "prob_0", "prob_1"]
    data, pre = _refit(run)  # the final model: fitted on every training row, by the training code
    rows = [line.split(",") for line in new.read_text().splitlines()[1:]]
    x = np.array([[float(r[0]) if r[0] else np.nan, r[1] or None, float(r[2])] for r in rows], dtype=object)
    prepared = pre.transform(x)
    assert not np.isnan(prepared).any()
    expected = _model_outputs(run, prepared)[:, 0]
    np.testing.assert_array_equal(preds.columns["prob_1"], expected)
    assert isinstance(data, Data)
