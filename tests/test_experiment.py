"""End to end on tiny data: checks before training, hold-out and K-fold runs, the run folder."""

import json
import os
import textwrap

import numpy as np
import pytest
import yaml

from kexp.config import load_config
from kexp.errors import ConfigError
from kexp.experiment import Observer, execute
from kexp.runs import read_history, read_run


def write_regression_npz(folder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype("float32") * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]
    y = (x @ np.array([1.0, 0.1, 0.01]) + rng.normal(scale=0.1, size=48)).astype("float32")
    np.savez(folder / "reg.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return folder / "reg.npz"


@pytest.fixture
def regression_npz(tmp_path):
    return write_regression_npz(tmp_path)


# Runs that several tests only read are trained once per module.
@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("holdout_run")
    write_regression_npz(folder)
    return run(folder, REGRESSION + "validation: {scheme: holdout, size: 10}\n")


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kfold_run")
    write_regression_npz(folder)
    return run(folder, REGRESSION + "validation: {scheme: kfold, n_splits: 4, monitor: val_mae, "
               "smoothing: {factor: 0.5, skip: 1}}\n")


@pytest.fixture
def classes_npz(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")  # 3 classes
    np.savez(tmp_path / "cls.npz", x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    return tmp_path / "cls.npz"


def last(part: dict) -> dict:
    """The last epoch's metrics, in metrics.json format 2 (`last`) or format 1 (`final`)."""
    return part.get("last") or part.get("final")


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


def test_holdout_run_writes_a_complete_readable_folder(holdout_run):
    result = holdout_run
    folder = result.path
    assert folder.parent.name == "runs"
    for name in ("config.yaml", "history.csv", "metrics.json", "model.keras", "summary.txt",
                 "environment.json", "status.json", "best.keras"):
        assert (folder / name).is_file(), name
    record = read_run(folder)
    assert record.status == "completed"
    assert record.config["training"]["epochs"] == 3 and record.config["validation"]["size"] == 10
    optimizer = record.config["compile"]["optimizer"]  # config.json: with Keras' own defaults filled in
    assert optimizer["name"] == "rmsprop" and optimizer["learning_rate"] == 0.001, optimizer
    saved = load_config(folder / "config.yaml").to_dict()
    assert saved["compile"]["optimizer"] == {"name": "rmsprop"}, "config.yaml holds what the config said"
    history = read_history(folder / "history.csv")
    assert history["epoch"] == [1.0, 2.0, 3.0]
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history)
    m = result.metrics
    assert m["epochs_run"] == 3 and 1 <= m["best_epoch"] <= 3
    assert last(m["validation"])["mae"] == pytest.approx(history["val_mae"][-1])
    assert m["validation"]["best"]["loss"] == pytest.approx(min(history["val_loss"]))
    assert set(m["test"]) == {"loss", "mae"}
    assert m["baseline"]["metric"] == "mae" and m["baseline"]["task"] == "regression"
    env = json.loads((folder / "environment.json").read_text())
    assert env["seed"] == 3 and env["keras"] and env["backend_version"] and env["python"]
    assert "Dense" in (folder / "summary.txt").read_text()


def test_same_seed_gives_the_same_metrics(tmp_path, regression_npz, holdout_run):
    text = REGRESSION + "validation: {scheme: holdout, size: 10}\n"
    first = holdout_run.metrics
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


def test_kfold_each_fold_fits_preprocessing_on_its_training_part_only(kfold_run):
    folder = kfold_run.path
    splits = json.loads((folder / "folds.json").read_text())["splits"]
    x = np.load(folder.parent.parent / "reg.npz")["x_train"]
    seen = []
    for split in splits:
        saved = json.loads((folder / "folds" / split["id"] / "preprocessing.json").read_text())
        fitted = saved.get("statistics", saved)["x"]  # the statistics, in either layout of the file
        train = x[split["train_idx"]]
        np.testing.assert_allclose(fitted["mean"], train.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(fitted["std"], train.std(axis=0), rtol=1e-5)
        assert fitted["n_samples"] == len(split["train_idx"]) == 30
        assert not set(split["train_idx"]) & set(split["val_idx"])
        seen += split["val_idx"]
    assert sorted(seen) == list(range(40))


def test_kfold_aggregates_are_mean_and_std_of_the_folds(kfold_run):
    m = kfold_run.metrics
    finals = [last(f["validation"])["mae"] for f in m["folds"]]
    assert len(finals) == 4
    assert last(m["validation"])["mae"] == pytest.approx(np.mean(finals))
    v = m["validation"]
    assert (v.get("last_std") or v.get("final_std"))["mae"] == pytest.approx(np.std(finals))
    curve = m["curve"]
    assert len(curve["mean"]) == 3
    assert curve["smoothed"][0] == pytest.approx(curve["mean"][1])
    assert curve["smoothed"][1] == pytest.approx(0.5 * curve["mean"][1] + 0.5 * curve["mean"][2])
    assert curve["best_epoch"] == 1 + 1 + int(np.argmin(curve["smoothed"]))


class ProcessWatcher(Observer):
    """Records, as each fold starts, the worker processes alive and each fold's start and end."""

    def __init__(self):
        self.starts, self.events = {}, []

    def split_start(self, split_id, epochs):
        import multiprocessing

        self.starts[split_id] = {p.pid for p in multiprocessing.active_children()}
        self.events.append(("start", split_id))

    def split_end(self, split_id, result):
        self.events.append(("end", split_id))


def test_kfold_workers_give_the_same_results_as_sequential(tmp_path, regression_npz):
    text = REGRESSION + "validation: {scheme: kfold, n_splits: 2, monitor: val_mae}\n"
    watch_sequential, watch_parallel = ProcessWatcher(), ProcessWatcher()
    sequential = run(tmp_path, text, workers=1, observer=watch_sequential).metrics
    parallel = run(tmp_path, text, workers=2, observer=watch_parallel).metrics
    assert watch_sequential.starts == {"r0-f0": set(), "r0-f1": set()}, "workers=1 trains in this process"
    assert set(watch_parallel.starts) == {"r0-f0", "r0-f1"}
    first = watch_parallel.events[0][1]
    workers = watch_parallel.starts[first]
    assert len(workers) == 2 and os.getpid() not in workers, "both folds' worker processes run at once"
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


# --------------------------------------------------------------------------- what a run applies (issue 15)
# A frozen model (one Dense layer, kernel 1, bias 0, not trainable) predicts the standardized feature
# itself, so the metrics a run reports show which statistics were applied to the validation and test rows.
# The validation rows (the first 10, hold-out size 10 / K-fold unshuffled) and the test rows have means
# far from the training rows', so statistics fitted on the wrong rows give visibly different numbers.
FROZEN_REGRESSION = """
    seed: 0
    dataset: {name: npz, path: frozen.npz}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 1, kernel_initializer: ones, bias_initializer: zeros, trainable: false}
    compile: {loss: mse, metrics: [mae]}
    training: {epochs: 2, batch_size: 8}
    """
FROZEN_CLASSES = """
    seed: 0
    dataset: {name: npz, path: frozen_cls.npz}
    model:
      layers:
        - {layer: Dense, units: 3, activation: softmax, trainable: false}
    compile: {loss: sparse_categorical_crossentropy, metrics: [accuracy]}
    training: {epochs: 1, batch_size: 8}
    """


def _frozen_run(tmp_path, text, arrays):
    np.savez(tmp_path / ("frozen_cls.npz" if "frozen_cls" in text else "frozen.npz"), **arrays)
    return run(tmp_path, text)


@pytest.fixture(scope="module")
def frozen_arrays():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(50, 1, 10), rng.normal(0, 2, 30), rng.normal(-20, 1, 10)])
    y = np.concatenate([rng.normal(10, 1, 10), rng.normal(3, 1, 30), rng.normal(-5, 1, 10)])
    x, y = x.astype("float32")[:, None], y.astype("float32")
    return {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:]}


@pytest.fixture(scope="module")
def frozen_holdout(tmp_path_factory, frozen_arrays):
    return _frozen_run(tmp_path_factory.mktemp("frozen_holdout"),
                       FROZEN_REGRESSION + "validation: {scheme: holdout, size: 10}\n", frozen_arrays)


@pytest.fixture(scope="module")
def frozen_kfold(tmp_path_factory, frozen_arrays):
    return _frozen_run(tmp_path_factory.mktemp("frozen_kfold"),
                       FROZEN_REGRESSION + "validation: {scheme: kfold, n_splits: 4, monitor: val_mae, "
                       "final: {epochs: 1}}\n", frozen_arrays)


def frozen_mae(x, y, fitted_on):
    """mae of the frozen model on (x, y) with standardization fitted on `fitted_on` (float32, as kexp)."""
    mean, std = fitted_on.mean(axis=0), fitted_on.std(axis=0)
    return float(np.abs(y - ((x - mean) / std)[:, 0]).mean())


def test_holdout_validation_and_test_rows_are_transformed_with_the_training_statistics(frozen_holdout,
                                                                                        frozen_arrays):
    x, y = frozen_arrays["x_train"], frozen_arrays["y_train"]
    train, val = x[10:], x[:10]
    m = frozen_holdout.metrics
    expected = frozen_mae(val, y[:10], train)
    assert last(m["validation"])["mae"] == pytest.approx(expected, rel=1e-4)
    assert m["validation"]["best"]["mae"] == pytest.approx(expected, rel=1e-4)
    for wrong in (val, x):  # statistics of the validation rows, or of all rows, would give these
        assert abs(frozen_mae(val, y[:10], wrong) - expected) > 1.0
    expected_test = frozen_mae(frozen_arrays["x_test"], frozen_arrays["y_test"], train)
    assert m["test"]["mae"] == pytest.approx(expected_test, rel=1e-4)
    assert abs(frozen_mae(frozen_arrays["x_test"], frozen_arrays["y_test"], frozen_arrays["x_test"])
               - expected_test) > 1.0
    history = read_history(frozen_holdout.path / "history.csv")
    assert history["val_mae"] == pytest.approx([expected] * 2, rel=1e-4)


def test_kfold_validation_rows_use_their_fold_statistics_and_test_rows_the_final_models(frozen_kfold,
                                                                                      frozen_arrays):
    x, y = frozen_arrays["x_train"], frozen_arrays["y_train"]
    m = frozen_kfold.metrics
    assert len(m["folds"]) == 4
    for fold in m["folds"]:
        val = np.arange(10 * fold["fold"], 10 * fold["fold"] + 10)
        train = np.setdiff1d(np.arange(40), val)
        expected = frozen_mae(x[val], y[val], x[train])
        assert last(fold["validation"])["mae"] == pytest.approx(expected, rel=1e-4), fold["id"]
        assert abs(frozen_mae(x[val], y[val], x[val]) - expected) > 0.5
    # the final model is retrained on all 40 rows: the test rows get the statistics of all of them
    assert m["final_model"]["n_train"] == 40
    assert m["test"]["mae"] == pytest.approx(frozen_mae(frozen_arrays["x_test"], frozen_arrays["y_test"], x),
                                             rel=1e-4)


# --------------------------------------------------------------------------- the run-level baseline
def mean_baseline(y_train, y_val):
    return float(np.abs(y_val - y_train.mean()).mean()), float(((y_val - y_train.mean()) ** 2).mean())


def class_baseline(y_train, y_val):
    """(majority accuracy, random accuracy) of a baseline fitted on y_train, scored on y_val."""
    classes, counts = np.unique(y_train, return_counts=True)
    majority = classes[np.argmax(counts)]
    shares = dict(zip(classes.tolist(), (counts / counts.sum()).tolist()))
    random = sum(shares.get(c, 0.0) * np.mean(y_val == c) for c in np.unique(y_val).tolist())
    return float(np.mean(y_val == majority)), float(random)


def assert_margin(baseline, loss_like):
    sign = -1 if loss_like else 1
    assert baseline["margin"] == pytest.approx(sign * (baseline["model"] - baseline["value"]))
    assert baseline["margin"] != 0
    assert baseline["beats"] is (baseline["margin"] > 0)


def test_holdout_regression_baseline_is_fitted_on_training_labels_and_scored_on_validation_and_test(
        frozen_holdout, frozen_arrays):
    y = frozen_arrays["y_train"]
    b = frozen_holdout.metrics["baseline"]
    assert b["metric"] == "mae"
    assert b["predict"] == pytest.approx(float(y[10:].mean()), rel=1e-5)
    mae, mse = mean_baseline(y[10:], y[:10])
    assert b["validation"]["mae"] == pytest.approx(mae, rel=1e-5)
    assert b["validation"]["mse"] == pytest.approx(mse, rel=1e-5)
    assert b["value"] == pytest.approx(mae, rel=1e-5)
    test_mae, _ = mean_baseline(y[10:], frozen_arrays["y_test"])
    assert b["test"]["mae"] == pytest.approx(test_mae, rel=1e-5)
    m = frozen_holdout.metrics
    assert b["model"] == pytest.approx(m["validation"]["best"]["mae"])
    assert_margin(b, loss_like=True)


def test_kfold_baseline_is_averaged_over_every_fold_with_a_loss_like_margin(frozen_kfold, frozen_arrays):
    y = frozen_arrays["y_train"]
    per_fold = []
    for fold in range(4):
        val = np.arange(10 * fold, 10 * fold + 10)
        per_fold.append(mean_baseline(y[np.setdiff1d(np.arange(40), val)], y[val]))
    b = frozen_kfold.metrics["baseline"]
    assert b["metric"] == "mae"
    assert b["value"] == pytest.approx(np.mean([p[0] for p in per_fold]), rel=1e-5)
    assert b["validation"]["mae"] == pytest.approx(np.mean([p[0] for p in per_fold]), rel=1e-5)
    assert b["validation"]["mse"] == pytest.approx(np.mean([p[1] for p in per_fold]), rel=1e-5)
    m = frozen_kfold.metrics
    assert b["model"] in (pytest.approx(m["validation"]["best"]["mae"]), pytest.approx(last(m["validation"])["mae"]))
    assert_margin(b, loss_like=True)


def test_kfold_test_baseline_is_fitted_on_all_training_labels(frozen_kfold, frozen_arrays):
    b = frozen_kfold.metrics["baseline"]
    test_mae, _ = mean_baseline(frozen_arrays["y_train"], frozen_arrays["y_test"])
    assert b["test"]["mae"] == pytest.approx(test_mae, rel=1e-5)


@pytest.fixture(scope="module")
def class_arrays():
    # validation rows (the first 10) are mostly class 1; the 30 training rows mostly class 0
    y = np.array([1] * 8 + [0, 2] + [0] * 16 + [1] * 8 + [2] * 6 + [0, 1, 1, 2, 2, 2, 0, 0, 1, 2])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 2)).astype("float32")
    return {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:]}


def test_holdout_class_baseline_is_fitted_on_training_labels_with_an_accuracy_like_margin(tmp_path,
                                                                                         class_arrays):
    result = _frozen_run(tmp_path, FROZEN_CLASSES + "validation: {scheme: holdout, size: 10}\n", class_arrays)
    y = class_arrays["y_train"]
    b = result.metrics["baseline"]
    assert b["metric"] == "accuracy"
    assert b["majority_class"] == 0, "the training rows' majority, not the validation rows' (1)"
    majority, random = class_baseline(y[10:], y[:10])
    assert b["validation"]["majority_accuracy"] == pytest.approx(majority)
    assert b["validation"]["random_accuracy"] == pytest.approx(random)
    assert b["value"] == pytest.approx(max(majority, random))
    test_majority, test_random = class_baseline(y[10:], class_arrays["y_test"])
    assert b["test"]["majority_accuracy"] == pytest.approx(test_majority)
    assert b["test"]["random_accuracy"] == pytest.approx(test_random)
    assert b["model"] == pytest.approx(result.metrics["validation"]["best"]["accuracy"])
    assert_margin(b, loss_like=False)


def test_iterated_stratified_kfold_run_balances_its_folds_and_averages_the_class_baseline_over_all(
        tmp_path, class_arrays):
    result = _frozen_run(tmp_path, FROZEN_CLASSES + "validation: {scheme: kfold, n_splits: 2, repeats: 2, "
                         "shuffle: true, stratify: true}\n", class_arrays)
    y = class_arrays["y_train"]
    splits = json.loads((result.path / "folds.json").read_text())["splits"]
    assert [s["id"] for s in splits] == ["r0-f0", "r0-f1", "r1-f0", "r1-f1"]
    assert splits[0]["val_idx"] != splits[2]["val_idx"], "each repeat reshuffles"
    totals = np.bincount(y, minlength=3)
    per_fold = []
    for split in splits:
        counts = np.bincount(y[split["val_idx"]], minlength=3)
        assert np.all(np.abs(counts - totals / 2) <= 0.5), (split["id"], counts, "the run's labels stratify it")
        per_fold.append(class_baseline(y[split["train_idx"]], y[split["val_idx"]]))
    b = result.metrics["baseline"]
    assert b["metric"] == "accuracy"
    assert b["validation"]["majority_accuracy"] == pytest.approx(np.mean([p[0] for p in per_fold]))
    assert b["validation"]["random_accuracy"] == pytest.approx(np.mean([p[1] for p in per_fold]))
    assert b["value"] == pytest.approx(np.mean([max(p) for p in per_fold]))
    m = result.metrics
    assert b["model"] in (pytest.approx(m["validation"]["best"]["accuracy"]),
                          pytest.approx(last(m["validation"])["accuracy"]))
    assert_margin(b, loss_like=False)
