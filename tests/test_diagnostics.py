"""kexp.diagnostics: baselines, best epochs, overfitting onset, smoothing, fold statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexp import diagnostics as d


# --------------------------------------------------------------------------- baseline
def test_classification_baseline_by_hand():
    result = d.baseline("binary", [0, 0, 0, 1], [0, 1, 1, 1])
    assert result["validation"]["majority_accuracy"] == pytest.approx(0.25)  # predicts 0; one of four is 0
    assert result["validation"]["random_accuracy"] == pytest.approx(0.75 * 0.25 + 0.25 * 0.75)  # 0.375
    assert result["value"] == pytest.approx(0.375)  # the stronger of the two
    assert result["metric"] == "accuracy" and result["majority_class"] == 0
    assert result["test"] is None and result["model"] is None and result["beats"] is None


def test_classification_baseline_scores_test_with_training_frequencies():
    result = d.baseline("multiclass", [2, 2, 1, 0], [2, 1], [0, 0, 2, 2])
    assert result["validation"] == pytest.approx({"majority_accuracy": 0.5, "random_accuracy": 0.5 * 0.5 + 0.25 * 0.5})
    assert result["test"] == pytest.approx({"majority_accuracy": 0.5, "random_accuracy": 0.25 * 0.5 + 0.5 * 0.5})


def test_one_hot_labels_are_turned_into_class_ids():
    one_hot = np.eye(3)[[0, 0, 1, 2]]
    assert d.baseline("multiclass", one_hot, np.eye(3)[[0, 1]])["validation"]["majority_accuracy"] == 0.5


def test_margin_is_positive_when_the_model_is_better():
    better = d.baseline("binary", [0, 0, 0, 1], [0, 1, 1, 1], model_value=0.9)
    assert better["margin"] == pytest.approx(0.9 - 0.375) and better["beats"] is True
    worse = d.baseline("binary", [0, 0, 0, 1], [0, 1, 1, 1], model_value=0.3)
    assert worse["margin"] == pytest.approx(0.3 - 0.375) and worse["beats"] is False


def test_regression_baseline_predicts_the_training_mean():
    # training mean 2.0; validation errors -1, 0, 3 -> MAE 4/3, MSE 10/3
    result = d.baseline("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], [2.0, 4.0], metric="mae", model_value=1.0)
    assert result["validation"] == pytest.approx({"mae": 4 / 3, "mse": 10 / 3})
    assert result["test"] == pytest.approx({"mae": 1.0, "mse": 2.0})
    assert result["value"] == pytest.approx(4 / 3) and result["predict"] == 2.0
    assert result["margin"] == pytest.approx(4 / 3 - 1.0) and result["beats"] is True  # lower error is better
    assert d.baseline("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0], metric="mean_squared_error")["value"] == (
        pytest.approx(10 / 3))


def test_several_outputs_use_the_first_and_say_which():
    result = d.baseline("binary", {"tag": [1, 1, 0], "other": [0, 0, 0]}, {"tag": [1, 0], "other": [1, 1]})
    assert result["output"] == "tag" and result["validation"]["majority_accuracy"] == 0.5


@pytest.mark.parametrize("task, metric", [("binary", "mae"), ("regression", "accuracy"), ("ranking", None)])
def test_baseline_rejects_a_metric_or_task_it_cannot_score(task, metric):
    with pytest.raises(ValueError, match="allowed|must be one of"):
        d.baseline(task, [0, 1], [0, 1], metric=metric)


# --------------------------------------------------------------------------- best epoch and metric names
def test_best_epoch_is_one_based_and_ignores_nan():
    assert d.best_epoch([3.0, math.nan, 1.0, 2.0], "min") == 3
    assert d.best_epoch([0.5, 0.9, None, 0.9], "max") == 2  # the earliest of a tie
    with pytest.raises(ValueError, match="no finite value"):
        d.best_epoch([math.nan], "min")
    with pytest.raises(ValueError, match="mode"):
        d.best_epoch([1.0], "auto")


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1).filter(
    lambda xs: any(not math.isnan(x) for x in xs)))
def test_best_epoch_matches_numpy(values):
    assert d.best_epoch(values, "min") == int(np.nanargmin(values)) + 1
    assert d.best_epoch(values, "max") == int(np.nanargmax(values)) + 1


@pytest.mark.parametrize("name, mode", [
    ("loss", "min"), ("val_loss", "min"), ("mae", "min"), ("val_mse", "min"), ("mean_absolute_error", "min"),
    ("categorical_crossentropy", "min"), ("hinge", "min"), ("val_kl_divergence", "min"),
    ("accuracy", "max"), ("val_accuracy", "max"), ("sparse_categorical_accuracy", "max"), ("auc", "max"),
    ("val_precision", "max"), ("recall", "max"), ("f1_score", "max"), ("test_acc", "max"),
])
def test_metric_mode(name, mode):
    assert d.metric_mode(name) == mode


# --------------------------------------------------------------------------- overfitting
def falling(n: int) -> list[float]:
    return [2.0 / e for e in range(1, n + 1)]


def test_u_shaped_validation_loss_overfits_after_its_minimum():
    val = [1.0 + 0.02 * (e - 6) ** 2 for e in range(1, 21)]  # lowest at epoch 6
    assert d.overfit_onset(falling(20), val) == 6


def test_monotone_validation_loss_is_no_overfitting():
    assert d.overfit_onset(falling(20), falling(20)) is None


def test_a_single_noisy_bump_is_no_overfitting():
    val = [1.0, 0.8, 0.7, 0.75, 0.6, 0.55, 0.5, 0.48, 0.47, 0.46]
    assert d.overfit_onset(falling(10), val) is None


def test_a_wobble_on_a_plateau_is_no_overfitting():
    val = [1.0, 0.6, 0.5, 0.4, 0.399, 0.4, 0.401, 0.4005]  # rises twice, but by 0.2% of the curve's range
    assert d.overfit_onset(falling(8), val) is None


def test_rising_validation_loss_with_rising_training_loss_is_not_overfitting():
    val = [1.0, 0.5, 0.6, 0.7, 0.8]
    assert d.overfit_onset([1.0, 0.5, 0.6, 0.7, 0.8], val) is None


def test_overfit_onset_tolerates_nan_and_short_curves():
    assert d.overfit_onset([1.0], [1.0]) is None
    assert d.overfit_onset(falling(5), [math.nan] * 5) is None
    assert d.overfit_onset(falling(6), [1.0, 0.5, 0.9, math.nan, 1.0, 1.1]) is None


def test_summary_sentence():
    val = [1.0 + 0.02 * (e - 4) ** 2 for e in range(1, 11)]
    assert d.summary_sentence(falling(10), val) == (
        "Validation loss was lowest at epoch 4 and rose afterwards while training loss kept falling: "
        "the model starts overfitting after epoch 4.")
    assert d.summary_sentence(falling(20), falling(20), None).startswith("No overfitting seen in 20 epochs")
    assert "monitored metric was best at epoch 5" in d.summary_sentence(falling(10), val, 4, 5)
    assert "cannot be judged" in d.summary_sentence([], [])


# --------------------------------------------------------------------------- smoothing and folds
def test_ema_by_hand():
    assert d.ema([1.0, 2.0, 4.0], 0.5) == pytest.approx([1.0, 1.5, 2.75])
    assert d.ema([1.0, math.nan, 3.0], 0.5) == pytest.approx([1.0, 1.0, 2.0])
    assert d.ema([5.0, 1.0], 0.0) == [5.0, 1.0]
    with pytest.raises(ValueError, match="factor"):
        d.ema([1.0], 1.0)


def test_aggregate_gives_mean_and_population_std():
    mean, std = d.aggregate([{"loss": 1.0, "mae": 2.0}, {"loss": 3.0, "mae": None}, {"loss": 2.0}])
    assert mean == pytest.approx({"loss": 2.0, "mae": 2.0})
    assert std["loss"] == pytest.approx(math.sqrt(2 / 3))  # ddof=0
    assert std["mae"] == 0.0
    assert d.aggregate([{"x": math.nan}]) == ({"x": None}, {"x": None})
    assert isinstance(d.aggregate([{"x": np.float32(1.5)}])[0]["x"], float)


def test_importing_diagnostics_does_not_import_numpy():
    import subprocess
    import sys

    code = "import sys, kexp.diagnostics as d; d.metric_mode('loss'); assert 'numpy' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_noisy_overfitting_is_still_seen():
    # lowest at epoch 5, then up with a dip that stays above the minimum: no need to rise every epoch
    val = [1.0, 0.8, 0.65, 0.55, 0.5, 0.58, 0.56, 0.66, 0.7, 0.78]
    assert d.overfit_onset(falling(10), val) == 5


def test_a_bump_that_comes_back_down_is_no_overfitting():
    val = [1.0, 0.8, 0.6, 0.5, 0.45, 0.7, 0.6, 0.47, 0.46]  # ends within 2% of the range of its minimum
    assert d.overfit_onset(falling(9), val) is None
