"""The user's own tabular data (CSV, NPZ): every bad cell reported at once, categorical columns,
the missing-value policy, the positive class; end to end, the per-fold fit of imputer and one-hot."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of

from kexp.config import CsvData, NpzData, SklearnData, load_config
from kexp.datasets import load_dataset
from kexp.errors import DataError
from kexp.experiment import execute


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def csv(tmp_path, text, **spec):
    write(tmp_path / "d.csv", text)
    return load_dataset(CsvData(name="csv", path="d.csv", **{"target": "y", **spec}), config_dir=tmp_path)


def problems_of(tmp_path, text, **spec) -> list[str]:
    with pytest.raises(DataError) as info:
        csv(tmp_path, text, **spec)
    return info.value.problems


# --------------------------------------------------------------------------- every bad cell at once
BAD = """\
    age,city,income,y
    30,Paris,100,a
    ,Lyon,x,b
    25,Nice,200,
    NA,Paris,y,a
    40,Lyon,,b
    """


def test_csv_reports_every_bad_column_once_with_a_count_and_the_lines(tmp_path):
    problems = problems_of(tmp_path, BAD)
    path = tmp_path / "d.csv"
    assert len(problems) == 4, problems  # age, city, income, y: one line each
    age, city, income, target = problems
    assert age == (f"dataset.path: {path}: column 'age': 2 missing cells (empty or NA), lines 3, 5; "
                   "to drop or fill missing cells, set dataset.missing: drop, mean or most_frequent")
    assert city.startswith(f"dataset.path: {path}: line 2, column 'city': not a finite number; got 'Paris' "
                           "(5 such cells in the column, lines 2, 3, 4, 5, 6)")
    assert "add it to dataset.categorical" in city
    assert "2 such cells in the column, lines 3, 5" in income and "1 missing cell (empty or NA), line 6" in income
    assert "add it to dataset.categorical" in income and "dataset.missing" in income
    assert target.endswith("column 'y': 1 empty target cell, line 4; targets are never imputed; fill them, "
                           "or set dataset.missing: drop to drop those rows")


def test_csv_a_long_list_of_bad_lines_is_cut_with_a_count(tmp_path):
    rows = "".join(f"{'?' if i % 2 else i},{i % 2}\n" for i in range(30))
    (problem,) = problems_of(tmp_path, "a,y\n" + rows)
    assert "(15 such cells in the column, lines 3, 5, 7, 9, 11 and 10 more)" in problem


def test_csv_test_file_problems_come_with_the_training_file_problems(tmp_path):
    write(tmp_path / "t.csv", "a,y\n1,0\nx,1\n")
    with pytest.raises(DataError) as info:
        csv(tmp_path, "a,y\n1,0\n,1\n", test_path="t.csv")
    assert [p.split(": ")[0] for p in info.value.problems] == ["dataset.path", "dataset.test_path"]


# --------------------------------------------------------------------------- categorical columns
def test_csv_categorical_columns_stay_strings_for_the_preprocessing(tmp_path):
    data = csv(tmp_path, "n,city,y\n1,Paris,0\n2,Lyon,1\n3, Nice ,0\n4,Paris,1\n5,Lyon,0\n",
               categorical=["city"], test_split=0.2)
    assert data.categorical == {"x": [1]}
    assert data.x_train.dtype == object and data.x_train.shape == (4, 2)
    everything = np.concatenate([data.x_train, data.x_test])
    assert sorted(everything[:, 1]) == ["Lyon", "Lyon", "Nice", "Paris", "Paris"]
    assert sorted(everything[:, 0]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_csv_categorical_in_grouped_inputs_marks_its_own_input(tmp_path):
    data = csv(tmp_path, "a,b,c,y\n1,u,2,0\n3,v,4,1\n5,u,6,0\n7,v,8,1\n",
               features={"nums": ["a", "c"], "cats": ["b", "a"]}, categorical=["b"], test_split=0.25)
    assert data.categorical == {"cats": [0]}
    assert data.x_train["nums"].dtype == np.float32 and data.x_train["cats"].dtype == object


@pytest.mark.parametrize("categorical, match", [
    (["y"], r"dataset\.categorical: 'y' is a target"),
    (["citty"], r"dataset\.categorical: unknown column \(did you mean city\?\); got 'citty'; allowed: n, city"),
])
def test_csv_categorical_names_feature_columns(tmp_path, categorical, match):
    with pytest.raises(DataError, match=match):
        csv(tmp_path, "n,city,y\n1,Paris,0\n2,Lyon,1\n", categorical=categorical)


def test_csv_categorical_outside_the_selected_features_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.categorical: 'city' is not one of dataset\.features"):
        csv(tmp_path, "n,city,y\n1,Paris,0\n2,Lyon,1\n", features=["n"], categorical=["city"])


# --------------------------------------------------------------------------- missing values
MISSING = """\
    a,b,y
    1,10,0
    ,20,1
    3,nan,0
    4,40,
    5,50,1
    """


def test_csv_missing_drop_drops_the_rows_of_any_missing_cell(tmp_path):
    data = csv(tmp_path, MISSING, missing="drop", test_split=0.5)
    rows = np.concatenate([data.x_train, data.x_test])
    assert sorted(rows[:, 0].tolist()) == [1.0, 5.0]
    assert len(data.y_train) + len(data.y_test) == 2


def test_csv_missing_drop_applies_to_the_test_file_too(tmp_path):
    write(tmp_path / "t.csv", "a,b,y\n7,N/A,1\n8,80,0\n")
    data = csv(tmp_path, MISSING, missing="drop", test_path="t.csv")
    assert data.x_train[:, 0].tolist() == [1.0, 5.0] and data.x_test[:, 0].tolist() == [8.0]


def test_csv_missing_drop_of_every_row_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.missing: drop leaves no row"):
        csv(tmp_path, "a,y\n,0\nNA,1\n", missing="drop")


@pytest.mark.parametrize("policy", ["mean", "most_frequent"])
def test_csv_missing_imputation_keeps_nan_for_the_preprocessing(tmp_path, policy):
    with pytest.raises(DataError, match=r"column 'y': 1 empty target cell, line 5"):
        csv(tmp_path, MISSING, missing=policy)  # targets are never imputed
    data = csv(tmp_path, MISSING.replace("4,40,\n", "4,40,1\n"), missing=policy, test_split=0.2)
    rows = np.concatenate([data.x_train, data.x_test])
    assert rows.dtype == np.float32 and np.isnan(rows).sum() == 2


def test_csv_text_that_is_not_a_missing_marker_is_still_an_error_under_imputation(tmp_path):
    (problem,) = problems_of(tmp_path, "a,y\n1,0\n-,1\n3,0\n", missing="mean")
    assert "line 3, column 'a': not a finite number; got '-'" in problem and "dataset.missing" not in problem


# --------------------------------------------------------------------------- the positive class
FRAUD = "amount,label\n" + "".join(f"{i},{'fraud' if i % 3 == 0 else 'ok'}\n" for i in range(30))


def test_csv_positive_class_gets_id_1(tmp_path):
    plain = csv(tmp_path, FRAUD, target="label", test_split=0.2)
    assert plain.class_names == ["fraud", "ok"]  # alphabetical: fraud would be class 0
    data = csv(tmp_path, FRAUD, target="label", test_split=0.2, positive_class="fraud")
    assert data.class_names == ["ok", "fraud"]
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, (x[:, 0] % 3 == 0).astype("int64"))
    np.testing.assert_array_equal(data.y_train, 1 - plain.y_train)


def test_positive_class_is_a_no_op_when_it_is_id_1_already(tmp_path):
    plain = csv(tmp_path, FRAUD, target="label")
    data = csv(tmp_path, FRAUD, target="label", positive_class="ok")
    assert data.class_names == plain.class_names == ["fraud", "ok"]
    np.testing.assert_array_equal(data.y_train, plain.y_train)


@pytest.mark.parametrize("text, positive, match", [
    (FRAUD, "frod", (r"dataset\.positive_class: not a class of the target \(did you mean fraud\?\); "
                     r"got 'frod'; allowed: fraud, ok")),
    ("a,label\n1,x\n2,y\n3,z\n4,x\n5,y\n", "x", (r"dataset\.positive_class: applies to a target of two named "
                                                 r"classes; this target has 3 classes \(x, y, z\); remove it")),
    ("a,label\n1,0\n2,1\n3,0\n4,1\n5,1\n", "1", r"holds 0/1 numbers, where 1 is the positive class already"),
    ("a,label\n1,0.5\n2,1.5\n3,0\n4,1\n5,1\n", "1", r"this target is a regression target; remove it"),
    (FRAUD, {"label": "fraud"}, r"the data has one output; give the class name alone"),
])
def test_positive_class_problems(tmp_path, text, positive, match):
    with pytest.raises(DataError, match=match):
        csv(tmp_path, text, target="label", positive_class=positive)


def test_positive_class_per_output(tmp_path):
    text = "a,risk,grade\n" + "".join(f"{i},{'high' if i % 2 else 'low'},{'ab'[i % 2]}\n" for i in range(20))
    targets = {"risk": "risk", "grade": "grade"}
    data = csv(tmp_path, text, target=targets, positive_class={"risk": "high"})
    assert data.class_names == {"risk": ["low", "high"], "grade": ["a", "b"]}
    np.testing.assert_array_equal(data.y_train["risk"], data.x_train[:, 0] % 2)
    with pytest.raises(DataError, match=r"dataset\.positive_class\.rsk: unknown output \(did you mean risk\?\)"):
        csv(tmp_path, text, target=targets, positive_class={"rsk": "high"})
    with pytest.raises(DataError, match=r"several outputs .*e\.g\. positive_class: \{risk: high\}"):
        csv(tmp_path, text, target=targets, positive_class="high")


def test_npz_string_labels_take_the_positive_class(tmp_path):
    x = np.arange(10, dtype="float32").reshape(10, 1)
    y = np.array(["spam" if i % 2 else "ham" for i in range(10)])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data = load_dataset(NpzData(name="npz", path="d.npz", positive_class="ham"), config_dir=tmp_path)
    assert data.class_names == ["spam", "ham"]
    np.testing.assert_array_equal(data.y_train, (data.x_train[:, 0] % 2 == 0).astype("int64"))


def test_breast_cancer_can_make_malignant_the_positive_class():
    plain = load_dataset(SklearnData(name="breast_cancer"))
    data = load_dataset(SklearnData(name="breast_cancer", positive_class="malignant"))
    assert plain.class_names == ["malignant", "benign"] and data.class_names == ["benign", "malignant"]
    np.testing.assert_array_equal(data.y_test, 1 - plain.y_test)


# --------------------------------------------------------------------------- end to end
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


# --------------------------------------------------------------------------- NPZ missing values, images
def npz_with_holes(tmp_path):
    x = np.arange(12, dtype="float32").reshape(6, 2)
    x[1, 0] = x[4, 1] = np.nan
    np.savez(tmp_path / "h.npz", x_train=x, y_train=np.arange(6, dtype="float32"),
             x_test=np.array([[np.nan, 1.0]], dtype="float32"), y_test=np.zeros(1, dtype="float32"))


def test_npz_nan_inputs_are_reported_for_every_array(tmp_path):
    npz_with_holes(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(NpzData(name="npz", path="h.npz"), config_dir=tmp_path)
    path = tmp_path / "h.npz"
    assert info.value.problems == [
        (f"dataset.x: {path}: 2 rows hold missing values (NaN), rows 1, 4 (from 0); to drop or fill them, "
         "set dataset.missing: drop, mean or most_frequent"),
        (f"dataset.x_test: {path}: 1 row holds missing values (NaN), row 0 (from 0); to drop or fill them, "
         "set dataset.missing: drop, mean or most_frequent"),
    ]


def test_npz_missing_drop_and_mean(tmp_path):
    npz_with_holes(tmp_path)
    dropped = load_dataset(NpzData(name="npz", path="h.npz", missing="drop"), config_dir=tmp_path)
    assert dropped.y_train.tolist() == [0.0, 2.0, 3.0, 5.0] and len(dropped.x_test) == 0
    kept = load_dataset(NpzData(name="npz", path="h.npz", missing="mean"), config_dir=tmp_path)
    assert np.isnan(kept.x_train).sum() == 2 and kept.x_train.shape == (6, 2)


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
