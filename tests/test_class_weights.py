"""Class weights (`training.class_weight`) and sample weights (`dataset.sample_weight`): the loss Keras
trains on, scikit-learn's `balanced`, weights read from a CSV column or an NPZ array, every config error,
and precision/recall/AUC by name."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of
from sklearn.utils.class_weight import compute_class_weight

from kexp.config import CsvData, NpzData, validate_config
from kexp.data import Data, load_dataset
from kexp.executor import Task
from kexp.validation import Split

N = 40


def imbalanced(n: int = N, seed: int = 0):
    """3 features, a binary target with about one positive row in five."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0.8).astype(np.int64)
    y[:2] = 1  # at least two positives whatever the seed
    return x, y


def binary_config(**training) -> dict:
    """One sigmoid unit; SGD with a vanishing learning rate, so the trained model keeps its initial weights
    and the first epoch's loss (one batch of every row) can be recomputed from model.keras."""
    return validate_config({
        "seed": 3,
        "dataset": {"name": "iris"},  # not loaded: run_task is handed the data
        "model": {"layers": [{"layer": "Dense", "units": 1, "activation": "sigmoid"}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 1e-30}, "loss": "binary_crossentropy"},
        "training": {"epochs": 1, "batch_size": 64, "shuffle": False, **training},
    }).to_dict()


def train_once(config: dict, data: Data, folder: Path):
    """One task on every row of `data` (no validation rows): its result and its trained model."""
    import keras

    from kexp.training import run_task

    split = Split("holdout", 0, 0, np.arange(len(data.y_train)), np.arange(0))
    result = run_task(Task("holdout", config, None, split, epochs=1, keep_model=True), data=data)
    path = folder / "model.keras"
    path.write_bytes(result.model)
    return result, keras.saving.load_model(path)


def bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Keras' binary crossentropy of each row (probabilities clipped to [eps, 1 - eps])."""
    p = np.clip(p.astype(np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


# --------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("spec, expected", [
    ({"yes": 4.0}, {0: 1.0, 1: 4.0}),  # by name; a class not named weighs 1
    ({0: 0.5, 1: 2.0}, {0: 0.5, 1: 2.0}),  # by id
    ("balanced", None),  # scikit-learn's, from the training labels
])
def test_class_weights_change_the_loss_exactly_as_keras_defines_them(spec, expected, tmp_path):
    """Keras: a row's loss is multiplied by its class's weight, the batch's sum divided by the batch size.
    kexp's first-epoch loss equals that hand computation and Keras' own fit(class_weight=...)."""
    import keras

    x, y = imbalanced()
    data = Data(x_train=x, y_train=y, x_test=None, y_test=None, task="binary", num_classes=2,
                class_names=["no", "yes"])
    result, model = train_once(binary_config(class_weight=spec), data, tmp_path)
    if expected is None:
        expected = dict(enumerate(compute_class_weight("balanced", classes=np.array([0, 1]), y=y).tolist()))
    assert result.preprocessing["class_weight"] == {str(k): pytest.approx(v) for k, v in expected.items()}
    per_row = bce(y, model.predict(x, verbose=0))
    weights = np.array([expected[c] for c in y])
    loss = result.logs[0]["loss"]
    assert loss == pytest.approx(float((weights * per_row).mean()), rel=1e-5)
    assert loss != pytest.approx(float(per_row.mean()), rel=1e-3)  # the weights did change it
    # Keras' own class_weight on the same model, data and batch
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-30), loss="binary_crossentropy")
    history = model.fit(x, y.astype("float32"), batch_size=64, epochs=1, shuffle=False, verbose=0,
                        class_weight=expected)
    assert loss == pytest.approx(history.history["loss"][0], rel=1e-5)


def test_sample_weights_from_a_csv_column_weight_the_loss_and_are_not_a_feature(tmp_path):
    x, y = imbalanced()
    w = np.round(np.random.default_rng(1).uniform(0.0, 3.0, size=N), 3)
    rows = ["a,b,c,w,label"] + [f"{a},{b},{c},{wi},{'yes' if yi else 'no'}"
                                for (a, b, c), wi, yi in zip(x.tolist(), w.tolist(), y.tolist())]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    spec = CsvData(name="csv", path="data.csv", target="label", sample_weight="w", test_split=0.25)
    data = load_dataset(spec, config_dir=tmp_path)
    assert data.feature_names == ["a", "b", "c"] and data.x_train.shape == (30, 3)
    train_rows = [int(np.flatnonzero(np.isclose(x[:, 0], row[0]))[0]) for row in data.x_train]
    np.testing.assert_allclose(data.w_train, w[train_rows], rtol=1e-6)
    # sample weights alone, then times the class weights (Keras refuses both at once; kexp multiplies them)
    for training, class_weight in (({}, {0: 1.0, 1: 1.0}), ({"class_weight": {"yes": 3.0}}, {0: 1.0, 1: 3.0})):
        result, model = train_once(binary_config(**training), data, tmp_path)
        per_row = bce(data.y_train, model.predict(data.x_train, verbose=0))
        weights = data.w_train * np.array([class_weight[c] for c in data.y_train])
        assert result.logs[0]["loss"] == pytest.approx(float((weights * per_row).mean()), rel=1e-5)


def test_sample_weights_from_an_npz_array_follow_the_rows(tmp_path):
    x, y = imbalanced()
    w = np.arange(N, dtype=np.float64) / 10
    x[5, 1] = np.nan  # dropped with missing: drop, its weight with it
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, w=w)
    spec = NpzData(name="npz", path="d.npz", sample_weight="w", test_split=0.25, missing="drop")
    data = load_dataset(spec, config_dir=tmp_path)
    assert data.w_train.dtype == np.float32 and len(data.w_train) == len(data.y_train) == 29
    rows = [int(np.flatnonzero(np.isclose(x[:, 0], row[0]))[0]) for row in data.x_train]
    assert 5 not in rows
    np.testing.assert_allclose(data.w_train, w[rows], rtol=1e-6)
    x[5, 1] = 0.0
    np.savez(tmp_path / "t.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:], w=w[:30])
    data = load_dataset(NpzData(name="npz", path="t.npz", sample_weight="w"), config_dir=tmp_path)
    np.testing.assert_allclose(data.w_train, w[:30])


def test_balanced_weights_are_scikit_learns_on_each_folds_own_training_labels(tmp_path):
    config = tmp_path / "bc.yaml"
    config.write_text(BINARY_KFOLD)
    result = invoke("kfold", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").iterdir())
    folds = json.loads((run / "folds.json").read_text())["splits"]
    from sklearn.datasets import load_breast_cancer

    y_all = load_breast_cancer().target
    data = load_dataset(validate_config({**_yaml(BINARY_KFOLD)}).dataset)
    assert len(data.y_train) < len(y_all)  # the folds split the training part
    for fold in folds:
        y = np.asarray(data.y_train)[fold["train_idx"]]
        want = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
        got = json.loads((run / "folds" / fold["id"] / "preprocessing.json").read_text())["class_weight"]
        assert [got["0"], got["1"]] == pytest.approx(want.tolist())


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


BINARY_KFOLD = """\
seed: 0
dataset: {name: breast_cancer}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 1, activation: sigmoid}
compile:
  optimizer: {name: adam, learning_rate: 0.01}
  loss: binary_crossentropy
  metrics: [precision, recall, auc]
training: {epochs: 1, batch_size: 64, class_weight: balanced}
validation: {scheme: kfold, n_splits: 2, shuffle: true}
"""


# --------------------------------------------------------------------------- precision, recall, AUC
def test_precision_recall_and_auc_by_name_train_and_the_baseline_stays_the_majority_class(tmp_path):
    config = tmp_path / "bc.yaml"
    config.write_text(BINARY_KFOLD.replace("scheme: kfold, n_splits: 2", "scheme: holdout"))
    result = invoke("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(next((tmp_path / "runs").iterdir()).joinpath("metrics.json").read_text())
    assert {"precision", "recall", "auc"} <= set(metrics["validation"]["best"])
    baseline = metrics["baseline"]
    assert "error" not in baseline, baseline
    # the majority class of imbalanced labels: accuracy of always answering it, not 0.5
    assert baseline["metric"] == "accuracy" and baseline["value"] > 0.6
    assert baseline["validation"]["majority_accuracy"] == baseline["value"]


def test_precision_on_sparse_class_ids_is_a_config_error_before_training(tmp_path, tiny_config):
    tiny_config.write_text(tiny_config.read_text().replace("metrics: [accuracy]", "metrics: [accuracy, precision]"))
    result = invoke("validate", tiny_config)
    assert result.exit_code == 2
    assert (f"{tiny_config}: compile.metrics.1: precision needs one 0/1 column per class; the labels are class ids "
            "(sparse); set preprocessing.labels: categorical") in stderr_of(result)
    categorical = tiny_config.read_text().replace("loss: sparse_categorical_crossentropy",
                                                  "loss: categorical_crossentropy")
    tiny_config.write_text(categorical)
    result = invoke("validate", tiny_config)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- errors, before training
def _errors(path, *sets) -> list[str]:
    result = invoke("validate", path, *[arg for item in sets for arg in ("--set", item)])
    assert result.exit_code == 2, result.output
    return stderr_of(result).strip().splitlines()


def test_unknown_classes_in_the_mapping_are_all_reported(tiny_config):
    lines = _errors(tiny_config, "training.class_weight={setosa: 2, virginca: 3, 7: 1, 1: 0.5}")
    assert lines == [
        f"{tiny_config}: training.class_weight.virginca: unknown class (did you mean virginica?); got 'virginca'; "
        "allowed: 0, 1, 2 (ids) or setosa, versicolor, virginica (names)",
        f"{tiny_config}: training.class_weight.7: unknown class; got 7; allowed: 0, 1, 2 (ids) or setosa, "
        "versicolor, virginica (names)",
    ]


def test_a_class_given_by_id_and_by_name_is_an_error(tiny_config):
    assert _errors(tiny_config, "training.class_weight={0: 2, setosa: 3}") == [
        f"{tiny_config}: training.class_weight.setosa: class 0 is given twice (by id and by name); keep one"]


def test_class_weight_values_and_spelling_are_checked_by_the_schema(tiny_config):
    lines = _errors(tiny_config, "training.class_weight=balance")
    assert len(lines) == 1 and lines[0].startswith(f"{tiny_config}: training.class_weight: ") and "balanced" in lines[0]
    assert _errors(tiny_config, "training.class_weight={0: -1, setosa: 2, 2: -0.5}") == [
        f"{tiny_config}: training.class_weight: a class weight must be >= 0; got 0 (-1), 2 (-0.5)"]


def test_class_weight_on_a_regression_target_is_an_error(tiny_config):
    lines = _errors(tiny_config, "dataset.name=diabetes", "compile.loss=mse", "compile.metrics=[mae]",
                    "model.layers.1.units=1", "model.layers.1.activation=linear", "training.class_weight=balanced")
    assert lines == [f"{tiny_config}: training.class_weight: weights classes; diabetes is a regression target; "
                     "remove it, or weight rows with dataset.sample_weight"]


def test_class_weight_with_several_outputs_is_an_error_naming_the_alternative(tmp_path):
    from helpers import TWO_OUTPUTS_CONFIG

    rng = np.random.default_rng(0)
    rows = ["a,b,price,band"] + [f"{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f},{i % 3}" for i in range(30)]
    (tmp_path / "two.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "two.yaml"
    config.write_text(TWO_OUTPUTS_CONFIG)
    lines = _errors(config, "training.class_weight=balanced")
    assert lines == [f"{config}: training.class_weight: Keras weights the classes of single-output models only; "
                     "this data has outputs price, band; weight rows with dataset.sample_weight instead (one weight "
                     "per row, applied to every output's loss), or remove it"]
    # sample weights are supported with several outputs: one weight per row, on every output's loss
    (tmp_path / "two.csv").write_text("\n".join([rows[0] + ",w"] + [r + ",2" for r in rows[1:]]) + "\n")
    result = invoke("train", config, "--set", "dataset.sample_weight=w", "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output


def _csv(tmp_path, header="a,b,w,label", cells=None):
    rows = [header] + (cells or [f"{i % 7},{i % 5},1.5,{'yes' if i % 4 == 0 else 'no'}" for i in range(20)])
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "w.yaml"
    config.write_text("dataset: {name: csv, path: data.csv, target: label, sample_weight: w}\n"
                      "model: {layers: [{layer: Dense, units: 1, activation: sigmoid}]}\n"
                      "compile: {loss: binary_crossentropy}\n")
    return config


def test_a_weight_column_that_does_not_exist_is_an_error(tmp_path):
    config = _csv(tmp_path, header="a,b,wt,label")
    assert _errors(config) == [f"{config}: dataset.sample_weight: {tmp_path / 'data.csv'}: no column 'w' (did you "
                               "mean wt?); columns: a, b, wt, label"]


def test_bad_weight_cells_are_all_reported(tmp_path):
    cells = [f"{i},{i},{w},{'yes' if i % 2 else 'no'}" for i, w in enumerate(["1", "-2", "", "x", "0.5", "-1"])]
    config = _csv(tmp_path, cells=cells)
    lines = _errors(config)
    assert lines == [f"{config}: dataset.sample_weight: {tmp_path / 'data.csv'}: line 3, column 'w': a sample weight "
                     "must be a finite number >= 0; got '-2' (3 such cells, lines 3, 5, 7); and 1 missing weight, "
                     "line 4; weights are never imputed; fill them, or set dataset.missing: drop to drop those rows"]


def test_a_weight_column_cannot_also_be_a_feature_or_the_target(tmp_path):
    config = _csv(tmp_path)
    assert _errors(config, "dataset.features=[a, w]") == [
        f"{config}: dataset.sample_weight: 'w' is also one of dataset.features; a weight column is not an input: "
        "remove it from features"]
    assert _errors(config, "dataset.sample_weight=label") == [
        f"{config}: dataset.sample_weight: 'label' is a target; name another column"]


def test_an_npz_weight_array_that_does_not_exist_or_is_negative_is_an_error(tmp_path):
    x, y = imbalanced()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, weights=-np.ones(N))
    config = tmp_path / "n.yaml"
    config.write_text("dataset: {name: npz, path: d.npz, sample_weight: weight}\n"
                      "model: {layers: [{layer: Dense, units: 1, activation: sigmoid}]}\n"
                      "compile: {loss: binary_crossentropy}\n")
    lines = _errors(config)
    assert len(lines) == 1 and lines[0].startswith(f"{config}: dataset.sample_weight: {tmp_path / 'd.npz'}: has no "
                                                   "array 'weight' (did you mean weights?)"), lines
    lines = _errors(config, "dataset.sample_weight=weights")
    assert lines == [f"{config}: dataset.sample_weight: {tmp_path / 'd.npz'}: array 'weights': a sample weight must "
                     f"be a finite number >= 0; got -1.0 ({N} such values, rows 0, 1, 2, 3, 4 and {N - 5} more "
                     "(from 0))"]
