"""kexp.data.tables: `dataset.positive_class` renumbers a binary target of any loader (CSV, NPZ,
scikit-learn), per output where there are several, and refuses targets it cannot apply to."""

from __future__ import annotations

import numpy as np
import pytest

from kexp.config import CsvData, NpzData, SklearnData
from kexp.data import load_dataset
from kexp.errors import DataError


def csv(tmp_path, text, **spec):
    (tmp_path / "d.csv").write_text(text)
    return load_dataset(CsvData(name="csv", path="d.csv", **{"target": "y", **spec}), config_dir=tmp_path)


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
