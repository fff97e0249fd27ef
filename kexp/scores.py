"""A run's scores from its splits' results: per-split summaries, the K-fold aggregates at the averaged
curve's best epoch, every output's main metric, the common-sense baselines and the overfitting
diagnosis. Plain data in, plain data out (the metrics.json sections of kexp.layout): no Keras, no files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kexp import diagnostics
from kexp.config import Config
from kexp.validation import Split, mean_curve


@dataclass
class Outcome:
    """One finished split: its metrics (folds/<id>/metrics.json) and its per-epoch history by column."""

    metrics: dict
    history: dict[str, list[float]]


def summarize(logs: list[dict], monitor: str, mode: str) -> dict:
    """Last-epoch and best-epoch metrics of one history (validation names without `val_`; values
    that are not metrics, such as `learning_rate`, left out)."""
    if not logs:
        return {"epochs_run": 0, "best_epoch": None, "validation": {}, "train": {}}
    values = [logs_i.get(monitor, math.nan) for logs_i in logs]
    best = diagnostics.best_epoch(values, mode) if any(math.isfinite(v) for v in values) else len(logs)
    part = diagnostics.epoch_metrics
    return {
        "epochs_run": len(logs),
        "best_epoch": best,
        "validation": {"last": part(logs[-1], True), "best": part(logs[best - 1], True)},
        "train": {"last": part(logs[-1], False), "best": part(logs[best - 1], False)},
    }


# --------------------------------------------------------------------------- the run
def _output_names(config: Config, data) -> list[str]:
    """The model's outputs in order: `model.outputs`, else the data's targets, else the last layer."""
    if isinstance(data.task, dict):
        order = [o for o in config.model.outputs or [] if o in data.task]
        return order + [o for o in data.task if o not in order]
    if config.model.outputs:
        return list(config.model.outputs[:1])
    last = config.model.layers[-1] if config.model.layers else {}
    return [last.get("name") or f"layer_{len(config.model.layers) - 1}"]


def _metric_log_names(spec: dict) -> list[str]:
    """The names Keras may log a configured metric under, before any output prefix: the name as
    written (`mae`, `acc`) or, for a class, its snake-case name (`AUC` -> `auc`)."""
    name = str(spec.get("name", ""))
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()
    return list(dict.fromkeys(n for n in (name, snake) if n))


def _main_metric(config: Config, output: str, prefix: str, logged: set[str]) -> str:
    """An output's main metric as Keras logs it (without `val_`): its first configured metric, else
    its loss (`loss` for a single output, `price_loss` for output price of several)."""
    spec = config.compile.metrics
    items = (spec.get(output) if isinstance(spec, dict) else spec) or []
    for item in items:
        for name in _metric_log_names(item):
            if not logged or prefix + name in logged:
                return prefix + name
    if items:  # a metric logged under a name of its own: the first such name of this output
        found = sorted(k for k in logged if k.startswith(prefix) and not k.endswith("loss"))
        if found:
            return found[0]
    return f"{prefix}loss"


def outputs(config: Config, data, first: dict) -> dict[str, dict]:
    """Every output's main metric and task, in the model's output order (format.md: outputs)."""
    names = _output_names(config, data)
    logged: set[str] = set()
    for part in ("validation", "train"):
        logged.update(upgrade_parts(first.get(part) or {}).get("last") or {})
    tasks = data.task if isinstance(data.task, dict) else {names[0]: data.task}
    return {out: {"main_metric": _main_metric(config, out, f"{out}_" if len(names) > 1 else "", logged),
                  "task": tasks.get(out)} for out in names}


def upgrade_parts(part: dict) -> dict:
    """A fold's validation/train dict in format 2: format 1 called the last epoch `final`."""
    if "final" in part and "last" not in part:
        part = {("last" if k == "final" else k): v for k, v in part.items()}
    return part


def aggregate(config: Config, outcomes: list[Outcome], mode: str) -> dict:
    """The K-fold aggregates (format.md). The score is the mean over folds at the best epoch of the
    averaged validation curve (smoothed when smoothing is on), with the std across folds at that same
    epoch: the epoch the final model uses, chosen once for all folds. Each fold's own best epoch is
    a selection on that fold's validation data, so the mean of those is optimistic; it stays in
    `folds` as per-fold detail only."""
    folds = []
    for r in sorted((o.metrics for o in outcomes), key=lambda r: (r["repeat"], r["fold"])):
        fold = {k: r[k] for k in ("id", "repeat", "fold", "n_train", "n_val", "seed", "epochs_run",
                                  "best_epoch", "validation", "train", "duration_s") if k in r}
        for part in ("validation", "train"):  # folds finished before an upgrade (resume)
            if part in fold:
                fold[part] = upgrade_parts(fold[part])
        folds.append(fold)
    out: dict[str, Any] = {
        "folds": folds,
        "preprocessing": "fitted on each fold's training part only: folds/<id>/preprocessing.json",
    }
    mean, std = mean_curve([o.history.get(config.validation.monitor, []) for o in outcomes])
    smoothing = config.validation.smoothing
    curve: dict[str, Any] = {"metric": config.validation.monitor, "mean": mean.tolist(), "std": std.tolist(),
                             "smoothed": None}
    finite = bool(np.isfinite(mean).any())
    best = diagnostics.best_epoch(mean.tolist(), mode) if finite else None
    if smoothing is not None and finite:
        skip = smoothing.skip if len(mean) > smoothing.skip else 0
        smoothed = diagnostics.ema(mean[skip:].tolist(), smoothing.factor)
        curve.update(smoothed=smoothed, skip=skip, factor=smoothing.factor)
        best = diagnostics.best_epoch(smoothed, mode) + skip
    curve["best_epoch"] = best
    histories = [o.history for o in outcomes]
    validation: dict[str, Any] = {"best": {}, "best_std": {}}
    if best is not None:
        validation["best"], validation["best_std"] = diagnostics.at_epoch(histories, best)
    validation["last"], validation["last_std"] = diagnostics.aggregate(
        [f.get("validation", {}).get("last", {}) for f in folds])
    validation["best_epoch_source"] = "mean_curve"
    out["validation"] = validation
    train_last, _ = diagnostics.aggregate([f.get("train", {}).get("last", {}) for f in folds])
    out["train"] = {"last": train_last,
                    "best": diagnostics.at_epoch(histories, best, validation=False)[0] if best else {}}
    out["epochs_run"] = max(f["epochs_run"] for f in folds)
    out["curve"] = curve
    out["best_epoch"] = best
    out["curves"] = {key: mean_curve([h[key] for h in histories])[0].tolist() for key in histories[0]}
    return out


def baselines(data, splits: list[Split], metrics: dict) -> dict[str, dict]:
    """The common-sense baseline of every output (format.md: baselines), in output order."""
    outputs = metrics.get("outputs") or {}
    several = len(outputs) > 1
    result = {}
    for out, info in outputs.items():
        y, y_test = (ys.get(out) if isinstance(ys, dict) else ys for ys in (data.y_train, data.y_test))
        baseline = baseline_of(info.get("task"), y, y_test, splits, metrics, info["main_metric"],
                             f"{out}_" if several else "")
        if several and "error" not in baseline:
            baseline = {"output": out, **baseline}
        result[out] = baseline
    return result


def _model_key(task: str, main: str, prefix: str, logged: dict) -> tuple[str | None, str]:
    """The logged metric the baseline is compared with, and the baseline metric it measures: the main
    metric when it is accuracy/mae/mse, else another such metric of the same output."""
    metric = diagnostics.comparable_metric(task, main.removeprefix(prefix))
    if metric is not None:
        return main, metric
    for key in logged:
        name = key.removeprefix(prefix) if prefix and key.startswith(prefix) else (None if prefix else key)
        metric = diagnostics.comparable_metric(task, name) if name else None
        if metric is not None:
            return key, metric
    return None, "accuracy" if task != "regression" else "mae"


def baseline_of(task: str, y: Any, y_test: Any, splits: list[Split], metrics: dict, main: str,
              prefix: str) -> dict:
    validation = metrics.get("validation", {})
    scores = validation.get("best") if metrics.get("best_epoch") else validation.get("last")
    scores = scores or {}
    model_key, metric = _model_key(task, main, prefix, scores)
    model_value = scores.get(model_key) if model_key else None
    try:
        y = np.asarray(y)
        per_split = [diagnostics.baseline(task, y[s.train_idx], y[s.val_idx], model_value=model_value,
                                          metric=metric) for s in splits]
        if y_test is not None and len(y_test):  # fitted on the rows the tested model was trained on
            fitted_on = np.arange(len(y)) if metrics.get("final_model") else splits[0].train_idx
            per_split[0]["test"] = diagnostics.baseline(task, y[fitted_on], y_test, metric=metric)["validation"]
    except Exception as exc:  # a baseline never fails a run
        return {"error": f"{type(exc).__name__}: {exc}"}
    result = dict(per_split[0])
    if len(per_split) > 1:
        values = [b["value"] for b in per_split if b.get("value") is not None]
        result["value"] = float(np.mean(values)) if values else None
        result["validation"] = diagnostics.aggregate([b["validation"] for b in per_split])[0]
        if model_value is not None and result["value"] is not None:
            sign = 1 if metric == "accuracy" else -1
            result["margin"] = sign * (model_value - result["value"])
            result["beats"] = result["margin"] > 0
    if metrics.get("test") and result.get("test") and model_key:
        result["test_model"] = metrics["test"].get(model_key)
    return result


def diagnosis(history: dict[str, list[float]], best_epoch: int | None) -> dict:
    """The overfitting diagnosis of a run from its (fold-mean) loss curves."""
    train_loss, val_loss = history.get("loss", []), history.get("val_loss", [])
    onset = diagnostics.overfit_onset(train_loss, val_loss) if val_loss else None
    return {
        "best_epoch": best_epoch,
        "overfit_epoch": onset,
        "sentence": diagnostics.summary_sentence(train_loss, val_loss, onset, best_epoch),
    }
