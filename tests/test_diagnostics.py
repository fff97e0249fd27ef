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

    code = "import sys, kexp.diagnostics as d; print(d.metric_mode('loss'), 'numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["min", "False"]


def test_noisy_overfitting_is_still_seen():
    # lowest at epoch 5, then up with a dip that stays above the minimum: no need to rise every epoch
    val = [1.0, 0.8, 0.65, 0.55, 0.5, 0.58, 0.56, 0.66, 0.7, 0.78]
    assert d.overfit_onset(falling(10), val) == 5


def test_a_bump_that_comes_back_down_is_no_overfitting():
    val = [1.0, 0.8, 0.6, 0.5, 0.45, 0.7, 0.6, 0.47, 0.46]  # ends within 2% of the range of its minimum
    assert d.overfit_onset(falling(9), val) is None


# --------------------------------------------------------------------------- mutation-testing kills (TESTING.md)
def test_metric_mode_of_a_name_that_is_neither_a_loss_nor_a_score_is_min_like_keras_auto():
    assert d.metric_mode("foo") == "min" and d.metric_mode("val_something") == "min"


U_VAL = [2.0, 1.5, 1.0, 1.5, 1.6, 1.7]  # lowest at epoch 3 (index 2), clearly up after it


@pytest.mark.parametrize("train, val, patience, expected", [
    (falling(6), U_VAL, 0, None),  # patience must be at least 1
    (falling(4), [1.0, 0.5, 0.2, 0.9], 1, 3),  # one epoch after the minimum is enough with patience 1
    ([3.0, 2.0, 1.0], [0.2, 0.9, 1.0], 2, 1),  # exactly patience + 1 epochs
    (falling(5), [1.0, 0.8, 0.5, 0.2, 0.9], 2, None),  # only one epoch after the minimum
    (falling(5), [1.0, 0.5, 0.2, 0.7, 0.9], 2, 3),  # exactly `patience` epochs after it
    (falling(4), [1.0, 0.5, math.nan, math.nan], 2, None),  # nothing finite after the minimum
    ([5.0, 4.0, 3.0, 2.0, 2.0, 3.5], U_VAL, 1, None),  # training loss back up at the end
    ([5.0, 4.0, math.nan, 2.0, 1.0, 0.5], U_VAL, 2, None),  # no training loss at the minimum
    ([5.0, 4.0, 3.0, 2.0, math.nan, 0.5], U_VAL, 2, None),  # none `patience` epochs later
    ([5.0, 4.0, 3.0, 2.0, 3.0, 2.0], U_VAL, 2, None),  # training loss only level `patience` epochs later
    ([5.0, 4.0, 3.0, 2.0, 2.0, 3.0], U_VAL, 2, None),  # ... and at the end
])
def test_overfit_onset_conditions_at_their_limits(train, val, patience, expected):
    assert d.overfit_onset(train, val, patience=patience) == expected


@pytest.mark.parametrize("val, min_rise, expected", [
    ([11.0, 6.0, 1.0, 1.1, 1.1], 0.02, None),  # a rise of 1% of the range: a wobble
    ([21.0, 15.0, 10.0, 10.3, 10.3], 0.02, 3),  # 2.7% of the range (11), measured from the minimum
    ([2.0, 1.5, 1.0, 1.9, 1.01, 1.03], 0.02, 3),  # the mean over every epoch after the minimum counts
    ([2.0, 1.9, 1.0, 1.01, 1.01, 1.03], 0.02, None),  # ... and only those: the mean rise is 1.7%
    ([3.0, 2.0, 1.0, 1.5, 2.5], 0.5, None),  # mean rise exactly min_rise * range: not more than it
    ([3.0, 2.0, 1.0, 2.5, 2.0], 0.5, None),  # last epoch exactly min_rise * range above the minimum
])
def test_overfit_onset_needs_a_rise_of_more_than_min_rise_of_the_range(val, min_rise, expected):
    assert d.overfit_onset(falling(len(val)), val, min_rise=min_rise) == expected


def test_summary_sentences_in_full():
    assert d.summary_sentence([], []) == "No validation loss was recorded, so overfitting cannot be judged."
    assert d.summary_sentence([1.0], [1.0]) == (
        "No overfitting seen in 1 epoch: validation loss was still at its lowest at the end.")
    assert d.summary_sentence([1.0, 0.9], [1.0, 0.8]) == (
        "No overfitting seen in 2 epochs: validation loss was still at its lowest at the end.")
    assert d.summary_sentence([1.0] * 5, [1.0, 0.5, 0.6, 0.55, 0.7]) == (
        "No overfitting seen in 5 epochs (validation loss was lowest at epoch 2).")
    val = [1.0 + 0.02 * (e - 4) ** 2 for e in range(1, 11)]
    assert d.summary_sentence(falling(10), val, 4, 5) == (
        "Validation loss was lowest at epoch 4 and rose afterwards while training loss kept falling: the model "
        "starts overfitting after epoch 4 (the monitored metric was best at epoch 5).")


def test_ema_keeps_leading_nan_as_nan():
    smoothed = d.ema([math.nan, 1.0, None, 3.0], 0.5)
    assert math.isnan(smoothed[0]) and smoothed[1:] == [1.0, 1.0, 2.0]


def test_aggregate_leaves_out_text_and_numpy_nan():
    mean, std = d.aggregate([{"x": "1.5", "y": np.float32("nan")}, {"x": 2.0, "y": np.float64(1.0)}])
    assert mean == {"x": 2.0, "y": 1.0} and std == {"x": 0.0, "y": 0.0}


def test_baseline_result_names_the_task_and_has_no_margin_without_a_model():
    result = d.baseline("binary", [0, 0, 0, 1], [0, 1, 1, 1])
    assert result["task"] == "binary" and result["margin"] is None and result["beats"] is None
    with pytest.raises(ValueError, match=r"^task must be one of binary, multiclass, regression; got 'ranking'$"):
        d.baseline("ranking", [0, 1], [0, 1])


def test_a_model_equal_to_the_baseline_does_not_beat_it():
    equal = d.baseline("binary", [0, 0, 0, 1], [0, 1, 1, 1], model_value=0.375)
    assert equal["margin"] == pytest.approx(0.0) and equal["beats"] is False


def test_several_outputs_pick_the_first_training_output_in_every_part_whatever_their_order():
    y_train = {"tag": [1, 1, 0], "other": [0, 0, 0]}
    result = d.baseline("binary", y_train, {"other": [0, 0], "tag": [1, 0]}, {"other": [0], "tag": [1, 1]})
    assert result["output"] == "tag"
    assert result["validation"]["majority_accuracy"] == 0.5 and result["test"]["majority_accuracy"] == 1.0
    missing = d.baseline("binary", y_train, {"other": [1, 0]}, {"rest": [1, 1]})  # no such output: the first
    assert missing["validation"]["majority_accuracy"] == 0.5 and missing["test"]["majority_accuracy"] == 1.0


def test_baseline_needs_samples_on_both_sides_and_one_each_is_enough():
    for y_train, y_val in (([], [0, 1]), ([0, 1], [])):
        with pytest.raises(ValueError, match=r"^y_train and y_val must not be empty$"):
            d.baseline("binary", y_train, y_val)
    assert d.baseline("binary", [1], [0])["validation"]["majority_accuracy"] == 0.0


def test_regression_baseline_predicts_the_mean_of_each_output_column():
    one = d.baseline("regression", [1.0, 3.0], [2.0])
    assert one["predict"] == 2.0 and isinstance(one["predict"], float) and one["metric"] == "mae"
    two = d.baseline("regression", [[1.0, 10.0], [3.0, 30.0]], [[2.0, 20.0]])
    assert two["predict"] == [2.0, 20.0] and two["validation"] == {"mae": 0.0, "mse": 0.0}
    column = d.baseline("regression", [[1.0], [3.0]], [[2.0]])
    assert column["predict"] == [2.0]


def test_random_guessing_scores_a_class_unseen_in_training_as_never_guessed():
    result = d.baseline("multiclass", [0, 0, 1], [2, 2, 0])
    assert result["validation"] == pytest.approx({"majority_accuracy": 1 / 3, "random_accuracy": 2 / 3 * 1 / 3})


@pytest.mark.parametrize("task, metric, expected", [
    ("regression", "val_mae", "mae"), ("regression", "Mean_Squared_Error", "mse"),
    ("binary", "Val_Accuracy", "accuracy"),
    ("multiclass", "sparse_categorical_accuracy", "accuracy"), ("binary", None, "accuracy"),
])
def test_baseline_metric_names_are_read_without_case_or_val_prefix(task, metric, expected):
    assert d.baseline(task, [0, 1, 1], [1, 1], metric=metric)["metric"] == expected


@pytest.mark.parametrize("task, metric, allowed", [("binary", "mae", "accuracy"), ("regression", "acc", "mae, mse")])
def test_a_metric_without_a_baseline_says_which_have_one(task, metric, allowed):
    with pytest.raises(ValueError, match=rf"^metric '{metric}' has no baseline for a {task} task; allowed: {allowed}$"):
        d.baseline(task, [0, 1], [0, 1], metric=metric)


@pytest.mark.parametrize("y_train, y_val", [
    ([[0], [1], [1]], [[1], [0]]),  # (n, 1) columns of class ids
    (np.eye(2)[[0, 1, 1]], np.eye(2)[[1, 0]]),  # binary one-hot rows
    (np.eye(3)[[0, 1, 1]][:, None, :], np.eye(3)[[1, 0]][:, None, :]),  # (n, 1, k) one-hot
])
def test_class_ids_come_from_columns_and_one_hot_rows(y_train, y_val):
    result = d.baseline("binary", y_train, y_val)
    assert result["majority_class"] == 1 and result["validation"]["majority_accuracy"] == 0.5


def test_best_epoch_without_a_finite_value_says_so():
    with pytest.raises(ValueError, match=r"^no finite value to choose a best epoch from$"):
        d.best_epoch([float("nan"), None], "min")


@pytest.mark.parametrize("task, name, expected", [
    ("binary", "val_accuracy", "accuracy"), ("multiclass", "VAL_ACC", "accuracy"),
    ("regression", "val_mae", "mae"), ("regression", "Val_Mean_Squared_Error", "mse"),
    ("binary", "loss", None), ("binary", "val_auc", None), ("regression", "val_accuracy", None),
])
def test_comparable_metric_reads_validation_names_in_any_case(task, name, expected):
    assert d.comparable_metric(task, name) == expected


def test_overfit_onset_needs_a_positive_patience_and_enough_epochs_after_the_minimum():
    train, val = [3.0, 2.0, 1.0, 0.5], [1.0, 2.0, 3.0, 4.0]
    assert d.overfit_onset(train, val) == 1
    assert d.overfit_onset(train, val, patience=0) is None
    assert d.overfit_onset(train, val, patience=-1) is None
    assert d.overfit_onset(train[:2], val[:2]) is None  # one epoch after the minimum, patience 2
    assert d.overfit_onset(train[:3], val[:3]) == 1


def test_at_epoch_counts_epochs_from_one_and_leaves_out_epochs_outside_the_history():
    histories = [{"loss": [1.0, 2.0], "val_loss": [3.0, 4.0]}, {"loss": [2.0, 3.0], "val_loss": [5.0, 6.0]}]
    assert d.at_epoch(histories, 1) == ({"loss": 4.0}, {"loss": 1.0})
    assert d.at_epoch(histories, 1, validation=False) == ({"loss": 1.5}, {"loss": 0.5})
    assert d.at_epoch(histories, 0) == ({}, {})
    assert d.at_epoch(histories, 3) == ({}, {})
