"""The user's tabular data end to end (the loaders' own tests are tests/test_data_csv.py and
test_data_npz.py): the per-fold fit of imputer and one-hot, `validate` on a text column, NPZ images
through Conv2D, and an NPZ run resumed from its own config.yaml."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of

from kexp.config import load_config
from kexp.data import load_dataset
from kexp.experiment import execute


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


CONFIG = """\
    seed: 0
    dataset: {name: csv, path: train.csv, test_path: test.csv, target: label, categorical: [city],
              missing: mean, positive_class: fraud}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 4, activation: relu}
        - {layer: Dense, units: 1, activation: sigmoid}
    compile: {loss: binary_crossentropy, metrics: [accuracy]}
    training: {epochs: 1, batch_size: 8}
    validation: {scheme: kfold, n_splits: 2, shuffle: false}
    """


def tabular_files(tmp_path):
    """12 training rows: the first 6 (fold 0's validation part) have ages near 100 and the only
    'Nice' rows; the last 6 have ages near 10 and one missing age."""
    rows = [(100 + i, "Nice" if i % 2 else "Paris", "fraud" if i % 3 else "ok") for i in range(6)]
    rows += [(10 + i, "Lyon" if i % 2 else "Paris", "fraud" if i % 2 else "ok") for i in range(6)]
    rows[9] = ("", rows[9][1], rows[9][2])
    write(tmp_path / "train.csv", "age,city,label\n" + "".join(f"{a},{c},{y}\n" for a, c, y in rows))
    write(tmp_path / "test.csv", "age,city,label\n50,Rome,fraud\n,Lyon,ok\n")
    write(tmp_path / "exp.yaml", CONFIG)
    return rows


def fitted_statistics(folder: Path) -> dict:
    """The input's fitted statistics in a folder's preprocessing.json (under `statistics` where the
    file records more than the statistics)."""
    record = json.loads((folder / "preprocessing.json").read_text())
    return record.get("statistics", record)["x"]


def test_kfold_fits_imputer_and_categories_on_each_fold_training_rows_only(tmp_path):
    rows = tabular_files(tmp_path)
    config = load_config(tmp_path / "exp.yaml")
    run = execute(config, command="kfold", runs_dir=tmp_path / "runs", config_path=tmp_path / "exp.yaml").path
    splits = json.loads((run / "folds.json").read_text())["splits"]
    assert len(splits) == 2
    for split in splits:
        fitted = fitted_statistics(run / "folds" / split["id"])
        train = [rows[i] for i in split["train_idx"]]
        ages = [float(a) for a, _, _ in train if a != ""]
        assert fitted["imputed"]["strategy"] == "mean"
        assert fitted["imputed"]["values"]["age"] == pytest.approx(np.mean(ages))
        assert fitted["one_hot"]["city"] == sorted({c for _, c, _ in train})
        assert fitted["n_samples"] == len(train) == 6
        # standardization sees the imputed ages; the one-hot columns stay 0/1
        assert fitted["mean"][0] == pytest.approx(np.mean(ages), rel=1e-5)
        assert fitted["mean"][1:] == [0.0] * len(fitted["one_hot"]["city"])
    # fold 0 validates on the first six rows: its training part has no 'Nice' and ages near 10
    first = fitted_statistics(run / "folds" / splits[0]["id"])
    assert "Nice" not in first["one_hot"]["city"] and first["imputed"]["values"]["age"] < 20


def test_a_text_column_fails_validate_with_every_column_and_the_fix(tmp_path):
    tabular_files(tmp_path)
    config = tmp_path / "exp.yaml"
    write(config, CONFIG.replace(" categorical: [city],", "").replace("missing: mean, ", ""))
    result = invoke("validate", config)
    assert result.exit_code == 2, result.output
    lines = stderr_of(result).strip().splitlines()
    assert len(lines) == 4, lines  # age and city of train.csv, then of test.csv
    assert lines[0].startswith(f"{config}: dataset.path: {tmp_path / 'train.csv'}: column 'age': 1 missing cell")
    assert lines[1].startswith(f"{config}: dataset.path: {tmp_path / 'train.csv'}: line 2, column 'city': "
                               "not a finite number; got 'Paris' (12 such cells")
    assert "add it to dataset.categorical" in lines[1]
    assert lines[2].startswith(f"{config}: dataset.test_path: {tmp_path / 'test.csv'}: column 'age'")


def test_npz_images_train_with_conv2d_after_channels_last(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 8, 8), dtype="uint8")
    np.savez(tmp_path / "img.npz", x_train=images, y_train=(images.mean(axis=(1, 2)) > 127).astype("int64"))
    write(tmp_path / "img.yaml", """\
        dataset: {name: npz, path: img.npz}
        preprocessing: {scale: 0.00392156862745098, channels_last: true}
        model:
          layers:
            - {layer: Conv2D, filters: 2, kernel_size: 3, activation: relu}
            - Flatten
            - {layer: Dense, units: 1, activation: sigmoid}
        compile: {loss: binary_crossentropy, metrics: [accuracy]}
        training: {epochs: 1, batch_size: 8}
        validation: {scheme: holdout, size: 4}
        """)
    config = load_config(tmp_path / "img.yaml")
    result = execute(config, command="train", runs_dir=tmp_path / "runs", config_path=tmp_path / "img.yaml")
    assert (result.path / "model.keras").is_file()
    assert "(None, 6, 6, 2)" in (result.path / "summary.txt").read_text()


def test_an_npz_run_without_test_arrays_reruns_and_resumes_from_its_own_config_yaml(tmp_path):
    """The run folder's config.yaml writes the default test array names out; read back, they must still
    mean "the file has none: split", as in the config the run started from (resume reads config.yaml)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(40, 3)).astype("float32"),
             y_train=rng.normal(size=40).astype("float32"))
    config = write(tmp_path / "exp.yaml", """\
        dataset: {name: npz, path: d.npz, test_split: 0.25}
        model: {layers: [{layer: Dense, units: 1}]}
        compile: {loss: mse}
        training: {epochs: 1, batch_size: 8}
        validation: {scheme: kfold, n_splits: 2}
        """)
    runs_dir = tmp_path / "runs"
    result = invoke("kfold", config, "--runs-dir", runs_dir, "--quiet")
    assert result.exit_code == 0, result.output
    (run,) = runs_dir.iterdir()
    saved = load_config(run / "config.yaml").dataset
    data = load_dataset(saved, config_dir=tmp_path)
    assert len(data.y_train) == 30 and len(data.y_test) == 10
    (run / "folds" / "r0-f1" / "metrics.json").unlink()  # as if killed before the last fold finished
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    (run / "metrics.json").unlink()
    result = invoke("kfold", "--resume", run, "--quiet")
    assert result.exit_code == 0, stderr_of(result)
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
