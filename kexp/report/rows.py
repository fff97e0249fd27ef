"""One run folder as a row of a comparison: the built-in columns, K-fold stds, the flattened config,
and its metrics (read through kexp.layout). A run without results in metrics.json (interrupted,
still running) is summarised from the files it has: history.csv, or the finished folds'
folds/<id>/metrics.json and history.csv.

Config values come from config.json, which the run wrote with Keras' own argument defaults filled in
(Adam's learning_rate 0.001), so a default shows as the value the run used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kexp import layout, runs
from kexp.diagnostics import metric_mode
from kexp.layout import Metrics
from kexp.report.numbers import mean_std, number

MISSING = object()
STAMP = re.compile(r"^\d{8}T\d{6}Z-(?P<rest>.+)$")
METRIC_KEY = re.compile(r"^(?:(?P<part>val|test|train)_)?(?P<name>[A-Za-z0-9_]+?)(?:@(?P<at>best|last|final))?$")


@dataclass(frozen=True)
class Column:
    key: str  # what --columns/--sort/--where use, and the CSV/JSON field name
    header: str  # the table's short header, on one or two lines
    help: str = ""
    title: str = ""  # the one-line header of markdown tables (default: the header on one line)

    @property
    def long(self) -> str:
        return self.title or self.header.replace("\n", " ")


# The built-in columns, in default order. `metric` is shown by default only when runs differ in it.
COLUMNS: dict[str, Column] = {c.key: c for c in (
    Column("run", "run", "the run folder's name (table: without its UTC time stamp)"),
    Column("sweep", "sweep", "the sweep folder the run is a trial of (kexp sweep), else empty; shown when "
                             "some run is one"),
    Column("command", "cmd", "train or kfold"),
    Column("dataset", "dataset", "dataset name"),
    Column("scheme", "scheme", "holdout or kfold"),
    Column("status", "status", "completed, running, failed, interrupted or incomplete (process gone)"),
    Column("epochs", "ep", "epochs run (K-fold: the longest fold)", "epochs"),
    Column("best_epoch", "best", "best epoch of the monitored metric (K-fold: of the mean curve)", "best epoch"),
    Column("metric", "metric", "the main metric: the first compiled metric of the first output, else loss"),
    Column("val_best", "val\nbest", "validation main metric at the best epoch (K-fold: mean ± std)"),
    Column("val_last", "val\nlast", "validation main metric at the last epoch (K-fold: mean ± std); "
                                    "val_final is accepted as another name"),
    Column("test", "test", "test main metric (of the final model when there is one)"),
    Column("chance", "chance", "classification: expected accuracy of guessing with the class frequencies"),
    Column("baseline", "base\nline", "the strongest common-sense baseline on validation (majority class, "
                                     "chance, or predicting the training mean)", "baseline"),
    Column("margin", "margin", "model - baseline, positive when the model is better"),
    Column("duration", "time", "total run time"),
    Column("started", "started", "start time (UTC)"),
    Column("path", "path", "the run folder"),
)}
DEFAULT_COLUMNS = ("run", "sweep", "command", "dataset", "scheme", "status", "epochs", "best_epoch", "metric",
                   "val_best", "val_last", "test", "chance", "baseline", "margin", "duration")
MAIN_METRIC_COLUMNS = ("val_best", "val_last", "test", "chance", "baseline")


def canonical_key(key: str) -> str:
    """The key under its current name: `val_final` -> `val_last`, `loss@final` -> `loss@last` (format 1
    called the last epoch "final")."""
    key = key.strip()
    if key == "val_final":
        return "val_last"
    return key[: -len("@final")] + "@last" if key.endswith("@final") else key


def scores(metrics: Metrics, part: str, which: str | None = None) -> dict:
    """A metric dict of `metrics`: `part` validation/train at `which` (best, last, best_std, last_std),
    or test; {} when there is none."""
    if part == "test":
        found = metrics.test
    else:
        section = metrics.validation if part == "validation" else metrics.train
        found = getattr(section, which, None) if isinstance(section, layout.Section) else None
    return found if isinstance(found, dict) else {}


@dataclass
class RunRow:
    """One run of a comparison: the built-in fields, K-fold stds, and the flattened config."""

    record: runs.RunRecord
    fields: dict[str, Any] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # dotted key -> value, lists flattened by index
    metrics: Metrics = field(default_factory=Metrics)  # metrics.json (or a partial run's summary)

    @property
    def path(self) -> Path:
        return self.record.path

    def value(self, key: str) -> tuple[Any, float | None]:
        """The value (and K-fold std) of a column, a config dotted key, or a metric such as
        `val_loss`, `loss@final`, `test_accuracy`, `train_loss`, `metrics.durations.train_s`."""
        if key in self.fields:
            return self.fields[key], self.std.get(key)
        if self.config is not None and key in self.config:
            return self.config[key], None
        return metric_value(self.metrics, key)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as dotted keys: {"model": {"layers": [{"units": 64}]}} ->
    {"model.layers.0.units": 64}. Empty containers are kept as "[]" / "{}". (JSON and YAML give plain
    dicts and lists: they are told by their exact type, the fastest test for `compare`'s 500 configs.)"""
    flat: dict[str, Any] = {}

    def walk(items: Iterable[tuple[Any, Any]], at: str) -> None:
        for key, child in items:
            kind = child.__class__
            if kind is dict or kind is list:
                if child:
                    walk(child.items() if kind is dict else enumerate(child), f"{at}{key}.")
                else:
                    flat[f"{at}{key}"] = "{}" if kind is dict else "[]"
            else:
                flat[f"{at}{key}"] = child

    if prefix:
        walk([(prefix[:-1], value)], "")
    elif isinstance(value, dict):
        walk(value.items(), "")
    elif isinstance(value, list):
        walk(enumerate(value), "")
    return flat


def get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def metric_value(metrics: Metrics, key: str) -> tuple[Any, float | None]:
    if key.startswith("metrics."):
        value = flatten(metrics.to_dict()).get(key.removeprefix("metrics."), MISSING)
        return (None if value is MISSING else value), None
    match = METRIC_KEY.match(key)
    if not match:
        return None, None
    part, name, at = match["part"] or "val", match["name"], match["at"]
    if part == "test":
        return number(scores(metrics, "test").get(name)), None
    at = "last" if at == "final" else at or ("last" if part == "train" else "best")
    section = "validation" if part == "val" else "train"
    value = number(scores(metrics, section, at).get(name))
    if value is None and part == "train" and at == "best":
        value = number(scores(metrics, section, "last").get(name))
    return value, number(scores(metrics, section, f"{at}_std").get(name))


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def main_metric(metrics: Metrics, config: dict | None) -> str:
    """The first output's main metric as Keras logs it (format 1 files said `mae` for `price_mae`)."""
    main = metrics.main_metric
    if not main:
        compiled = get(config, "compile", "metrics")
        if isinstance(compiled, dict):
            compiled = next(iter(compiled.values()), None)
        first = compiled[0] if isinstance(compiled, list) and compiled else None
        name = first.get("name") if isinstance(first, dict) else first
        main = "loss" if not isinstance(name, str) else "accuracy" if name in ("acc", "accuracy") else name
    return _logged_name(main, metrics, config)


def _logged_name(main: str, metrics: Metrics, config: dict | None) -> str:
    """The main metric as Keras logs it. Format 1 wrote `mae` for a model whose first output `price`
    logs `price_mae`; format 2 writes `price_mae` itself."""
    found = next((d for d in (scores(metrics, "validation", "best"), scores(metrics, "validation", "last"),
                              scores(metrics, "test")) if d), None)
    if found is None or main in found:
        return main
    outputs = [o for o in (metrics.outputs, get(config, "compile", "metrics"), get(config, "compile", "loss"))
               if isinstance(o, dict) and "name" not in o]
    for name in (outputs[0] if outputs else ()):
        if f"{name}_{main}" in found:
            return f"{name}_{main}"
    return next((k for k in found if k.endswith(f"_{main}")), main)


def run_label(name: str) -> str:
    """A run folder's name without its leading UTC time stamp: `reuters-3fa2c1`."""
    match = STAMP.match(name)
    return match["rest"] if match else name


def _has_results(metrics: Metrics) -> bool:
    section = metrics.validation
    if not isinstance(section, layout.Section):
        return False
    return bool(section.keys) if section.keys is not None else bool(section.to_dict())


def make_row(record: runs.RunRecord) -> RunRow:
    """The comparison row of one run folder; every field may be None for partial folders. A run
    without results in metrics.json is summarised from its history (see `partial_metrics`)."""
    metrics = record.metrics or Metrics()
    config = record.config
    status = record.status_data or {}
    if not _has_results(metrics):
        partial = partial_metrics(record)
        if partial:
            metrics = Metrics.from_dict({**metrics.to_dict(), **partial})
    main = main_metric(metrics, config)
    row = RunRow(record=record, config=None if config is None else flatten(config), metrics=metrics)
    f = row.fields
    f["run"] = record.name
    sweep = runs.sweep_of(record.path)
    f["sweep"] = sweep.name if sweep is not None else None
    f["command"] = status.get("command") or metrics.command
    f["dataset"] = metrics.dataset or get(config, "dataset", "name")
    f["scheme"] = metrics.scheme or get(config, "validation", "scheme")
    f["status"] = record.status if record.status_data is not None else "unknown"
    f["epochs"] = number(metrics.epochs_run)
    f["best_epoch"] = number(metrics.best_epoch)
    f["metric"] = main
    for column, which in (("val_best", "best"), ("val_last", "last")):
        f[column] = number(scores(metrics, "validation", which).get(main))
        std = number(scores(metrics, "validation", f"{which}_std").get(main))
        if std is not None:
            row.std[column] = std
    f["test"] = number(scores(metrics, "test").get(main))
    baseline = metrics.baseline if isinstance(metrics.baseline, layout.Baseline) else layout.Baseline()
    f["chance"] = number((baseline.validation or {}).get("random_accuracy"))
    f["baseline"] = number(baseline.value)
    f["margin"] = number(baseline.margin)
    f["duration"] = _duration(metrics, status)
    f["started"] = status.get("started") if isinstance(status.get("started"), str) else None
    f["path"] = str(record.path)
    return row


def _duration(metrics: Metrics, status: dict) -> float | None:
    duration = number((metrics.durations or {}).get("total_s"))
    if duration is None:  # a partial run: from its status times
        started, ended = (_parse_time(status.get(k)) for k in ("started", "ended"))
        ended = ended or _parse_time(status.get("updated"))
        if started is not None and ended is not None:
            duration = max(0.0, (ended - started).total_seconds())
    return duration


def partial_metrics(record: runs.RunRecord) -> dict:
    """What an unfinished run (interrupted, running, or with an unreadable metrics.json) has done, in
    metrics.json's shape: hold-out from history.csv; K-fold from the finished folds (those with
    folds/<id>/metrics.json): their mean curve, its best epoch (smoothed as configured) and the mean ±
    std over those folds at that epoch and at the last one, plus `partial` = {folds_done, folds_total}.
    Empty when there is nothing to read."""
    config = record.config or {}
    monitor = get(config, "validation", "monitor")
    monitor = monitor if isinstance(monitor, str) else "val_loss"
    mode = get(config, "validation", "mode")
    mode = mode if mode in ("min", "max") else metric_mode(monitor)
    folds_dir = record.path / layout.FOLDS_DIR
    if get(config, "validation", "scheme") != "kfold" and not folds_dir.is_dir():
        history = read_history(record.path / layout.HISTORY)
        return summary([history], monitor, mode) if history else {}
    try:
        done = sorted(p for p in folds_dir.iterdir() if (p / layout.METRICS).is_file())
    except OSError:
        done = []
    folds = [layout.read_fold_metrics(p) for p in done]
    histories = [h for h in (read_history(p / layout.HISTORY) for p in done) if h]
    smoothing = get(config, "validation", "smoothing")
    out = summary(histories, monitor, mode, smoothing if isinstance(smoothing, dict) else None)
    n_splits, repeats = get(config, "validation", "n_splits"), get(config, "validation", "repeats") or 1
    total = n_splits * repeats if isinstance(n_splits, int) and isinstance(repeats, int) else None
    out["partial"] = {"folds_done": len(done), "folds_total": total}
    out["folds"] = [fold.to_dict() for fold in folds if fold is not None and fold.to_dict()]
    return out


def read_history(path: Path) -> dict[str, list[float]]:
    """A history CSV's metric columns (no `epoch`, no `learning_rate`); {} when missing or unreadable."""
    try:
        history = runs.read_history(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    history.pop("epoch", None)
    return {k: v for k, v in history.items() if k not in layout.NOT_METRICS and v}


def summary(histories: list[dict[str, list[float]]], monitor: str, mode: str, smoothing: dict | None = None) -> dict:
    """Best and last epoch of the mean curve over `histories` (one for hold-out), like the training
    side's summary: validation metrics without `val_`, K-fold stds (ddof=0) across the histories."""
    columns = [c for c in histories[0] if all(c in h for h in histories)] if histories else []
    length = min((len(h[c]) for h in histories for c in columns), default=0)
    if not length:
        return {}
    best = length
    if monitor in columns:
        best = _best_epoch([mean_std(h[monitor][i] for h in histories)[0] for i in range(length)], mode, smoothing)
    out: dict[str, Any] = {"epochs_run": max(len(next(iter(h.values()))) for h in histories), "best_epoch": best,
                           "validation": {}, "train": {}}
    for which, index in (("best", best - 1), ("last", length - 1)):
        for column in columns:
            mean, std = mean_std(h[column][index] for h in histories)
            section = "validation" if column.startswith("val_") else "train"
            name = column.removeprefix("val_")
            out[section].setdefault(which, {})[name] = mean
            if len(histories) > 1:
                out[section].setdefault(f"{which}_std", {})[name] = std
    return out


def _best_epoch(curve: list, mode: str, smoothing: dict | None) -> int:
    """The best epoch (1-based) of a mean curve, smoothed as configured; the last one when none is."""
    from kexp import diagnostics

    skip = 0
    if smoothing is not None and isinstance(smoothing.get("factor"), (int, float)):
        skip = smoothing.get("skip")
        skip = skip if isinstance(skip, int) and 0 <= skip < len(curve) else 0
        try:
            curve = diagnostics.ema(curve[skip:], smoothing["factor"])
        except ValueError:
            skip = 0
    try:
        return diagnostics.best_epoch(curve, mode) + skip
    except ValueError:
        return len(curve)


def resume_hint(row: RunRow) -> str | None:
    """For an interrupted K-fold run: what finished, and the command that finishes it; for an
    interrupted trial of a sweep, the command that finishes the sweep."""
    partial = row.metrics.partial
    if row.fields["status"] in ("interrupted", "incomplete") and row.fields.get("sweep"):
        sweep = row.record.path.parent.parent
        return f"{row.record.path}: {row.fields['status']} trial; finish its sweep with: kexp sweep --resume {sweep}"
    if row.fields["status"] not in ("interrupted", "incomplete") or not isinstance(partial, dict):
        return None
    done, total = partial.get("folds_done"), partial.get("folds_total")
    of = f"{done} of {total}" if total else f"{done}"
    return (f"{row.record.path}: {row.fields['status']} after {of} folds; finish it with: "
            f"kexp kfold --resume {row.record.path}")
