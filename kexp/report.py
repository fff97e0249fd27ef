"""Reports on run folders: the `kexp compare` table and the `kexp show` page.

Quiet library code: functions return rows, Rich renderables and strings; the CLI prints them. Run
folders are read through `kexp.runs` only. Nothing here imports TensorFlow, numpy or matplotlib
(`--plot` imports `kexp.plots` in the CLI), so `kexp compare` starts fast.

A comparison is built in this order: find run folders -> read them (unreadable ones become
warnings) -> `--where` filters -> `--last N` most recent -> the config keys that differ between the
runs left -> `--sort` -> `--columns`.

metrics.json is read in format 2 (`"format": 2`: `last` is the last epoch, `outputs`, `baselines`) and in
format 1 (no `format`: the last epoch is called `final`), which `normalize_metrics` turns into format 2's
shape. "final" now means only the retrained model (`final_model`). A run without metrics.json (interrupted,
still running) is summarised from the files it has: history.csv, or the finished folds'
folds/<id>/metrics.json and history.csv.

Config values come from config.json, which the run wrote with Keras' own argument defaults filled in
(Adam's learning_rate 0.001), so a default shows as the value the run used.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kexp import runs
from kexp.diagnostics import metric_mode
from kexp.errors import RunError, UsageError, close_matches

FORMATS = ("table", "markdown", "csv", "json")
_MISSING = object()
_STAMP = re.compile(r"^\d{8}T\d{6}Z-(?P<rest>.+)$")
_SLACK = 2  # --last N reads N + this many of the newest folders, in case start times and names disagree


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
DEFAULT_COLUMNS = ("run", "command", "dataset", "scheme", "status", "epochs", "best_epoch", "metric",
                   "val_best", "val_last", "test", "chance", "baseline", "margin", "duration")
_MAIN_METRIC_COLUMNS = ("val_best", "val_last", "test", "chance", "baseline")
_METRIC_KEY = re.compile(r"^(?:(?P<part>val|test|train)_)?(?P<name>[A-Za-z0-9_]+?)(?:@(?P<at>best|last|final))?$")
NOT_METRICS = frozenset({"learning_rate", "lr"})  # logged by ReduceLROnPlateau & co; kept in history.csv only


def canonical_key(key: str) -> str:
    """The key under its current name: `val_final` -> `val_last`, `loss@final` -> `loss@last` (format 1
    called the last epoch "final")."""
    key = key.strip()
    if key == "val_final":
        return "val_last"
    return key[: -len("@final")] + "@last" if key.endswith("@final") else key


def normalize_metrics(metrics: Any) -> dict:
    """metrics.json in format 2's shape: format 1's last-epoch dicts (`final`, `final_std`, in
    validation, train and every fold) renamed `last`/`last_std`; `learning_rate` left out of every
    metric dict. The input is not changed."""
    if not isinstance(metrics, dict):
        return {}
    old = metrics.get("format") is None
    out = dict(metrics)
    for section in ("validation", "train"):
        if isinstance(metrics.get(section), dict):
            out[section] = _renamed(metrics[section], old)
    if isinstance(metrics.get("test"), dict):
        out["test"] = _metric_dict(metrics["test"])
    folds = metrics.get("folds")
    if isinstance(folds, list):
        out["folds"] = [dict(fold, **{s: _renamed(fold[s], old) for s in ("validation", "train")
                                      if isinstance(fold.get(s), dict)}) if isinstance(fold, dict) else fold
                        for fold in folds]
    return out


def _renamed(section: dict, old: bool) -> dict:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if old and key in ("final", "final_std"):
            key = "last" + key[len("final"):]
        out[key] = _metric_dict(value) if isinstance(value, dict) else value
    return out


def _metric_dict(values: dict) -> dict:
    if not NOT_METRICS.intersection(values):
        return values
    return {k: v for k, v in values.items() if k not in NOT_METRICS}


# --------------------------------------------------------------------------- one run as a row
@dataclass
class RunRow:
    """One run of a comparison: the built-in fields, K-fold stds, and the flattened config."""

    record: runs.RunRecord
    fields: dict[str, Any] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # dotted key -> value, lists flattened by index
    metrics: dict = field(default_factory=dict)  # metrics.json in format 2's shape (or a partial summary)

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
        return _metric_value(self.metrics, key)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as dotted keys: {"model": {"layers": [{"units": 64}]}} ->
    {"model.layers.0.units": 64}. Empty containers are kept as "[]" / "{}"."""
    flat: dict[str, Any] = {}

    def walk(items: Iterable[tuple[Any, Any]], at: str) -> None:
        for key, child in items:
            if isinstance(child, dict) and child:
                walk(child.items(), f"{at}{key}.")
            elif isinstance(child, list) and child:
                walk(enumerate(child), f"{at}{key}.")
            elif isinstance(child, (list, dict)):
                flat[f"{at}{key}"] = "[]" if isinstance(child, list) else "{}"
            else:
                flat[f"{at}{key}"] = child

    if prefix:
        walk([(prefix[:-1], value)], "")
    elif isinstance(value, dict):
        walk(value.items(), "")
    elif isinstance(value, list):
        walk(enumerate(value), "")
    return flat


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _metric_value(metrics: dict, key: str) -> tuple[Any, float | None]:
    if key.startswith("metrics."):
        value = flatten(metrics).get(key.removeprefix("metrics."), _MISSING)
        return (None if value is _MISSING else value), None
    match = _METRIC_KEY.match(key)
    if not match:
        return None, None
    part, name, at = match["part"] or "val", match["name"], match["at"]
    if part == "test":
        return _number(_get(metrics, "test", name)), None
    at = "last" if at == "final" else at or ("last" if part == "train" else "best")
    section = "validation" if part == "val" else "train"
    value = _number(_get(metrics, section, at, name))
    if value is None and part == "train" and at == "best":
        value = _number(_get(metrics, section, "last", name))
    return value, _number(_get(metrics, section, f"{at}_std", name))


def _is_metric_key(key: str, rows: Sequence[RunRow]) -> bool:
    if key.startswith("metrics."):
        return True
    match = _METRIC_KEY.match(key)
    return bool(match) and any(row.value(key)[0] is not None for row in rows)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _main_metric(metrics: dict, config: dict | None) -> str:
    main = metrics.get("main_metric")
    if not isinstance(main, str) or not main:
        compiled = _get(config, "compile", "metrics")
        if isinstance(compiled, dict):
            compiled = next(iter(compiled.values()), None)
        first = compiled[0] if isinstance(compiled, list) and compiled else None
        name = first.get("name") if isinstance(first, dict) else first
        main = "loss" if not isinstance(name, str) else "accuracy" if name in ("acc", "accuracy") else name
    return _logged_name(main, metrics, config)


def _logged_name(main: str, metrics: dict, config: dict | None) -> str:
    """The main metric as Keras logs it. Format 1 wrote `mae` for a model whose first output `price`
    logs `price_mae`; format 2 writes `price_mae` itself."""
    scores = next((d for d in (_get(metrics, "validation", "best"), _get(metrics, "validation", "last"),
                               metrics.get("test")) if isinstance(d, dict) and d), None)
    if scores is None or main in scores:
        return main
    outputs = [o for o in (metrics.get("outputs"), _get(config, "compile", "metrics"), _get(config, "compile", "loss"))
               if isinstance(o, dict) and "name" not in o]
    for name in (outputs[0] if outputs else ()):
        if f"{name}_{main}" in scores:
            return f"{name}_{main}"
    return next((k for k in scores if k.endswith(f"_{main}")), main)


def run_label(name: str) -> str:
    """A run folder's name without its leading UTC time stamp: `reuters-3fa2c1`."""
    match = _STAMP.match(name)
    return match["rest"] if match else name


def make_row(record: runs.RunRecord) -> RunRow:
    """The comparison row of one run folder; every field may be None for partial folders. A run
    without results in metrics.json is summarised from its history (see `partial_metrics`)."""
    metrics = normalize_metrics(record.metrics)
    config = record.config
    status = record.status_data or {}
    if not isinstance(metrics.get("validation"), dict) or not metrics["validation"]:
        metrics = {**metrics, **partial_metrics(record)}
    main = _main_metric(metrics, config)
    row = RunRow(record=record, config=None if config is None else flatten(config), metrics=metrics)
    f = row.fields
    f["run"] = record.name
    f["command"] = status.get("command") or metrics.get("command")
    f["dataset"] = metrics.get("dataset") or _get(config, "dataset", "name")
    f["scheme"] = metrics.get("scheme") or _get(config, "validation", "scheme")
    f["status"] = record.status if record.status_data is not None else "unknown"
    f["epochs"] = _number(metrics.get("epochs_run"))
    f["best_epoch"] = _number(metrics.get("best_epoch"))
    f["metric"] = main
    for column, which in (("val_best", "best"), ("val_last", "last")):
        f[column] = _number(_get(metrics, "validation", which, main))
        std = _number(_get(metrics, "validation", f"{which}_std", main))
        if std is not None:
            row.std[column] = std
    f["test"] = _number(_get(metrics, "test", main))
    f["chance"] = _number(_get(metrics, "baseline", "validation", "random_accuracy"))
    f["baseline"] = _number(_get(metrics, "baseline", "value"))
    f["margin"] = _number(_get(metrics, "baseline", "margin"))
    duration = _number(_get(metrics, "durations", "total_s"))
    if duration is None:  # a partial run: from its status times
        started, ended = (_parse_time(status.get(k)) for k in ("started", "ended"))
        ended = ended or _parse_time(status.get("updated"))
        if started is not None and ended is not None:
            duration = max(0.0, (ended - started).total_seconds())
    f["duration"] = duration
    f["started"] = status.get("started") if isinstance(status.get("started"), str) else None
    f["path"] = str(record.path)
    return row


def partial_metrics(record: runs.RunRecord) -> dict:
    """What an unfinished run (interrupted, running, or with an unreadable metrics.json) has done, in
    metrics.json's shape: hold-out from history.csv; K-fold from the finished folds (those with
    folds/<id>/metrics.json): their mean curve, its best epoch (smoothed as configured) and the mean ±
    std over those folds at that epoch and at the last one, plus `partial` = {folds_done, folds_total}.
    Empty when there is nothing to read."""
    config = record.config or {}
    monitor = _get(config, "validation", "monitor")
    monitor = monitor if isinstance(monitor, str) else "val_loss"
    mode = _get(config, "validation", "mode")
    mode = mode if mode in ("min", "max") else metric_mode(monitor)
    folds_dir = record.path / "folds"
    if _get(config, "validation", "scheme") != "kfold" and not folds_dir.is_dir():
        history = _read_history(record.path / "history.csv")
        return _summary([history], monitor, mode) if history else {}
    try:
        done = sorted(p for p in folds_dir.iterdir() if (p / "metrics.json").is_file())
    except OSError:
        done = []
    folds = [normalize_metrics(_read_json(p / "metrics.json")) for p in done]
    histories = [h for h in (_read_history(p / "history.csv") for p in done) if h]
    smoothing = _get(config, "validation", "smoothing")
    out = _summary(histories, monitor, mode, smoothing if isinstance(smoothing, dict) else None)
    n_splits, repeats = _get(config, "validation", "n_splits"), _get(config, "validation", "repeats") or 1
    total = n_splits * repeats if isinstance(n_splits, int) and isinstance(repeats, int) else None
    out["partial"] = {"folds_done": len(done), "folds_total": total}
    out["folds"] = [fold for fold in folds if fold]
    return out


def _read_json(path: Path) -> Any:
    try:
        return runs.read_json(path)
    except (OSError, ValueError, RecursionError):
        return None


def _read_history(path: Path) -> dict[str, list[float]]:
    try:
        history = runs.read_history(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    history.pop("epoch", None)
    return {k: v for k, v in history.items() if k not in NOT_METRICS and v}


def _summary(histories: list[dict[str, list[float]]], monitor: str, mode: str,
             smoothing: dict | None = None) -> dict:
    """Best and last epoch of the mean curve over `histories` (one for hold-out), like the training
    side's summary: validation metrics without `val_`, K-fold stds (ddof=0) across the histories."""
    from kexp import diagnostics

    columns = [c for c in histories[0] if all(c in h for h in histories)] if histories else []
    length = min((len(h[c]) for h in histories for c in columns), default=0)
    if not length:
        return {}

    def at(column: str, index: int) -> tuple[float | None, float | None]:
        values = [h[column][index] for h in histories if math.isfinite(h[column][index])]
        if not values:
            return None, None
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    best = length
    if monitor in columns:
        curve = [at(monitor, i)[0] for i in range(length)]
        skip = 0
        if smoothing is not None and isinstance(smoothing.get("factor"), (int, float)):
            skip = smoothing.get("skip")
            skip = skip if isinstance(skip, int) and 0 <= skip < length else 0
            try:
                curve = diagnostics.ema(curve[skip:], smoothing["factor"])
            except ValueError:
                skip = 0
        try:
            best = diagnostics.best_epoch(curve, mode) + skip
        except ValueError:
            pass
    out: dict[str, Any] = {"epochs_run": max(len(next(iter(h.values()))) for h in histories), "best_epoch": best,
                           "validation": {}, "train": {}}
    for which, index in (("best", best - 1), ("last", length - 1)):
        for column in columns:
            mean, std = at(column, index)
            section = "validation" if column.startswith("val_") else "train"
            name = column.removeprefix("val_")
            out[section].setdefault(which, {})[name] = mean
            if len(histories) > 1:
                out[section].setdefault(f"{which}_std", {})[name] = std
    return out


def resume_hint(row: RunRow) -> str | None:
    """For an interrupted K-fold run: what finished, and the command that finishes it."""
    partial = row.metrics.get("partial")
    if row.fields["status"] not in ("interrupted", "incomplete") or not isinstance(partial, dict):
        return None
    done, total = partial.get("folds_done"), partial.get("folds_total")
    of = f"{done} of {total}" if total else f"{done}"
    return (f"{row.record.path}: {row.fields['status']} after {of} folds; finish it with: "
            f"kexp kfold --resume {row.record.path}")


# --------------------------------------------------------------------------- reading and selecting
def load_rows(paths: Sequence[str | Path], newest: int | None = None) -> tuple[list[RunRow], list[str]]:
    """The run folders under `paths` as rows, oldest first, and one warning per folder that could
    only be read in part (or not at all: those are skipped). RunError when there are none.

    With `newest`, only about that many of the most recent runs are read (for `--last N` without
    `--where`), judged by the UTC time stamp that starts every run folder's name; folders named
    otherwise are all read."""
    found = runs.find_runs(list(paths))
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise RunError(f"{shown}: no kexp run folders found (a run folder holds status.json and config.yaml)")
    if newest is not None and all(_STAMP.match(p.name) for p in found):
        found = sorted(found, key=lambda p: (p.name[:16], str(p)))
        want = newest + _SLACK
    else:
        want = None
    rows, warnings = [], []
    for path in reversed(found) if want else found:
        record = runs.read_run(path)
        if record.status_data is None and record.config is None and record.metrics is None:
            warnings.append(f"{path}: skipped, nothing readable ({'; '.join(record.problems) or 'empty'})")
            continue
        if record.problems:
            warnings.append(f"{path}: {'; '.join(record.problems)}; listed as far as readable")
        rows.append(make_row(record))
        if want and len(rows) >= want:
            break
    rows.sort(key=lambda r: (r.fields["started"] or "", r.record.name))
    return rows, warnings


def _known_keys(rows: Sequence[RunRow]) -> list[str]:
    keys = dict.fromkeys(COLUMNS)
    for row in rows:
        keys.update(dict.fromkeys(row.config or {}))
    return list(keys)


def _unknown(option: str, key: str, rows: Sequence[RunRow]) -> UsageError:
    hint = close_matches(key, _known_keys(rows))
    return UsageError(f"{option}: {key}: no run has this column, config key or metric{hint}; columns: "
                      f"{', '.join(COLUMNS)}; config keys as dotted paths (e.g. training.epochs); metrics as "
                      "val_loss, loss@last, test_accuracy, train_loss")


def _check_key(option: str, key: str, rows: Sequence[RunRow]) -> None:
    if key in COLUMNS or any(row.config is not None and key in row.config for row in rows):
        return
    if _is_metric_key(key, rows):
        return
    raise _unknown(option, key, rows)


OPERATORS = ("=", "==", "!=", "<", "<=", ">", ">=")
_WHERE = re.compile(r"^\s*(?P<key>[^<>=!\s](?:[^<>=!]*[^<>=!\s])?)\s*(?P<op><=|>=|!=|==|=|<|>)\s*(?P<text>.*?)\s*$",
                    re.DOTALL)


@dataclass(frozen=True)
class Condition:
    """One --where condition: KEY OP VALUE, the value as text and as the YAML scalar it parses to."""

    key: str
    op: str
    text: str
    value: Any

    def test(self, actual: Any) -> bool:
        if self.op in ("=", "=="):
            return matches(actual, self.text, self.value)
        if self.op == "!=":
            return not matches(actual, self.text, self.value)
        return ordered(actual, self.op, self.text, self.value)


def parse_where(items: Iterable[str]) -> list[Condition]:
    """`KEY=VALUE`, `KEY!=VALUE`, `KEY<VALUE`, `KEY<=VALUE`, `KEY>VALUE`, `KEY>=VALUE` strings as
    Conditions, the value being the YAML scalar the text parses to (20, true, null), or the text
    itself when it is not one. `val_final` is read as `val_last`."""
    import yaml

    conditions = []
    for item in items:
        match = _WHERE.match(item)
        if not match:
            raise UsageError(f"--where {item}: expected KEY=VALUE (or KEY!=VALUE, KEY<VALUE, KEY<=VALUE, KEY>VALUE, "
                             "KEY>=VALUE), e.g. dataset=reuters or 'training.epochs>=20'")
        text = match["text"]
        try:
            value = yaml.safe_load(text) if text else None
        except Exception:
            value = text
        conditions.append(Condition(canonical_key(match["key"]), match["op"], text, value))
    return conditions


def ordered(actual: Any, op: str, text: str, parsed: Any) -> bool:
    """`actual OP value` for <, <=, >, >=: numbers as numbers, anything else as text (ISO times sort
    as text); a run without a value never matches."""
    if actual is None or actual is _MISSING or isinstance(actual, bool):
        return False
    left: Any
    right: Any
    if isinstance(actual, (int, float)):
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            left, right = float(actual), float(parsed)
        else:
            try:
                left, right = float(actual), float(text)
            except ValueError:
                return False
    else:
        left, right = str(actual), text
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def matches(actual: Any, text: str, parsed: Any) -> bool:
    """Whether a run's value equals a --where value, given as its text and the value parsed from it:
    20 == 20.0, true, null, else as a string."""
    if actual is None or actual is _MISSING:
        return parsed is None
    if isinstance(actual, bool) or isinstance(parsed, bool):
        return actual is parsed or str(actual).lower() == text.lower()
    if isinstance(actual, (int, float)):
        if isinstance(parsed, (int, float)):
            return float(actual) == float(parsed)
        try:
            return float(text) == float(actual)
        except ValueError:
            return False
    return actual == parsed or str(actual) == text


def select(rows: Sequence[RunRow], where: Iterable[str] = (), last: int | None = None) -> list[RunRow]:
    """The rows matching every condition (`KEY=VALUE`, `KEY>=VALUE`, ...: ANDed), then the `last` most
    recent of them."""
    conditions = parse_where(where)
    for condition in conditions:
        _check_key("--where", condition.key, rows)
    kept = [row for row in rows if all(c.test(row.value(c.key)[0]) for c in conditions)]
    if last is not None:
        if last < 1:
            raise UsageError(f"--last {last}: must be at least 1")
        kept = kept[-last:]  # rows are oldest first
    return kept


def differing_keys(rows: Sequence[RunRow], exclude: Iterable[str] = ("name", "dataset.name", "validation.scheme")
                   ) -> list[str]:
    """The config dotted keys whose values are not the same in every run (a missing key counts as
    null): first those that differ between runs of the same dataset, then in config order. Runs whose
    config could not be read are left out of the comparison. Excluded by default: the keys that the
    run, dataset and scheme columns already show."""
    configs = [row.config for row in rows if row.config is not None]
    if len(configs) < 2:
        return []
    keys: dict[str, Any] = {}  # every key, in the order first seen
    for config in configs:
        keys.update(config)
    for key in exclude:
        keys.pop(key, None)
    differing = []
    rest = configs[1:]
    for key in keys:
        first = configs[0].get(key)
        kind = type(first)
        if all(type(value) is kind and value == first for value in [config.get(key) for config in rest]):
            continue  # the same everywhere (the common case, decided without _canonical)
        first = _canonical(first)
        if any(_canonical(config.get(key)) != first for config in rest):
            differing.append(key)
    # Keys that differ between runs of the same dataset say most (the Reuters pair's bottleneck
    # width), so they come first; keys that only follow from a different dataset come last.
    groups: dict[Any, list[dict]] = {}
    for config in configs:
        groups.setdefault(_canonical(config.get("dataset.name")), []).append(config)

    def within(key: str) -> int:
        return sum(len({_canonical(c.get(key)) for c in group}) > 1 for group in groups.values())

    return sorted(differing, key=lambda key: -within(key))


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    return ("s", str(value))


def sort_rows(rows: Sequence[RunRow], key: str, ascending: bool | None = None) -> list[RunRow]:
    """Rows sorted by a column, config key or metric; runs without a value go last either way.
    The default direction is the metric's (loss-like ascending, scores descending); margin is
    descending; other columns ascending."""
    key = canonical_key(key)
    _check_key("--sort", key, rows)
    if ascending is None:
        ascending = default_ascending(key, rows)
    present = [r for r in rows if r.value(key)[0] is not None]
    absent = [r for r in rows if r.value(key)[0] is None]

    def order(row: RunRow):
        value = row.value(key)[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, value, "")
        return (1, 0, str(value))

    return sorted(present, key=order, reverse=not ascending) + absent


def default_ascending(key: str, rows: Sequence[RunRow]) -> bool:
    key = canonical_key(key)
    if key == "margin":
        return False
    if key in _MAIN_METRIC_COLUMNS:
        main = next((r.fields["metric"] for r in rows if r.value(key)[0] is not None), "loss")
        return metric_mode(main) == "min"
    if key in COLUMNS or any(row.config is not None and key in row.config for row in rows):
        return True
    match = _METRIC_KEY.match(key.rsplit(".", 1)[-1])
    return metric_mode(match["name"] if match else key) == "min"


# --------------------------------------------------------------------------- the comparison
@dataclass
class Comparison:
    """The selected rows, in order, and the columns to show (built-in, config and metric keys)."""

    rows: list[RunRow]
    columns: list[str]
    config_columns: list[str]  # the differing config keys (all of them, whether shown or not)
    warnings: list[str] = field(default_factory=list)
    total: int = 0  # runs found before filtering
    explicit_columns: bool = False

    @property
    def hints(self) -> list[str]:
        """One line per interrupted K-fold run: what finished, and `kexp kfold --resume RUN`."""
        return [hint for hint in map(resume_hint, self.rows) if hint]

    @property
    def records(self) -> list[runs.RunRecord]:
        return [row.record for row in self.rows]

    def values(self) -> list[dict[str, Any]]:
        """One mapping per row: column -> raw value, plus `<column>_std` where a K-fold std exists."""
        with_std = [c for c in self.columns if any(row.value(c)[1] is not None for row in self.rows)]
        out = []
        for row in self.rows:
            item: dict[str, Any] = {}
            for column in self.columns:
                value, std = row.value(column)
                item[column] = _plain(value)
                if column in with_std:
                    item[f"{column}_std"] = _plain(std)
            out.append(item)
        return out


def _plain(value: Any) -> Any:
    if value is _MISSING:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def compare(paths: Sequence[str | Path], *, sort: str | None = None, ascending: bool | None = None,
            where: Iterable[str] = (), columns: Sequence[str] | str | None = None,
            last: int | None = None) -> Comparison:
    """Read the runs under `paths`, filter, keep the last N, sort, and choose the columns.

    Without `columns`: the built-in columns (`metric` only when runs differ in it) then the config keys
    that differ between the selected runs. Raises RunError when no run is found or none is left
    after filtering, UsageError for an unknown key or malformed option."""
    where = list(where)
    rows, warnings = load_rows(paths, newest=last if not where else None)
    total = len(rows)
    if not rows:
        raise RunError("no run folder could be read:\n" + "\n".join(warnings))
    kept = select(rows, where, last)
    if not kept:
        raise RunError(f"{total} run{'s' if total != 1 else ''} found, none match "
                       + " and ".join(f"--where {w}" for w in where))
    if sort:
        kept = sort_rows(kept, sort, ascending)
    elif ascending is False:
        kept = list(reversed(kept))
    differing = differing_keys(kept)
    if isinstance(columns, str):
        columns = [c for c in columns.split(",") if c.strip()]
    columns = [canonical_key(c) for c in columns or ()]
    if columns:
        for column in columns:
            _check_key("--columns", column, rows)
        chosen = list(dict.fromkeys(columns))
    else:
        chosen = [c for c in DEFAULT_COLUMNS
                  if c != "metric" or len({r.fields["metric"] for r in kept}) > 1]
        chosen += differing
    return Comparison(rows=kept, columns=chosen, config_columns=differing, warnings=warnings, total=total,
                      explicit_columns=bool(columns))


# --------------------------------------------------------------------------- formatting
def format_number(value: Any, signed: bool = False) -> str:
    if value is None or value is _MISSING:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        if abs(value) >= 1000:
            return f"{value:+.0f}" if signed else f"{value:.0f}"
        return f"{value:+.3g}" if signed else f"{value:.4g}"
    return str(value)


def format_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_cell(column: str, value: Any, std: float | None = None) -> str:
    """The text of one table / markdown cell."""
    if column == "run":
        return run_label(str(value)) if value else "-"
    if column == "duration":
        return format_duration(value)
    if column == "started" and isinstance(value, str):
        return value.replace("T", " ").removesuffix("Z")[:16]
    if column == "margin":
        return format_number(value, signed=True)
    text = format_number(value)
    if std is not None and value is not None:
        text += f"±{std:.2g}"
    return text


def header(column: str) -> str:
    """The table header of a column: a short name, or a dotted key, abbreviated (`short_key`) and
    broken after its dots."""
    if column in COLUMNS:
        return COLUMNS[column].header
    return _wrap_key(short_key(column)[0])


# Config sections as table headers: `model.layers.2.rate` -> `L2.rate`, `training.epochs` -> `epochs`.
_SECTIONS = ((re.compile(r"^model\.layers\.(\d+)(?=\.|$)"), r"L\1", "L<i> model.layers.<i>"),
             (re.compile(r"^training\.callbacks\.(\d+)(?=\.|$)"), r"cb\1", "cb<i> training.callbacks.<i>"),
             (re.compile(r"^compile\.optimizer(?=\.|$)"), "opt", "opt compile.optimizer"),
             (re.compile(r"^compile\.(?=.)"), "", None),
             (re.compile(r"^training\.(?=.)"), "", None),
             (re.compile(r"^preprocessing(?=\.|$)"), "pre", None),
             (re.compile(r"^validation(?=\.|$)"), "val", None),
             (re.compile(r"^dataset(?=\.|$)"), "data", None))
_LONG_WORD = 10  # longer snake_case words of a key become their initials: learning_rate -> lr


def short_key(key: str) -> tuple[str, list[str]]:
    """A config key as a short table header, and the abbreviations it uses, explained:
    `compile.optimizer.learning_rate` -> (`opt.lr`, ["opt compile.optimizer", "lr learning_rate"])."""
    legend: list[str] = []
    for pattern, replacement, meaning in _SECTIONS:
        shorter = pattern.sub(replacement, key, count=1)
        if shorter != key:
            key = shorter.lstrip(".")
            if meaning:
                legend.append(meaning)
            break
    parts = []
    for part in key.split("."):
        if len(part) > _LONG_WORD and "_" in part.strip("_"):
            initials = "".join(word[0] for word in part.split("_") if word)
            legend.append(f"{initials} {part}")
            part = initials
        parts.append(part)
    return ".".join(parts), legend


def _short_metric(name: str) -> str:
    return {"accuracy": "acc", "binary_accuracy": "acc", "categorical_accuracy": "acc",
            "sparse_categorical_accuracy": "acc", "mean_absolute_error": "mae",
            "mean_squared_error": "mse"}.get(name, name)


def _wrap_key(key: str, width: int = 10) -> str:
    """A dotted key broken after dots into lines of about `width`, so narrow columns stay readable."""
    lines, line = [], ""
    for part in key.split("."):
        piece = part if not line else f".{part}"
        if line and len(line) + len(piece) > width:
            lines.append(line + ".")
            line = part
        else:
            line += piece
    lines.append(line)
    return "\n".join(lines)


def run_labels(names: Sequence[str]) -> list[str]:
    """Short, still distinct run names: the folder name without its UTC time stamp, and without its
    random suffix where the rest is unique among `names` (`reuters`, `reuters-3fa2c1`)."""
    rests = [run_label(name) for name in names]
    stems = [re.sub(r"-[0-9a-f]{6}$", "", rest) for rest in rests]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else rest for stem, rest in zip(stems, rests)]


_TEXT_COLUMNS = ("run", "command", "dataset", "scheme", "status", "metric", "path", "started")
_SHARED_COLUMNS = ("command", "dataset", "scheme", "status", "metric")
_RUN_WIDTH = 24  # longer run names fold
_CONFIG_WIDTH = 14  # longer config values fold
_IMPLIED_SCHEME = {"train": "holdout", "kfold": "kfold"}
_STATUS_STYLES = {"failed": "red", "interrupted": "yellow", "incomplete": "yellow", "running": "cyan",
                  "unknown": "red"}


@dataclass
class TableLayout:
    """What the compare table shows at one console width."""

    title: str | None
    columns: list[str]
    headers: list[str]
    widths: list[int]
    right: list[bool]  # right-justified (numbers)
    cells: list[list[str]]  # per row, per shown column
    styles: list[str | None]  # per row
    hidden: list[str]  # differing config keys left out for width
    gap: int
    legend: list[str] = field(default_factory=list)  # the abbreviations in the headers, explained

    @property
    def abbreviations(self) -> str | None:
        return f"headers: {', '.join(self.legend)}" if self.legend else None

    @property
    def note(self) -> str | None:
        if not self.hidden:
            return None
        more = ", ".join(self.hidden[:8]) + (", ..." if len(self.hidden) > 8 else "")
        return (f"{len(self.hidden)} more config key{'s' if len(self.hidden) != 1 else ''} differ (too wide to "
                f"show): {more}; choose columns with --columns, or see them all with --format csv")


class CompareTable:
    """The comparison as a Rich renderable that fits the console it is printed on (100 columns is
    plenty): short headers, run names without time stamps, the built-in columns that every run
    shares (command, dataset, scheme, status, main metric) said once in the title, and as many of the
    differing config keys as fit, the others named in a note below; a cell wider than its column
    folds onto more lines. With --columns: exactly those columns.

    The rows are laid out here rather than with rich.table.Table, which takes ~1 ms a row: a table
    of 500 runs renders in ~20 ms instead of ~0.45 s."""

    def __init__(self, comparison: Comparison):
        self.comparison = comparison

    def __rich_console__(self, console, options):
        from rich.cells import set_cell_size
        from rich.segment import Segment
        from rich.text import Text

        width = options.max_width
        layout = self.layout(width)
        if layout.title:
            yield Text(layout.title)

        def lines(texts: list[str], style: str | None):
            # one Segment per line: a Text per row would cost more than the rest of compare
            style = console.get_style(style) if style else None
            for line in texts:
                fits = len(line) <= width if line.isascii() else False
                yield Segment(line if fits else set_cell_size(line, width).rstrip(), style)
                yield Segment.line()

        yield from lines(self._lines(layout, header=True), "bold")
        yield from lines(["─" * (sum(layout.widths) + layout.gap * (len(layout.widths) - 1))], None)
        for index, style in enumerate(layout.styles):
            yield from lines(self._lines(layout, row=index), style)
        for note in (layout.abbreviations, layout.note):
            if note:
                yield Text(note, style="dim")

    @staticmethod
    def _lines(layout: TableLayout, header: bool = False, row: int = 0) -> list[str]:
        from rich.cells import cell_len, chop_cells

        texts = layout.headers if header else layout.cells[row]
        pieces = []
        for text, width in zip(texts, layout.widths):
            if len(text) <= width and text.isascii() and "\n" not in text:
                pieces.append([text])  # the common case: one line that fits
                continue
            lines = [chunk for line in text.split("\n") for chunk in (chop_cells(line, width) or [""])]
            pieces.append(lines)
        height = max((len(p) for p in pieces), default=1)
        out = []
        for n in range(height):
            cells = []
            for lines, width, right in zip(pieces, layout.widths, layout.right):
                # headers sit on their last lines, so short headers line up with the columns' values
                index = n - (height - len(lines)) if header else n
                text = lines[index] if 0 <= index < len(lines) else ""
                pad = " " * (width - (len(text) if text.isascii() else cell_len(text)))
                cells.append(pad + text if right else text + pad)
            out.append((" " * layout.gap).join(cells).rstrip())
        return out

    def layout(self, width: int) -> TableLayout:
        """The columns, their widths and the cell texts for a console `width` columns wide."""
        comparison = self.comparison
        rows = comparison.rows
        columns = list(comparison.columns)
        shared = []
        if not comparison.explicit_columns:
            implied = all(_IMPLIED_SCHEME.get(r.fields["command"]) == r.fields["scheme"] for r in rows)
            if "scheme" in columns and implied:
                columns.remove("scheme")  # `train` is always holdout, `kfold` always kfold
            for column in _SHARED_COLUMNS if len(rows) > 1 else ():
                values = {str(r.fields.get(column)) for r in rows}
                if len(values) == 1:
                    shared.append(f"{column} {values.pop()}")
                    if column in columns:
                        columns.remove(column)
        labels = run_labels([r.record.name for r in rows])
        cells = {c: [label if c == "run" else _short_metric(str(row.fields["metric"])) if c == "metric"
                     else format_cell(c, *row.value(c)) for row, label in zip(rows, labels)] for c in columns}
        heads = {c: COLUMNS[c].header if c in COLUMNS else _wrap_key(c) for c in columns}
        config_columns = set(comparison.config_columns)

        def abbreviate() -> None:
            """Short headers for the config keys (`opt.lr`), where two keys do not abbreviate alike."""
            short = {c: header(c) for c in columns if c not in COLUMNS}
            counts: dict[str, int] = {}
            for text in short.values():
                counts[text] = counts.get(text, 0) + 1
            heads.update({c: text for c, text in short.items() if counts[text] == 1})

        def natural(column: str) -> int:
            longest = max([len(line) for line in heads[column].splitlines()] + [len(t) for t in cells[column]])
            if column == "run":
                return min(longest, _RUN_WIDTH)
            return min(longest, _CONFIG_WIDTH) if column in config_columns else longest

        def fit(gap: int) -> list[str]:
            """The config columns that do not fit when columns are `gap` apart."""
            used = sum(natural(c) + gap for c in columns if c not in config_columns)
            hidden: list[str] = []
            for index, column in enumerate(c for c in columns if c in config_columns):
                # the first differing key is always shown (the others fold to make room)
                if hidden or (index and used + natural(column) > width):
                    hidden.append(column)
                else:
                    used += natural(column) + gap
            return hidden

        def spacing() -> tuple[int, list[str]]:
            """Columns 2 apart, or 1 apart rather than hide config keys or fold cells."""
            hidden = fit(2)
            if hidden or sum(natural(c) + 2 for c in columns if c not in hidden) - 2 > width:
                return 1, fit(1)
            return 2, hidden

        hidden: list[str] = []
        gap = 2
        if not comparison.explicit_columns:
            gap, hidden = spacing()
            if hidden or sum(natural(c) + gap for c in columns if c not in hidden) - gap > width:
                abbreviate()  # shorter headers rather than hide or fold
                gap, hidden = spacing()
            columns = [c for c in columns if c not in hidden]
        elif sum(natural(c) + gap for c in columns) - gap > width:
            abbreviate()
        widths = [natural(c) for c in columns]
        foldable = [c in ("run", "dataset", "path", "started") or c in config_columns for c in columns]
        _shrink(widths, foldable, width - gap * (len(columns) - 1))
        legend = {}
        for column in columns:
            if column not in COLUMNS and heads[column] != _wrap_key(column):
                legend.update(dict.fromkeys(short_key(column)[1]))
        return TableLayout(
            title=f"{len(rows)} runs; all have {', '.join(shared)}" if shared else None,
            columns=columns, headers=[heads[c] for c in columns], widths=widths,
            right=[c not in _TEXT_COLUMNS and c not in config_columns for c in columns],
            cells=[[cells[c][i] for c in columns] for i in range(len(rows))],
            styles=[_STATUS_STYLES.get(r.fields["status"]) for r in rows], hidden=hidden, gap=gap,
            legend=list(legend))


def _shrink(widths: list[int], foldable: list[bool], room: int, least: int = 4) -> None:
    """Narrow the widest foldable column, one character at a time, until the widths fit in `room`;
    then any column, down to `least` (cells fold onto more lines)."""
    for allowed in (foldable, [True] * len(widths)):
        while sum(widths) > room:
            candidates = [i for i, ok in enumerate(allowed) if ok and widths[i] > least]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1


def table(comparison: Comparison) -> CompareTable:
    """The comparison as a Rich renderable that fits the console's width (see CompareTable)."""
    return CompareTable(comparison)


_NUMERIC_COLUMNS = ("epochs", "best_epoch", "val_best", "val_last", "test", "chance", "baseline", "margin",
                    "duration")


def markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured Markdown table of every column (nothing hidden)."""
    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    heads = [escape(COLUMNS[c].long if c in COLUMNS else c) for c in comparison.columns]
    labels = run_labels([r.record.name for r in comparison.rows])
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---:" if c in _NUMERIC_COLUMNS else "---" for c in comparison.columns) + "|"]
    for row, label in zip(comparison.rows, labels):
        cells = [label if c == "run" else format_cell(c, *row.value(c)) for c in comparison.columns]
        lines.append("| " + " | ".join(escape(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(comparison: Comparison) -> str:
    """CSV of the raw values: numbers in full precision, empty for null, true/false, `<col>_std`
    columns for K-fold stds."""
    values = comparison.values()
    fields = list(values[0]) if values else comparison.columns
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for item in values:
        writer.writerow([_csv_cell(item.get(k)) for k in fields])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_json(comparison: Comparison) -> str:
    """A JSON list with one object per run (numbers as numbers, null for missing)."""
    return json.dumps(comparison.values(), indent=2) + "\n"


def render(comparison: Comparison, fmt: str = "table"):
    """The comparison in a format: a Rich renderable for "table", else a string."""
    if fmt == "table":
        return table(comparison)
    if fmt == "markdown":
        return markdown(comparison)
    if fmt == "csv":
        return to_csv(comparison)
    if fmt == "json":
        return to_json(comparison)
    raise UsageError(f"--format {fmt}: unknown format; allowed: {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- one run in full
def show(path: str | Path):
    """One run in full as a Rich renderable: status, metrics, folds, baseline, diagnostics, config,
    files. Partial folders show what they have. RunError when `path` is not a run folder."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    path = Path(path)
    if not path.is_dir() or not runs.is_run_folder(path):
        raise RunError(f"{path}: not a kexp run folder (it has no status.json)")
    record = runs.read_run(path)
    row = make_row(record)
    metrics = row.metrics
    status = record.status_data or {}
    parts: list[Any] = []

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("run", Text(str(record.path)))
    facts.add_row("status", Text(row.fields["status"], style=_STATUS_STYLES.get(row.fields["status"], "")))
    for label, value in (("command", row.fields["command"]), ("dataset", row.fields["dataset"]),
                         ("scheme", row.fields["scheme"]), ("started", status.get("started")),
                         ("ended", status.get("ended")), ("host", status.get("host")), ("pid", status.get("pid"))):
        if value is not None:
            facts.add_row(label, Text(str(value)))
    if row.fields["duration"] is not None:
        facts.add_row("duration", Text(format_duration(row.fields["duration"]) + _durations(metrics)))
    if status.get("error"):
        facts.add_row("error", Text(str(status["error"]), style="red"))
    if metrics.get("stop_reason"):
        facts.add_row("stopped", Text(str(metrics["stop_reason"])))
    if metrics.get("monitor"):
        facts.add_row("monitor", Text(f"{metrics['monitor']} ({metrics.get('mode', '?')})"))
    if row.fields["epochs"] is not None:
        epochs, best = format_number(row.fields["epochs"]), format_number(row.fields["best_epoch"])
        of_mean = _get(metrics, "validation", "best_epoch_source") == "mean_curve"
        source = " (of the mean curve over folds)" if of_mean else ""
        facts.add_row("epochs", Text(f"{epochs} run, best epoch {best}{source}"))
    partial = metrics.get("partial")
    if isinstance(partial, dict):
        total = partial.get("folds_total")
        facts.add_row("finished", Text(f"{partial.get('folds_done')} of {total if total else '?'} folds"))
    hint = resume_hint(row)
    if hint:
        facts.add_row("resume", Text(f"kexp kfold --resume {record.path}"))
    outputs = metrics.get("outputs")
    if isinstance(outputs, dict) and len(outputs) > 1:
        facts.add_row("outputs", Text(", ".join(
            f"{name} ({info.get('task', '?')}, main metric {info.get('main_metric', '?')})" if isinstance(info, dict)
            else str(name) for name, info in outputs.items())))
    final_model = metrics.get("final_model")
    if isinstance(final_model, dict):
        facts.add_row("final model", Text(f"retrained {final_model.get('epochs', '?')} epochs on "
                                          f"{final_model.get('n_train', '?')} samples"))
    parts.append(facts)

    metric_table = _metrics_table(metrics, final_model=isinstance(final_model, dict))
    if metric_table is not None:
        title = "metrics" if not isinstance(partial, dict) else "metrics (of what finished)"
        parts += [Rule(title, align="left"), metric_table]
    folds = metrics.get("folds")
    if isinstance(folds, list) and folds:
        parts += [Rule(f"folds ({len(folds)}), validation {row.fields['metric']}", align="left"),
                  _folds_table(folds, row.fields["metric"])]
    baselines = metrics.get("baselines")
    if not isinstance(baselines, dict) or not baselines:
        baselines = {None: metrics.get("baseline")}
    texts = [baseline_text(b) for b in baselines.values() if isinstance(b, dict)]
    if texts:
        parts += [Rule("baseline" if len(texts) == 1 else f"baselines ({len(texts)} outputs)", align="left"),
                  Text("\n".join(texts))]
    diagnostics = metrics.get("diagnostics")
    if isinstance(diagnostics, dict) and diagnostics.get("sentence"):
        parts += [Rule("diagnostics", align="left"), Text(str(diagnostics["sentence"]))]
    if record.config is not None:
        import yaml

        text = yaml.safe_dump(record.config, sort_keys=False, allow_unicode=True).rstrip()
        parts += [Rule("config (resolved)", align="left"), Text(text)]
    parts += [Rule(Text(f"files in {record.path}"), align="left"), Text(files_text(record.path))]
    if record.problems:
        parts += [Rule("problems", align="left"), Text("\n".join(record.problems), style="yellow")]
    return Group(*parts)


def _durations(metrics: dict) -> str:
    durations = metrics.get("durations")
    if not isinstance(durations, dict):
        return ""
    parts = [f"{k.removesuffix('_s')} {format_duration(v)}" for k, v in durations.items() if k != "total_s"
             and _number(v) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _metrics_table(metrics: dict, final_model: bool = False):
    """Every metric of every output (learning_rate is not one), at the best and the last epoch."""
    from rich.table import Table
    from rich.text import Text

    sources = [("val@best epoch", "validation", "best"), ("val@last epoch", "validation", "last"),
               ("train@last epoch", "train", "last"),
               ("test (final model)" if final_model else "test", "test", None)]
    names: dict[str, None] = {}
    for _, section, which in sources:
        values = _get(metrics, section, which) if which else metrics.get(section)
        if isinstance(values, dict):
            names.update(dict.fromkeys(values))
    if not names:
        return None
    grid = Table(box=None, padding=(0, 2), pad_edge=False, header_style="bold")
    grid.add_column("metric")
    for title, _, _ in sources:
        grid.add_column(title, justify="right")
    for name in names:
        cells = [str(name)]
        for _, section, which in sources:
            value = _number(_get(metrics, section, which, name) if which else _get(metrics, section, name))
            std = _number(_get(metrics, section, f"{which}_std", name)) if which else None
            cells.append(format_cell("value", value, std))
        grid.add_row(*map(Text, cells))
    return grid


def _folds_table(folds: list, main: str):
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, padding=(0, 2), pad_edge=False, header_style="bold")
    for title in ("fold", "train", "val", "epochs", "best", "at fold's best", "at last epoch", "time"):
        grid.add_column(title, justify="left" if title == "fold" else "right")
    for fold in folds:
        if not isinstance(fold, dict):
            continue
        cells = (str(fold.get("id", "?")), format_number(fold.get("n_train")), format_number(fold.get("n_val")),
                 format_number(fold.get("epochs_run")), format_number(fold.get("best_epoch")),
                 format_number(_number(_get(fold, "validation", "best", main))),
                 format_number(_number(_get(fold, "validation", "last", main))),
                 format_duration(fold.get("duration_s")))
        grid.add_row(*map(Text, cells))
    return grid


def baseline_text(baseline: dict) -> str:
    """The baseline in words: what it predicts, its scores, and the model's margin over it."""
    if baseline.get("error"):
        return f"baseline not computed: {baseline['error']}"
    metric = baseline.get("metric", "?")
    lines = []
    output = f" (output {baseline['output']})" if baseline.get("output") else ""
    for split in ("validation", "test"):
        scores = baseline.get(split)
        if isinstance(scores, dict):
            text = ", ".join(f"{k} {format_number(_number(v))}" for k, v in scores.items())
            if split == "test" and _number(baseline.get("test_model")) is not None:
                text += f"; model {format_number(baseline['test_model'])}"
            lines.append(f"{split}{output}: {text}")
    value, model, margin = baseline.get("value"), baseline.get("model"), baseline.get("margin")
    if _number(value) is not None:
        line = f"baseline{output} {metric} {format_number(value)}"
        if _number(model) is not None:
            line += f"; model {format_number(model)}; margin {format_number(_number(margin), signed=True)}"
            beats = baseline.get("beats")
            line += ": the model beats the baseline" if beats else (
                ": the model does NOT beat the baseline" if beats is False else "")
        lines.append(line)
    return "\n".join(lines) or "no baseline"


def files_text(path: Path, limit: int = 8) -> str:
    """The run folder's files (names relative to it): top-level files with sizes, subfolders summarised."""
    lines = []
    try:
        entries = sorted(path.iterdir(), key=lambda p: (p.is_dir(), p.name))
    except OSError as exc:
        return f"cannot list {path}: {exc.strerror or exc}"
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            inside = sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file())
            names = ", ".join(inside[:limit]) + (f", ... ({len(inside)} files)" if len(inside) > limit else "")
            lines.append(f"{entry.name}/  {names or '(empty)'}")
        else:
            try:
                size = entry.stat().st_size
            except OSError:
                size = None
            lines.append(f"{entry.name}  {_size(size)}")
    return "\n".join(lines) or "(empty folder)"


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"
