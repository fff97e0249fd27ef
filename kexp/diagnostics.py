"""Numbers about a training run: baselines, best epochs, overfitting, smoothing, fold statistics.

Pure functions of plain lists and arrays: no TensorFlow, no printing, no files. The training side
calls them while writing `metrics.json`; the reports call `metric_mode` (for run folders without
the `directions` Keras gave). numpy is imported inside the functions that need it, so `kexp compare`
(which only needs `metric_mode`) does not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kexp.layout import NOT_METRICS  # the learning rate: in history.csv, never in metric dicts

TASKS = ("binary", "multiclass", "regression")

# Substrings of metric names, checked in this order: a "min" name wins over a "max" one
# ("categorical_crossentropy" is a loss although it contains "categorical").
_MIN_WORDS = (
    "loss", "error", "crossentropy", "hinge", "mae", "mse", "msle", "mape", "rmse", "logcosh",
    "log_cosh", "kld", "kl_divergence", "kullback", "poisson", "huber", "false_positives",
    "false_negatives", "squared", "absolute", "divergence",
)
_MAX_WORDS = (
    "acc", "auc", "precision", "recall", "f1", "fbeta", "f_beta", "iou", "r2", "score",
    "true_positives", "true_negatives", "similarity", "specificity", "sensitivity",
)

_ACCURACY_NAMES = {"accuracy", "acc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy"}
_REGRESSION_NAMES = {"mae": "mae", "mean_absolute_error": "mae", "mse": "mse", "mean_squared_error": "mse"}



# --------------------------------------------------------------------------- metric names
def metric_mode(name: str) -> str:
    """A guess from the name alone: "min" for loss-like metrics (loss, mae, mse, *error, *crossentropy,
    hinge, ...), "max" for scores (accuracy, auc, precision, recall, f1, ...). A `val_`/`test_`/`train_`
    prefix is ignored. A name that is neither is taken as "min".

    Only a fallback: the direction Keras' metric objects carry (`kexp.models.metric_directions`, written
    into metrics.json as `directions`) is the answer. This guess serves readers that must not import
    Keras (`compare`) on run folders written without `directions`, and metrics that carry no direction."""
    base = name.lower()
    for prefix in ("val_", "test_", "train_"):
        base = base.removeprefix(prefix)
    if any(word in base for word in _MIN_WORDS):
        return "min"
    if any(word in base for word in _MAX_WORDS):
        return "max"
    return "min"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_epoch(values: Sequence[float], mode: str) -> int:
    """The 1-based epoch of the best value (the earliest one on ties); NaN/None are ignored.

    Raises ValueError when `mode` is not min/max or no value is finite."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
    best_index, best_value = None, None
    for index, value in enumerate(values):
        value = _as_float(value)
        if value is None:
            continue
        if best_value is None or (value < best_value if mode == "min" else value > best_value):
            best_index, best_value = index, value
    if best_index is None:
        raise ValueError("no finite value to choose a best epoch from")
    return best_index + 1


def _as_float(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def epoch_metrics(logs: Mapping[str, Any], validation: bool) -> dict[str, Any]:
    """The validation metrics (`val_` names, prefix removed) or the training metrics of one epoch's
    logs, without the values that are not metrics (`learning_rate`) or the epoch number."""
    return {key.removeprefix("val_"): value for key, value in logs.items()
            if key.startswith("val_") == validation and key not in NOT_METRICS and key != "epoch"}


def comparable_metric(task: str, name: str) -> str | None:
    """The baseline metric a logged metric measures: "accuracy" for accuracy names on a
    classification task, "mae"/"mse" (also spelled out) on a regression task; else None.

    `name` is the metric's last word as logged: `price_mae` for output price is passed as `mae`."""
    name = name.lower().removeprefix("val_")
    if task == "regression":
        return _REGRESSION_NAMES.get(name)
    return "accuracy" if name in _ACCURACY_NAMES else None


# --------------------------------------------------------------------------- overfitting
def overfit_onset(train_loss: Sequence[float], val_loss: Sequence[float], *, patience: int = 2,
                  min_rise: float = 0.02) -> int | None:
    """The last good epoch (1-based) before validation loss turns up while training loss keeps
    falling, or None when no overfitting is visible.

    With `m` the epoch of the lowest validation loss (its last occurrence on ties, so every later
    epoch is above it), overfitting is reported at `m` when all of these hold, so that noise does not
    trigger it:
      * at least `patience` epochs follow `m`;
      * validation loss is above its minimum by more than `min_rise` times the curve's range
        (max - min) on average over the epochs after `m` and at the last epoch: a wobble on a
        plateau, or a bump that comes back down, does not count (the epochs between need not rise
        one by one);
      * training loss is lower at epoch m+patience and at the last epoch than at epoch `m`.
    Only the epochs both curves have are used; NaN values never satisfy a condition.
    """
    n = min(len(train_loss), len(val_loss))
    if patience < 1 or n < patience + 1:
        return None
    train = [_as_float(v) for v in train_loss[:n]]
    val = [_as_float(v) for v in val_loss[:n]]
    finite = [v for v in val if v is not None]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    m = max(i for i, v in enumerate(val) if v == low)  # 0-based index of the last minimum
    if n - 1 - m < patience:
        return None
    tolerance = min_rise * (high - low)
    later = [v for v in val[m + 1:] if v is not None]
    after, last = (sum(later) / len(later) if later else None), val[-1]
    if after is None or last is None or val[m + patience] is None or after - low <= tolerance \
            or last - low <= tolerance:
        return None
    t_min, t_after, t_last = train[m], train[m + patience], train[-1]
    if t_min is None or t_after is None or t_last is None or not (t_after < t_min and t_last < t_min):
        return None
    return m + 1


_UNSET: Any = object()


def summary_sentence(train_loss: Sequence[float], val_loss: Sequence[float], onset: int | None = _UNSET,
                     best_epoch: int | None = None) -> str:
    """One plain sentence about overfitting, e.g. "Validation loss was lowest at epoch 4 and rose
    afterwards while training loss kept falling: the model starts overfitting after epoch 4."

    `onset` is what `overfit_onset` returned (computed here when not given); `best_epoch`, the
    epoch chosen by the monitored metric, is mentioned when it differs from the loss minimum."""
    val = [_as_float(v) for v in val_loss]
    finite = [v for v in val if v is not None]
    n = len(val_loss)
    if not finite:
        return "No validation loss was recorded, so overfitting cannot be judged."
    if onset is _UNSET:
        onset = overfit_onset(train_loss, val_loss)
    epochs = f"{n} epoch{'s' if n != 1 else ''}"
    if onset is not None:
        sentence = (f"Validation loss was lowest at epoch {onset} and rose afterwards while training loss kept "
                    f"falling: the model starts overfitting after epoch {onset}")
    else:
        low = min(finite)
        lowest = max(i for i, v in enumerate(val) if v == low) + 1
        if lowest == n:
            sentence = f"No overfitting seen in {epochs}: validation loss was still at its lowest at the end"
        else:
            sentence = f"No overfitting seen in {epochs} (validation loss was lowest at epoch {lowest})"
    if best_epoch is not None and onset is not None and best_epoch != onset:
        sentence += f" (the monitored metric was best at epoch {best_epoch})"
    return sentence + "."


# --------------------------------------------------------------------------- curves and folds
def ema(values: Sequence[float], factor: float) -> list[float]:
    """Exponential moving average: s0 = p0, s_t = factor * s_(t-1) + (1 - factor) * p_t.

    A NaN/None point keeps the previous smoothed value (leading ones stay NaN)."""
    if not 0 <= factor < 1:
        raise ValueError(f"factor must be in [0, 1); got {factor!r}")
    smoothed: list[float] = []
    previous: float | None = None
    for value in values:
        value = _as_float(value)
        if value is None:
            smoothed.append(previous if previous is not None else math.nan)
            continue
        previous = value if previous is None else factor * previous + (1 - factor) * value
        smoothed.append(previous)
    return smoothed


def aggregate(values: Iterable[Mapping[str, Any]]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Per-key mean and population standard deviation (ddof=0) over folds' metric dicts.

    Keys are taken in order of first appearance; a fold lacking a key, or holding a NaN/None or
    non-number for it, is left out of that key's statistics; a key with no number gives None."""
    import numpy as np

    columns: dict[str, list[float]] = {}
    for entry in values:
        for key, value in (entry or {}).items():
            column = columns.setdefault(key, [])
            if _finite(value) or (hasattr(value, "item") and _finite(_as_float(value))):
                column.append(float(value))
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key, column in columns.items():
        if column:
            array = np.asarray(column, dtype="float64")
            mean[key], std[key] = float(array.mean()), float(array.std(ddof=0))
        else:
            mean[key] = std[key] = None
    return mean, std


def at_epoch(histories: Sequence[Mapping[str, Sequence[float]]], epoch: int,
             validation: bool = True) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Mean and std (ddof=0) over folds of every metric at one 1-based epoch of the folds' histories
    (column name -> per-epoch values, as history.csv): the K-fold score at the averaged curve's best
    epoch. Validation metrics by default (names without `val_`), else the training ones. A fold whose
    history is shorter than `epoch` is left out of that metric."""
    entries = []
    for history in histories:
        entry = {key: values[epoch - 1] for key, values in history.items() if 0 < epoch <= len(values)}
        entries.append(epoch_metrics(entry, validation))
    return aggregate(entries)


# --------------------------------------------------------------------------- baselines
def baseline(task: str, y_train: Any, y_val: Any, y_test: Any = None, *, model_value: float | None = None,
             metric: str | None = None) -> dict:
    """The common-sense baseline scored on the same validation (and test) data as the model.

    binary/multiclass (integer class ids; one-hot rows are turned into ids):
      majority_accuracy: always predict the training set's most frequent class;
      random_accuracy:   guess at random with the training class frequencies, sum_c p_train(c) p_val(c).
    regression: mae and mse of always predicting the training mean.
    `value` is the strongest baseline on validation for `metric` (accuracy: the larger of the two;
    mae/mse: that error), `margin` is model - baseline oriented so that positive means the model is
    better, and `beats` says whether it is (None without a `model_value`). With several outputs (y as
    a dict) the first output is used and named in `output`.
    """
    import numpy as np

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    result: dict[str, Any] = {"task": task}
    if isinstance(y_train, Mapping):
        output = next(iter(y_train))
        result["output"] = output
        y_train = y_train[output]
        y_val = _pick(y_val, output)
        y_test = _pick(y_test, output)
    metric = _baseline_metric(task, metric)
    result["metric"] = metric
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    if len(y_train) == 0 or len(y_val) == 0:
        raise ValueError("y_train and y_val must not be empty")
    score = _mean_scorer(y_train, result) if task == "regression" else _class_scorer(y_train, result)
    result["validation"] = score(y_val)
    result["test"] = score(y_test) if y_test is not None and len(y_test) else None
    if metric == "accuracy":
        value = max(result["validation"]["majority_accuracy"], result["validation"]["random_accuracy"])
    else:
        value = result["validation"][metric]
    result["value"] = value
    result["model"] = _as_float(model_value)
    if result["model"] is None:
        result["margin"] = result["beats"] = None
    else:
        margin = result["model"] - value if metric == "accuracy" else value - result["model"]
        result["margin"] = margin
        result["beats"] = margin > 0
    return result


def _mean_scorer(y_train: Any, result: dict) -> Callable[[Any], dict]:
    """Scores of always predicting the training mean (recorded as `predict` in `result`)."""
    import numpy as np

    centre = y_train.astype("float64").mean(axis=0)
    result["predict"] = float(centre) if np.ndim(centre) == 0 else centre.tolist()

    def score(y: Any) -> dict:
        error = np.asarray(y, dtype="float64") - centre
        return {"mae": float(np.abs(error).mean()), "mse": float((error ** 2).mean())}

    return score


def _class_scorer(y_train: Any, result: dict) -> Callable[[Any], dict]:
    """Scores of the majority and the frequency-weighted random guess (`majority_class` in `result`)."""
    import numpy as np

    classes, counts = np.unique(_class_ids(y_train), return_counts=True)
    frequencies = dict(zip(classes.tolist(), (counts / counts.sum()).tolist()))
    majority = classes[int(np.argmax(counts))]  # the smallest class id on ties
    result["majority_class"] = majority.item()

    def score(y: Any) -> dict:
        ids = _class_ids(np.asarray(y))
        found, found_counts = np.unique(ids, return_counts=True)
        shares = found_counts / found_counts.sum()
        random = sum(frequencies.get(c, 0.0) * s for c, s in zip(found.tolist(), shares.tolist()))
        return {"majority_accuracy": float((ids == majority).mean()), "random_accuracy": float(random)}

    return score


def _pick(y: Any, output: str) -> Any:
    if isinstance(y, Mapping):
        return y[output] if output in y else next(iter(y.values()))
    return y


def _baseline_metric(task: str, metric: str | None) -> str:
    if metric is None:
        return "accuracy" if task != "regression" else "mae"
    name = metric.lower().removeprefix("val_")
    if task == "regression" and name in _REGRESSION_NAMES:
        return _REGRESSION_NAMES[name]
    if task != "regression" and name in _ACCURACY_NAMES:
        return "accuracy"
    allowed = "accuracy" if task != "regression" else "mae, mse"
    raise ValueError(f"metric {metric!r} has no baseline for a {task} task; allowed: {allowed}")


def _class_ids(y: Any) -> Any:
    """Integer class ids from ids, (n, 1) columns, or one-hot / probability rows."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return y.reshape(len(y), -1).argmax(axis=1)
    return y.reshape(len(y))
