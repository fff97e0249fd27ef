"""kexp.data.csv: the user's CSV files: string and numeric targets, the split, test files, several targets,
every bad cell reported at once, categorical columns and the missing-value policy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from kexp.config import CsvData
from kexp.data import load_dataset
from kexp.errors import DataError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def csv(tmp_path, text, **spec):
    write(tmp_path / "d.csv", text)
    return load_dataset(CsvData(name="csv", path="d.csv", **{"target": "y", **spec}), config_dir=tmp_path)


def problems_of(tmp_path, text, **spec) -> list[str]:
    with pytest.raises(DataError) as info:
        csv(tmp_path, text, **spec)
    return info.value.problems



def test_csv_string_labels_become_sorted_class_ids(tmp_path):
    rows = "".join(f"{i},{i * 0.5},{['cat', 'dog', 'bird'][i % 3]}\n" for i in range(10))
    write(tmp_path / "d.csv", "a,b,label\n" + rows)
    data = load_dataset(CsvData(name="csv", path="d.csv", target="label", seed=1), config_dir=tmp_path)
    assert data.class_names == ["bird", "cat", "dog"] and data.task == "multiclass"
    assert data.num_classes == 3 and data.feature_names == ["a", "b"]
    assert len(data.x_train) == 8 and len(data.x_test) == 2 and data.x_train.dtype == np.float32
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    for (a, _), label in zip(x, y):  # each row keeps its own label
        assert data.class_names[label] == ["cat", "dog", "bird"][int(a) % 3]


def test_csv_split_is_shuffled_by_seed_and_keeps_every_row_once(tmp_path):
    write(tmp_path / "d.csv", "i,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    tests = []
    for seed in (0, 1):
        data = load_dataset(CsvData(name="csv", path="d.csv", target="y", seed=seed, test_split=0.25),
                            config_dir=tmp_path)
        rows = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]).astype(int)
        assert sorted(rows.tolist()) == list(range(20)) and len(data.x_test) == 5
        np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), rows % 2)
        tests.append(set(data.x_test[:, 0].tolist()))
    assert tests[0] != tests[1] and tests[0] != {15.0, 16.0, 17.0, 18.0, 19.0}


@pytest.mark.parametrize("values, task, dtype, classes", [
    ([0, 1, 1, 0, 1], "binary", np.int64, 2),
    ([0, 2, 1, 2, 0], "multiclass", np.int64, 3),
    ([0.5, 1.5, 2.25, 3, 4], "regression", np.float32, None),
    ([1, 2, 3, 4, 5], "regression", np.float32, None)])  # ratings 1..5: not read as class ids
def test_csv_numeric_targets_get_a_conservative_task(values, task, dtype, classes, tmp_path):
    write(tmp_path / "d.csv", "x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    data = load_dataset(CsvData(name="csv", path=str(tmp_path / "d.csv"), target="y", test_split=0.4))
    assert (data.task, data.num_classes, data.y_train.dtype) == (task, classes, dtype)
    assert sorted(np.concatenate([data.y_train, data.y_test]).tolist()) == sorted(values)


def test_csv_test_path_keeps_rows_and_shares_class_ids(tmp_path):
    write(tmp_path / "train.csv", "f,kind\n1,b\n2,c\n3,b\n")
    write(tmp_path / "test.csv", "kind,f\na,9\nc,8\n")  # other column order, a label only in test
    data = load_dataset(CsvData(name="csv", path="train.csv", test_path="test.csv", target="kind"),
                        config_dir=tmp_path)
    assert data.class_names == ["a", "b", "c"]
    assert data.y_train.tolist() == [1, 2, 1] and data.y_test.tolist() == [0, 2]
    assert data.x_test[:, 0].tolist() == [9, 8]


def test_csv_several_targets_and_grouped_features(tmp_path):
    write(tmp_path / "d.csv", "a,b,c,kind,price\n" + "".join(
        f"{i},{i + 1},{i + 2},{'yn'[i % 2]},{i * 1.5}\n" for i in range(10)))
    data = load_dataset(CsvData(name="csv", path="d.csv", target={"kind": "kind", "price": "price"},
                                features={"left": ["a"], "right": ["c", "b"]}), config_dir=tmp_path)
    assert data.task == {"kind": "binary", "price": "regression"}
    assert data.num_classes == {"kind": 2, "price": None}
    assert data.class_names == {"kind": ["n", "y"], "price": None}
    assert data.x_train["right"].shape == (8, 2)
    np.testing.assert_array_equal(data.x_train["right"][:, 0] - data.x_train["left"][:, 0], 2)
    np.testing.assert_array_equal(data.y_train["price"], data.x_train["left"][:, 0] * 1.5)


def test_csv_bad_cell_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError, match=rf"dataset\.path: {path}: line 3, column 'b': not a finite number; got 'oops'"):
        load_dataset(CsvData(name="csv", path="d.csv", target="y"), config_dir=tmp_path)


@pytest.mark.parametrize("spec, text, match", [
    ({"target": "label"}, "a,y\n1,2\n", r"no column 'label' .*columns: a, y"),
    ({"target": "y", "test_path": "t.csv", "test_split": 0.3}, "a,y\n1,2\n", r"test_split: has no effect"),
    ({"target": "y", "features": ["a", "y"]}, "a,y\n1,2\n", r"y is also a target"),
    ({"target": "y"}, "a,y\n1,2\n3\n", r"line 3: 1 cells, but the header has 2"),
    ({"target": "y", "path": "missing.csv"}, "", r"missing\.csv: no such file"),
])
def test_csv_problems_are_data_errors(spec, text, match, tmp_path):
    write(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=match):
        load_dataset(CsvData(name="csv", **{"path": "d.csv", **spec}), config_dir=tmp_path)


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
