"""End to end on tiny data: checks before training, hold-out and K-fold runs, the run folder."""

import json
import textwrap

import numpy as np
import pytest
import yaml

from kexp.config import load_config
from kexp.errors import ConfigError
from kexp.experiment import execute
from kexp.runs import read_history, read_run


@pytest.fixture
def regression_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype("float32") * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]
    y = (x @ np.array([1.0, 0.1, 0.01]) + rng.normal(scale=0.1, size=48)).astype("float32")
    np.savez(tmp_path / "reg.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return tmp_path / "reg.npz"


@pytest.fixture
def classes_npz(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")  # 3 classes
    np.savez(tmp_path / "cls.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    return tmp_path / "cls.npz"


def write_config(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


REGRESSION = """
    seed: 3
    dataset: {name: npz, path: reg.npz}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 8, activation: relu}
        - {layer: Dense, units: 1}
    compile: {loss: mse, metrics: [mae]}
    training: {epochs: 3, batch_size: 8}
    """


def run(tmp_path, text, overrides=(), **kwargs):
    path = write_config(tmp_path, text)
    config = load_config(path, list(overrides))
    command = "kfold" if config.validation.scheme == "kfold" else "train"
    return execute(config, command=command, runs_dir=tmp_path / "runs", config_path=path, **kwargs)


def test_holdout_run_writes_a_complete_readable_folder(tmp_path, regression_npz):
    result = run(tmp_path, REGRESSION + "validation: {scheme: holdout, size: 10}\n")
    folder = result.path
    assert folder.parent == (tmp_path / "runs").resolve()
    for name in ("config.yaml", "history.csv", "metrics.json", "model.keras", "summary.txt",
                 "environment.json", "status.json", "best.keras"):
        assert (folder / name).is_file(), name
    record = read_run(folder)
    assert record.status == "completed"
    assert record.config["training"]["epochs"] == 3 and record.config["validation"]["size"] == 10
    assert record.config["compile"]["optimizer"] == {"name": "rmsprop"}, "defaults are resolved"
    history = read_history(folder / "history.csv")
    assert history["epoch"] == [1.0, 2.0, 3.0]
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history)
    m = result.metrics
    assert m["epochs_run"] == 3 and 1 <= m["best_epoch"] <= 3
    assert m["validation"]["final"]["mae"] == pytest.approx(history["val_mae"][-1])
    assert m["validation"]["best"]["loss"] == pytest.approx(min(history["val_loss"]))
    assert set(m["test"]) == {"loss", "mae"}
    assert m["baseline"]["metric"] == "mae" and m["baseline"]["task"] == "regression"
    env = json.loads((folder / "environment.json").read_text())
    assert env["seed"] == 3 and env["keras"] and env["tensorflow"] and env["python"]
    assert "Dense" in (folder / "summary.txt").read_text()


def test_same_seed_gives_the_same_metrics(tmp_path, regression_npz):
    text = REGRESSION + "validation: {scheme: holdout, size: 10}\n"
    first = run(tmp_path, text).metrics
    second = run(tmp_path, text).metrics
    assert first["validation"] == second["validation"] and first["test"] == second["test"]
    other = run(tmp_path, text, ["seed=4"]).metrics
    assert other["validation"] != first["validation"]


def test_final_retrain_uses_all_training_data_for_the_best_epoch(tmp_path, regression_npz):
    result = run(tmp_path, REGRESSION + "validation: {scheme: holdout, size: 10, final: {epochs: best}}\n")
    m = result.metrics
    assert m["final_model"]["n_train"] == 40
    assert m["final_model"]["epochs"] == m["best_epoch"]
    assert len(read_history(result.path / "final_history.csv")["epoch"]) == m["best_epoch"]


def test_kfold_each_fold_fits_preprocessing_on_its_training_part_only(tmp_path, regression_npz):
    result = run(tmp_path, REGRESSION + "validation: {scheme: kfold, n_splits: 4, monitor: val_mae}\n")
    folder = result.path
    splits = json.loads((folder / "folds.json").read_text())["splits"]
    x = np.load(regression_npz)["x_train"]
    seen = []
    for split in splits:
        fitted = json.loads((folder / "folds" / split["id"] / "preprocessing.json").read_text())["x"]
        train = x[split["train_idx"]]
        np.testing.assert_allclose(fitted["mean"], train.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(fitted["std"], train.std(axis=0), rtol=1e-5)
        assert fitted["n_samples"] == len(split["train_idx"]) == 30
        assert not set(split["train_idx"]) & set(split["val_idx"])
        seen += split["val_idx"]
    assert sorted(seen) == list(range(40))


def test_kfold_aggregates_are_mean_and_std_of_the_folds(tmp_path, regression_npz):
    m = run(tmp_path, REGRESSION + "validation: {scheme: kfold, n_splits: 4, monitor: val_mae, "
            "smoothing: {factor: 0.5, skip: 1}}\n").metrics
    finals = [f["validation"]["final"]["mae"] for f in m["folds"]]
    assert len(finals) == 4
    assert m["validation"]["final"]["mae"] == pytest.approx(np.mean(finals))
    assert m["validation"]["final_std"]["mae"] == pytest.approx(np.std(finals))
    curve = m["curve"]
    assert len(curve["mean"]) == 3
    assert curve["smoothed"][0] == pytest.approx(curve["mean"][1])
    assert curve["smoothed"][1] == pytest.approx(0.5 * curve["mean"][1] + 0.5 * curve["mean"][2])
    assert curve["best_epoch"] == 1 + 1 + int(np.argmin(curve["smoothed"]))


def test_kfold_workers_give_the_same_results_as_sequential(tmp_path, regression_npz):
    text = REGRESSION + "validation: {scheme: kfold, n_splits: 2, monitor: val_mae}\n"
    sequential = run(tmp_path, text, workers=1).metrics
    parallel = run(tmp_path, text, workers=2).metrics
    assert sequential["folds"][0]["validation"] == parallel["folds"][0]["validation"]
    assert sequential["folds"][1]["validation"] == parallel["folds"][1]["validation"]
    assert sequential["validation"] == parallel["validation"]


def test_resume_finishes_only_the_missing_folds(tmp_path, regression_npz):
    text = REGRESSION + "validation: {scheme: kfold, n_splits: 3, monitor: val_mae}\n"
    first = run(tmp_path, text)
    folder = first.path
    kept = folder / "folds" / "r0-f0" / "history.csv"
    kept_mtime = kept.stat().st_mtime_ns
    (folder / "folds" / "r0-f2" / "metrics.json").unlink()  # as if killed during the last fold
    status = json.loads((folder / "status.json").read_text()) | {"status": "interrupted"}
    (folder / "status.json").write_text(json.dumps(status))
    config = load_config(write_config(tmp_path, text))
    resumed = execute(config, command="kfold", runs_dir=tmp_path / "runs", resume=folder,
                      config_path=tmp_path / "exp.yaml")
    assert resumed.path == folder
    assert kept.stat().st_mtime_ns == kept_mtime, "a finished fold is not trained again"
    assert (folder / "folds" / "r0-f2" / "metrics.json").exists()
    assert read_run(folder).status == "completed"
    assert [f["validation"] for f in resumed.metrics["folds"]] == [f["validation"] for f in first.metrics["folds"]]


def test_classification_checks_loss_labels_and_units_before_training(tmp_path, classes_npz):
    text = """
        dataset: {name: npz, path: cls.npz}
        model:
          layers:
            - {layer: Dense, units: 1, activation: sigmoid}
        compile: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
        training: {epochs: 1}
        """
    with pytest.raises(ConfigError) as info:
        run(tmp_path, text)
    assert "model.layers.0.units: the last layer has 1 units but the data has 3 classes" in str(info.value)
    with pytest.raises(ConfigError) as info:
        run(tmp_path, text, ["compile.loss=categorical_crossentropy", "preprocessing.labels=sparse",
                             "model.layers.0.units=3"])
    assert "categorical_crossentropy expects categorical labels but preprocessing.labels is sparse" in str(info.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing trained"


def test_classification_run_with_one_hot_labels_and_baseline(tmp_path, classes_npz):
    text = """
        dataset: {name: npz, path: cls.npz}
        preprocessing: {labels: categorical}
        model:
          layers:
            - {layer: Dense, units: 8, activation: relu}
            - {layer: Dense, units: 3, activation: softmax}
        compile: {loss: categorical_crossentropy, metrics: [accuracy]}
        training: {epochs: 2, batch_size: 16}
        validation: {scheme: holdout, size: 0.2, shuffle: true, stratify: true}
        """
    m = run(tmp_path, text).metrics
    assert m["main_metric"] == "accuracy"
    assert 0 <= m["test"]["accuracy"] <= 1
    assert m["baseline"]["metric"] == "accuracy"
    assert 0 < m["baseline"]["validation"]["majority_accuracy"] <= 1
    assert m["baseline"]["model"] == pytest.approx(m["validation"]["best"]["accuracy"])


def test_resolved_config_is_saved_with_overrides(tmp_path, regression_npz):
    result = run(tmp_path, REGRESSION, ["training.epochs=2", "compile.optimizer.learning_rate=0.01"])
    saved = yaml.safe_load((result.path / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 2
    assert saved["compile"]["optimizer"] == {"name": "rmsprop", "learning_rate": 0.01}
    assert result.metrics["epochs_run"] == 2
