"""The run folder as a user meets it: applying a trained run to new data from the folder alone
(preprocessing.json), callback files inside the run folder, summary.txt, file permissions, and the
command-line edges (--version, --name, a missing Keras backend)."""

import csv
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def iris_csv(tmp_path):
    """iris as a user's CSV files with string labels: train.csv (120 rows) and test.csv (30 rows)."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    order = np.random.default_rng(0).permutation(150)
    names = [str(bunch.target_names[i]) for i in bunch.target]
    for file, rows in (("train.csv", order[:120]), ("test.csv", order[120:])):
        with open(tmp_path / file, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*COLUMNS, "species"])
            for i in rows:
                writer.writerow([*(f"{v:.1f}" for v in bunch.data[i]), names[i]])
    return tmp_path


IRIS_CSV = """\
seed: 1
dataset: {name: csv, path: train.csv, test_path: test.csv, target: species}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 8, activation: relu}
    - {layer: Dense, units: 3, activation: softmax}
compile:
  optimizer: {name: adam, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
training: {epochs: 2, batch_size: 16}
"""


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [row[name] for row in rows] for name in rows[0]}


def only_run(runs_dir: Path) -> Path:
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def train_cli(folder: Path, text: str, command: str = "train", *extra) -> Path:
    config = folder / "exp.yaml"
    config.write_text(text)
    result = invoke(command, config, "--runs-dir", folder / "runs", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return only_run(folder / "runs")


def apply_saved(run: Path, table: dict):
    """What a user does with a run folder and new data: a few lines, nothing but the folder's files."""
    import keras

    record = json.loads((run / "preprocessing.json").read_text())
    x = np.stack([np.asarray(table[name], dtype="float32") for name in record["feature_names"]], axis=1)
    stats = record["statistics"]["x"]
    x = (x - np.asarray(stats["mean"], dtype="float32")) / np.asarray(stats["std"], dtype="float32")
    y = np.array([record["labels"]["class_names"].index(name) for name in table["species"]])
    model = keras.saving.load_model(run / record["models"][0])
    return record, model.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.parametrize("validation", [
    "{scheme: holdout, size: 0.25, shuffle: true}",
    "{scheme: holdout, size: 0.25, shuffle: true, final: {epochs: 2}}",
    "{scheme: kfold, n_splits: 2, final: {epochs: 2}}",
])
def test_the_saved_model_and_preprocessing_reproduce_the_test_metrics(iris_csv, validation):
    command = "kfold" if "kfold" in validation else "train"
    run = train_cli(iris_csv, IRIS_CSV + f"validation: {validation}\n", command)
    metrics = json.loads((run / "metrics.json").read_text())
    record, scores = apply_saved(run, read_csv(iris_csv / "test.csv"))
    assert record["models"][0] == "model.keras"
    assert scores["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert scores["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert record["labels"]["class_names"] == ["setosa", "versicolor", "virginica"]
    assert record["labels"]["encoding"] == "sparse"
    train = read_csv(iris_csv / "train.csv")
    x = np.stack([np.asarray(train[c], dtype="float32") for c in COLUMNS], axis=1)
    stats = record["statistics"]["x"]
    if "final" in validation:  # the retrained model saw every training row, so do its statistics
        assert record["fitted_on"] == {"split": "final", "n_samples": 120}
        np.testing.assert_allclose(stats["mean"], x.mean(axis=0), rtol=1e-5)
    else:
        assert record["fitted_on"] == {"split": "holdout", "n_samples": 90}
        assert record["models"] == ["model.keras", "best.keras"]
    assert stats["n_samples"] == record["fitted_on"]["n_samples"]


def test_holdout_with_a_final_model_keeps_the_holdout_models_preprocessing_apart(iris_csv):
    run = train_cli(iris_csv, IRIS_CSV + "validation: {scheme: holdout, size: 0.25, final: {epochs: 1}}\n")
    best = json.loads((run / "best_preprocessing.json").read_text())
    final = json.loads((run / "preprocessing.json").read_text())
    assert best["models"] == ["best.keras"] and final["models"] == ["model.keras"]
    assert best["fitted_on"] == {"split": "holdout", "n_samples": 90}
    assert best["statistics"]["x"]["mean"] != final["statistics"]["x"]["mean"]


def test_kfold_folds_keep_their_own_preprocessing_record(iris_csv):
    run = train_cli(iris_csv, IRIS_CSV + "validation: {scheme: kfold, n_splits: 2}\n", "kfold")
    splits = json.loads((run / "folds.json").read_text())["splits"]
    train = read_csv(iris_csv / "train.csv")
    x = np.stack([np.asarray(train[c], dtype="float32") for c in COLUMNS], axis=1)
    for split in splits:
        record = json.loads((run / "folds" / split["id"] / "preprocessing.json").read_text())
        assert record["fitted_on"] == {"split": split["id"], "n_samples": len(split["train_idx"])}
        np.testing.assert_allclose(record["statistics"]["x"]["mean"], x[split["train_idx"]].mean(axis=0), rtol=1e-5)
        assert record["labels"]["class_names"] == ["setosa", "versicolor", "virginica"]
    assert not (run / "model.keras").exists() and not (run / "preprocessing.json").exists(), \
        "no final model: nothing at the top to apply"


# --------------------------------------------------------------------------- callbacks
CALLBACKS = """\
  callbacks:
    - {name: CSVLogger, filename: logs/cb.csv}
    - {name: ModelCheckpoint, filepath: ckpt/last.keras}
    - {name: BackupAndRestore, backup_dir: backup}
    - {name: CSVLogger, filename: %s}
"""


def test_relative_callback_paths_land_in_the_run_folder_absolute_ones_stay(iris_csv, tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    absolute = tmp_path / "absolute.csv"
    text = IRIS_CSV.replace("training: {epochs: 2, batch_size: 16}\n",
                            "training:\n  epochs: 2\n  batch_size: 16\n" + CALLBACKS % absolute)
    run = train_cli(iris_csv, text + "validation: {scheme: kfold, n_splits: 2, final: {epochs: 1}}\n", "kfold")
    for part in ("folds/r0-f0", "folds/r0-f1", "final"):
        assert (run / part / "logs" / "cb.csv").is_file(), part
        assert (run / part / "ckpt" / "last.keras").is_file(), part
    assert len((run / "folds/r0-f0/logs/cb.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert list(elsewhere.iterdir()) == [], "nothing is written into the current directory"
    assert absolute.is_file()


def test_holdout_callback_files_land_at_the_top_of_the_run_folder(iris_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = IRIS_CSV.replace("training: {epochs: 2, batch_size: 16}\n",
                            "training:\n  epochs: 2\n  callbacks: [{name: CSVLogger, filename: cb.csv}]\n")
    run = train_cli(iris_csv, text)
    assert (run / "cb.csv").is_file()
    assert not (tmp_path / "cb.csv").exists()


# --------------------------------------------------------------------------- files
def test_summary_is_written_at_full_width_whatever_the_terminal(tiny_config, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    run = train_cli(tiny_config.parent, tiny_config.read_text())
    summary = (run / "summary.txt").read_text()
    header = next(line for line in summary.splitlines() if "Layer (type)" in line)
    assert "Output Shape" in header and "Param #" in header, summary
    assert "(Dense)" in summary and "Total params" in summary


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_file_of_a_run_follows_the_users_umask(tiny_config, umask, mode):
    previous = os.umask(umask)
    try:
        run = train_cli(tiny_config.parent, tiny_config.read_text())
    finally:
        os.umask(previous)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"status.json", "config.yaml", "config.json", "metrics.json", "preprocessing.json",
            "history.csv", "model.keras"} <= {p.name for p in files}
    wrong = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != mode}
    assert not wrong, wrong


# --------------------------------------------------------------------------- command line
def test_version_option_prints_the_version():
    import kexp

    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"kexp {kexp.__version__}"


def test_a_bad_name_option_is_reported_as_the_option_not_a_config_key(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--name", "a/b", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    err = stderr_of(result)
    assert err.startswith("--name: "), err
    assert "'a/b'" in err and f"{tiny_config}: name" not in err
    assert not (tmp_path / "runs").exists()


def test_a_bad_name_option_and_config_errors_are_reported_together(tiny_config, tmp_path):
    tiny_config.write_text(tiny_config.read_text().replace("epochs: 2", "epochs: -2"))
    result = invoke("train", tiny_config, "--name", "a/b", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    lines = stderr_of(result).splitlines()
    assert lines[0].startswith("--name: ")
    assert any(line.startswith(f"{tiny_config}: training.epochs") for line in lines), lines


MISSING_BACKEND = next((name for name in ("jax", "torch") if importlib.util.find_spec(name) is None), None)


@pytest.mark.skipif(MISSING_BACKEND is None, reason="jax and torch are both installed here")
@pytest.mark.parametrize("command", ["validate", "train"])
def test_a_keras_backend_whose_package_is_missing_is_a_one_line_error(tiny_config, tmp_path, command):
    env = {**os.environ, "KERAS_BACKEND": MISSING_BACKEND, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "kexp", command, str(tiny_config)], cwd=tmp_path, env=env,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "KERAS_BACKEND" in lines[0], proc.stderr
    assert lines[0].endswith(f'pip install "kexp[{MISSING_BACKEND}]"'), proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_keras_home_config_naming_a_missing_backend_is_the_same_error(tiny_config, tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "nosuchbackend"}))
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    result = invoke("validate", tiny_config)
    assert result.exit_code == 2, result.output
    assert "nosuchbackend" in stderr_of(result) and "keras.json" in stderr_of(result)

