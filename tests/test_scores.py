"""kexp.scores on hand-made split results: no training. Named test_unit_* so that [tool.mutmut] can
select them alone (TESTING.md)."""

import numpy as np
import pytest

from kexp.scores import Outcome, aggregate, baseline_of, summarize


def _kfold_config(**validation):
    from kexp.config import validate_config

    return validate_config({"name": "unit", "dataset": {"name": "iris"},
                            "model": {"layers": [{"layer": "Dense", "units": 3}]},
                            "compile": {"optimizer": "adam", "loss": "mse"},
                            "validation": {"scheme": "kfold", "n_splits": 2, **validation}})


LOGS = [{"loss": 1.0, "mae": 0.9, "val_loss": 0.9, "val_mae": 0.8, "learning_rate": 0.01, "epoch": 1},
        {"loss": 0.5, "mae": 0.6, "val_loss": 0.7, "val_mae": 0.9, "learning_rate": 0.01, "epoch": 2},
        {"loss": 0.3, "mae": 0.2, "val_loss": 0.8, "val_mae": 0.5, "learning_rate": 0.001, "epoch": 3}]


def test_unit_summarize_gives_last_and_best_epoch_metrics_by_the_monitor_and_mode():
    assert summarize(LOGS, "val_loss", "min") == {
        "epochs_run": 3, "best_epoch": 2,
        "validation": {"last": {"loss": 0.8, "mae": 0.5}, "best": {"loss": 0.7, "mae": 0.9}},
        "train": {"last": {"loss": 0.3, "mae": 0.2}, "best": {"loss": 0.5, "mae": 0.6}}}
    assert summarize(LOGS, "val_mae", "max")["best_epoch"] == 2
    assert summarize(LOGS, "val_mae", "min")["best_epoch"] == 3
    assert summarize(LOGS, "loss", "max")["train"]["best"] == {"loss": 1.0, "mae": 0.9}


def test_unit_summarize_without_a_finite_monitor_takes_the_last_epoch_and_without_logs_says_so():
    nan = [{**entry, "val_loss": float("nan")} for entry in LOGS]
    assert summarize(nan, "val_loss", "min")["best_epoch"] == 3
    assert summarize(LOGS, "val_auc", "max")["best_epoch"] == 3  # not logged at all
    assert summarize(LOGS[:1], "val_loss", "min")["best_epoch"] == 1
    assert summarize([], "val_loss", "min") == {"epochs_run": 0, "best_epoch": None, "validation": {}, "train": {}}


def _fold(fold: int, curves: dict, last: dict, train_last: dict, *, old_format: bool = False) -> Outcome:
    validation = {"final" if old_format else "last": last, "best": {"loss": -1.0}}
    return Outcome({"id": f"r0-f{fold}", "repeat": 0, "fold": fold, "n_train": 6, "n_val": 3, "seed": fold,
                    "epochs_run": len(curves["loss"]), "best_epoch": 1, "validation": validation,
                    "train": {"last": train_last}, "duration_s": 1.5}, curves)


def _two_folds() -> list[Outcome]:
    first = _fold(0, {"loss": [3.0, 2.0, 1.0], "val_loss": [4.0, 2.0, 3.0], "val_mae": [2.0, 1.0, 1.5]},
                  {"loss": 3.0, "mae": 1.5}, {"loss": 1.0})
    second = _fold(1, {"loss": [5.0, 4.0, 3.0, 2.5], "val_loss": [6.0, 4.0, 4.0, 5.0],
                       "val_mae": [3.0, 2.0, 1.0, 1.0]}, {"loss": 4.0, "mae": 1.0}, {"loss": 3.0}, old_format=True)
    return [second, first]  # finished out of order (parallel workers)


def test_unit_aggregate_scores_the_folds_at_the_best_epoch_of_the_mean_curve():
    out = aggregate(_kfold_config(), _two_folds(), "min")
    assert [f["id"] for f in out["folds"]] == ["r0-f0", "r0-f1"]
    assert set(out["folds"][1]) == {"id", "repeat", "fold", "n_train", "n_val", "seed", "epochs_run", "best_epoch",
                                    "validation", "train", "duration_s"}
    assert out["folds"][1]["validation"] == {"last": {"loss": 4.0, "mae": 1.0}, "best": {"loss": -1.0}}  # upgraded
    assert out["curve"] == {"metric": "val_loss", "mean": [5.0, 3.0, 3.5], "std": [1.0, 1.0, 0.5],
                            "smoothed": None, "best_epoch": 2}
    assert out["best_epoch"] == 2 and out["epochs_run"] == 4
    assert out["validation"] == {"best": {"loss": 3.0, "mae": 1.5}, "best_std": {"loss": 1.0, "mae": 0.5},
                                 "last": {"loss": 3.5, "mae": 1.25}, "last_std": {"loss": 0.5, "mae": 0.25},
                                 "best_epoch_source": "mean_curve"}
    assert out["train"] == {"last": {"loss": 2.0}, "best": {"loss": 3.0}}
    assert out["curves"] == {"loss": [4.0, 3.0, 2.0], "val_loss": [5.0, 3.0, 3.5], "val_mae": [2.5, 1.5, 1.25]}
    assert "fold's training part only" in out["preprocessing"]
    assert aggregate(_kfold_config(), _two_folds(), "max")["best_epoch"] == 1


@pytest.mark.parametrize("factor, skip, smoothed, best", [
    (0.5, 0, [5.0, 4.0, 3.75], 3),  # the smoothed curve is still falling at epoch 3
    (0.5, 1, [3.0, 3.25], 2),  # epoch 1 left out: best at the first kept point, epoch 1 + 1
    (0.5, 5, [5.0, 4.0, 3.75], 3),  # a skip longer than the curve is ignored
])
def test_unit_aggregate_with_smoothing_takes_the_best_epoch_of_the_smoothed_curve(factor, skip, smoothed, best):
    out = aggregate(_kfold_config(smoothing={"factor": factor, "skip": skip}), _two_folds(), "min")
    assert out["curve"]["smoothed"] == pytest.approx(smoothed)
    assert out["curve"]["skip"] == (skip if skip < 3 else 0) and out["curve"]["factor"] == factor
    assert out["curve"]["best_epoch"] == out["best_epoch"] == best
    at = {3: {"loss": 3.5, "mae": 1.25}, 2: {"loss": 3.0, "mae": 1.5}}[best]
    assert out["validation"]["best"] == at


def test_unit_aggregate_of_folds_without_a_finite_curve_has_no_best_epoch():
    folds = _two_folds()
    for fold in folds:
        fold.history["val_loss"] = [float("nan")] * len(fold.history["val_loss"])
    out = aggregate(_kfold_config(smoothing={"factor": 0.5, "skip": 0}), folds, "min")
    assert out["best_epoch"] is None and out["curve"]["best_epoch"] is None and out["curve"]["smoothed"] is None
    assert out["validation"]["best"] == {} and out["validation"]["best_std"] == {}
    assert out["train"]["best"] == {} and out["train"]["last"] == {"loss": 2.0}


def _splits(*val_parts, n):
    from kexp.validation import Split

    return [Split(f"r0-f{i}", 0, i, np.setdiff1d(np.arange(n), val), np.asarray(val))
            for i, val in enumerate(val_parts)]


def test_unit_baseline_of_a_holdout_regression_run_is_fitted_on_training_labels():
    y = np.array([1.0, 2.0, 3.0, 10.0])
    metrics = {"best_epoch": 1, "validation": {"best": {"mae": 5.0, "loss": 9.0}, "last": {"mae": 7.0}},
               "test": {"mae": 4.0}}
    result = baseline_of("regression", y, np.array([2.0, 4.0]), _splits([3], n=4), metrics, "mae", "")
    assert result["validation"] == pytest.approx({"mae": 8.0, "mse": 64.0})  # predicts the training mean 2
    assert result["test"] == pytest.approx({"mae": 1.0, "mse": 2.0})
    assert result["value"] == 8.0 and result["model"] == 5.0
    assert result["margin"] == pytest.approx(3.0) and result["beats"] is True
    assert result["test_model"] == 4.0
    no_best = baseline_of("regression", y, None, _splits([3], n=4), {**metrics, "best_epoch": None}, "mae", "")
    assert no_best["model"] == 7.0 and "test_model" not in no_best  # the last epoch's score, no test data
    assert "test_model" not in baseline_of("regression", y, np.array([2.0]), _splits([3], n=4),
                                         {**metrics, "test": None}, "mae", "")


def test_unit_kfold_baseline_is_averaged_over_the_folds_with_the_margin_oriented_by_the_metric():
    y = np.array([0, 0, 0, 1, 1, 1])
    splits = _splits([0, 1, 3], [2, 4, 5], n=6)
    metrics = {"best_epoch": 2, "validation": {"best": {"accuracy": 0.9}}}
    result = baseline_of("binary", y, np.array([1, 1]), splits, metrics, "accuracy", "")
    # fold 0 trains on [0, 1, 1]: majority 1 scores 1/3 on [0, 0, 1]; random 1/3*2/3 + 2/3*1/3 = 4/9
    # fold 1 trains on [0, 0, 1]: majority 0 scores 1/3 on [0, 1, 1]; random 4/9 too
    assert result["validation"] == pytest.approx({"majority_accuracy": 1 / 3, "random_accuracy": 4 / 9})
    assert result["value"] == pytest.approx(4 / 9)
    assert result["margin"] == pytest.approx(0.9 - 4 / 9) and result["beats"] is True
    assert result["test"] == pytest.approx({"majority_accuracy": 1.0, "random_accuracy": 2 / 3})  # fold 0's
    worse = baseline_of("binary", y, None, splits, {**metrics, "validation": {"best": {"accuracy": 0.2}}},
                      "accuracy", "")
    assert worse["margin"] == pytest.approx(0.2 - 4 / 9) and worse["beats"] is False
    regression = baseline_of("regression", np.array([1.0, 2.0, 3.0, 4.0]), None, _splits([0, 1], [2, 3], n=4),
                           {"best_epoch": 1, "validation": {"best": {"mae": 1.0}}}, "mae", "")
    # fold 0 predicts 3.5 for [1, 2]: mae 2; fold 1 predicts 1.5 for [3, 4]: mae 2
    assert regression["value"] == pytest.approx(2.0)
    assert regression["margin"] == pytest.approx(1.0) and regression["beats"] is True  # lower error is better


def test_unit_baseline_finds_a_comparable_metric_and_never_fails_a_run():
    y = np.array([1.0, 2.0, 3.0, 10.0])
    metrics = {"best_epoch": 1, "validation": {"best": {"loss": 9.0, "price_mae": 5.0}}}
    result = baseline_of("regression", y, None, _splits([3], n=4), metrics, "price_loss", "price_")
    assert result["metric"] == "mae" and result["model"] == 5.0
    broken = baseline_of("regression", np.array([1.0, 2.0]), None, _splits([5], n=2), metrics, "mae", "")
    assert set(broken) == {"error"} and broken["error"].startswith("IndexError: ")


def test_unit_aggregate_upgrades_old_train_parts_and_takes_folds_without_metrics():
    old = _two_folds()
    for fold in old:
        fold.metrics["train"] = {"final": fold.metrics["train"]["last"]}  # written before `final` became `last`
    out = aggregate(_kfold_config(), old, "min")
    assert [f["train"] for f in out["folds"]] == [{"last": {"loss": 1.0}}, {"last": {"loss": 3.0}}]
    assert out["train"]["last"] == {"loss": 2.0}
    assert out["preprocessing"] == "fitted on each fold's training part only: folds/<id>/preprocessing.json"
    bare = _two_folds()
    for fold in bare:
        del fold.metrics["validation"], fold.metrics["train"]
    out = aggregate(_kfold_config(), bare, "min")
    assert out["validation"]["last"] == {} and out["validation"]["last_std"] == {}
    assert out["validation"]["best"] == {"loss": 3.0, "mae": 1.5}
    assert out["train"] == {"last": {}, "best": {"loss": 3.0}}


def test_unit_aggregate_ignores_a_smoothing_skip_as_long_as_the_curve_and_takes_a_single_fold():
    out = aggregate(_kfold_config(smoothing={"factor": 0.5, "skip": 3}), _two_folds(), "min")  # 3 common epochs
    assert out["curve"]["skip"] == 0 and out["curve"]["smoothed"] == pytest.approx([5.0, 4.0, 3.75])
    assert out["best_epoch"] == 3
    one = aggregate(_kfold_config(), _two_folds()[1:], "min")
    assert one["curves"] == {"loss": [3.0, 2.0, 1.0], "val_loss": [4.0, 2.0, 3.0], "val_mae": [2.0, 1.0, 1.5]}
    assert one["best_epoch"] == 2 and one["validation"]["best"] == {"loss": 2.0, "mae": 1.0}


def test_unit_kfold_baseline_averages_folds_that_differ_and_compares_the_model_with_the_mean():
    y = np.array([0.0, 0.0, 0.0, 6.0])
    splits = _splits([3], [0], n=4)  # fold 0 predicts 0 for 6 (mae 6, mse 36); fold 1 predicts 2 for 0 (2, 4)
    scores = {"best_epoch": 1, "validation": {"best": {"mae": 5.0, "mse": 30.0}}}
    result = baseline_of("regression", y, None, splits, scores, "mae", "")
    assert result["validation"] == pytest.approx({"mae": 4.0, "mse": 20.0})
    assert result["value"] == 4.0 and result["model"] == 5.0
    assert result["margin"] == pytest.approx(-1.0) and result["beats"] is False  # fold 0 alone: beaten
    by_mse = baseline_of("regression", y, None, splits, scores, "mse", "")
    assert by_mse["metric"] == "mse" and by_mse["value"] == 20.0
    assert by_mse["margin"] == pytest.approx(-10.0) and by_mse["beats"] is False
    tie = baseline_of("regression", y, None, splits, {"best_epoch": 1, "validation": {"best": {"mae": 4.0}}}, "mae", "")
    assert tie["margin"] == 0 and tie["beats"] is False  # as good as the baseline does not beat it
    unscored = baseline_of("regression", y, None, splits, {}, "mae", "")  # no validation scores logged
    assert unscored["model"] is None and unscored["margin"] is None and unscored["beats"] is None
    assert unscored["value"] == 4.0


def test_unit_baseline_test_scores_follow_the_rows_the_tested_model_was_fitted_on():
    y, y_test = np.array([0.0, 0.0, 0.0, 6.0]), np.array([0.0])
    final = baseline_of("regression", y, y_test, _splits([3], n=4), {"final_model": True}, "mae", "")
    assert final["test"] == pytest.approx({"mae": 1.5, "mse": 2.25})  # the final model trained on all 4 rows
    split = baseline_of("regression", y, y_test, _splits([3], n=4), {}, "mae", "")
    assert split["test"] == {"mae": 0.0, "mse": 0.0}  # the split's model trained on rows 0-2


def test_unit_holdout_baseline_of_a_model_with_a_nan_score_has_no_margin():
    nan = {"validation": {"last": {"mae": float("nan")}}}
    result = baseline_of("regression", np.array([0.0, 0.0, 0.0, 6.0]), None, _splits([3], n=4), nan, "mae", "")
    assert result["value"] == 6.0 and result["model"] is None
    assert result["margin"] is None and result["beats"] is None
