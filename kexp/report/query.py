"""`kexp compare`: the comparison of run folders and its query language.

A comparison is built in this order: find run folders -> read them (unreadable ones become
warnings) -> `--where` filters -> `--last N` most recent -> the config keys that differ between the
runs left -> `--sort` -> `--columns`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp import runs
from kexp.diagnostics import metric_mode
from kexp.errors import RunError, UsageError, close_matches
from kexp.report.rows import (
    COLUMNS,
    DEFAULT_COLUMNS,
    MAIN_METRIC_COLUMNS,
    METRIC_KEY,
    MISSING,
    STAMP,
    RunRow,
    canonical_key,
    make_row,
    resume_hint,
    run_label,
)

_SLACK = 2  # --last N reads N + this many of the newest folders, in case start times and names disagree


def _is_metric_key(key: str, rows: Sequence[RunRow]) -> bool:
    if key.startswith("metrics."):
        return True
    match = METRIC_KEY.match(key)
    return bool(match) and any(row.value(key)[0] is not None for row in rows)


def load_rows(paths: Sequence[str | Path], newest: int | None = None) -> tuple[list[RunRow], list[str]]:
    """The run folders under `paths` as rows, oldest first, and one warning per folder that could
    only be read in part (or not at all: those are skipped). RunError when there are none.

    With `newest`, only about that many of the most recent runs are read (for `--last N` without
    `--where`), judged by the UTC time stamp that starts every run folder's name; folders named
    otherwise are all read."""
    found = runs.find_runs(list(paths))
    if not found:
        shown = ", ".join(str(p) for p in paths)
        if all(runs.is_sweep_folder(Path(p)) for p in paths):
            raise RunError(f"{shown}: a sweep folder without trial run folders yet (its trials go under "
                           f"trials/; kexp show {shown} shows its state)")
        raise RunError(f"{shown}: no kexp run folders found (a run folder holds status.json and config.yaml)")
    if newest is not None and all(STAMP.match(p.name) for p in found):
        found = sorted(found, key=lambda p: (p.name[:16], str(p)))
        want = newest + _SLACK
    else:
        want = None
    rows, warnings = [], []
    for path in reversed(found) if want else found:
        record = runs.readable_run(path, warnings)
        if record is None:
            continue
        rows.append(make_row(record))
        if want and len(rows) >= want:
            break
    return grouped(rows), warnings


def grouped(rows: Sequence[RunRow]) -> list[RunRow]:
    """Oldest first, each sweep's trials together (where its first trial started), in trial order."""
    first: dict[str, str] = {}
    for row in rows:
        sweep = row.fields["sweep"]
        if sweep is not None:
            started = row.fields["started"] or ""
            first[sweep] = min(first.get(sweep, started), started)

    def order(row: RunRow) -> tuple[str, str, str, str]:
        sweep = row.fields["sweep"]
        if sweep is None:
            return row.fields["started"] or "", "", "", row.record.name
        return first[sweep], sweep, run_label(row.record.name), row.record.name

    return sorted(rows, key=order)


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
    conditions = []
    for item in items:
        match = _WHERE.match(item)
        if not match:
            raise UsageError(f"--where {item}: expected KEY=VALUE (or KEY!=VALUE, KEY<VALUE, KEY<=VALUE, KEY>VALUE, "
                             "KEY>=VALUE), e.g. dataset=reuters or 'training.epochs>=20'")
        text = match["text"]
        import yaml  # only with --where: importing PyYAML costs `compare` ~0.03 s

        try:
            value = yaml.safe_load(text) if text else None
        except Exception:
            value = text
        conditions.append(Condition(canonical_key(match["key"]), match["op"], text, value))
    return conditions


def ordered(actual: Any, op: str, text: str, parsed: Any) -> bool:
    """`actual OP value` for <, <=, >, >=: numbers as numbers, anything else as text (ISO times sort
    as text); a run without a value never matches."""
    if actual is None or actual is MISSING or isinstance(actual, bool):
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
    if actual is None or actual is MISSING:
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
    """Whether `--sort key` sorts ascending by default: a metric in its own direction (the one the run
    wrote in metrics.json's `directions`, else kexp.diagnostics.metric_mode's guess from its name),
    margin descending, other columns and config keys ascending."""
    key = canonical_key(key)
    if key == "margin":
        return False
    if key in MAIN_METRIC_COLUMNS:
        main = next((r.fields["metric"] for r in rows if r.value(key)[0] is not None), "loss")
        return direction(main, rows) == "min"
    if key in COLUMNS or any(row.config is not None and key in row.config for row in rows):
        return True
    match = METRIC_KEY.match(key.rsplit(".", 1)[-1])
    return direction(match["name"] if match else key, rows) == "min"


def direction(metric: str, rows: Sequence[RunRow]) -> str:
    """"min" or "max": as the first run that wrote the metric's direction says, else guessed."""
    written = next((d for d in (row.metrics.direction(metric) for row in rows) if d), None)
    return written or metric_mode(metric)


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
    if value is MISSING:
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
                  if (c != "metric" or len({r.fields["metric"] for r in kept}) > 1)
                  and (c != "sweep" or any(r.fields["sweep"] for r in kept))]
        chosen += differing
    return Comparison(rows=kept, columns=chosen, config_columns=differing, warnings=warnings, total=total,
                      explicit_columns=bool(columns))
