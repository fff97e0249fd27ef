"""`kexp show SWEEP`: a sweep folder's leaderboard, read from its sweep.json (kexp.layout.read_sweep,
the one reader) and its status.json; nothing here reads a trial's run folder but for the command that
runs best.yaml. Also the pieces that kexp.plots' sweep plots share: the ranking, the parameters that
vary, a parameter value as text.

The leaderboard: one row per trial, ranked by its objective in the objective's direction (sweep.json
`objective.mode`, else guessed from the metric's name); trials without a score (failed, pending,
running, interrupted) after the ranked ones, in trial order; the best trial (sweep.json `best`)
marked with `*`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexp import layout, runs
from kexp.diagnostics import metric_mode
from kexp.errors import RunError
from kexp.layout import Sweep, Trial
from kexp.report.numbers import format_duration, format_number, number
from kexp.report.table import STATUS_STYLES, short_key
from kexp.report.view import value_text

BEST_MARK = "*"
_STATUS_STYLES = {**STATUS_STYLES, "pending": "dim"}


@dataclass
class Entry:
    """One trial of the leaderboard: its rank (None: no score) and whether it is the best one."""

    trial: Trial
    rank: int | None
    best: bool = False


@dataclass
class Leaderboard:
    """A sweep folder as read back: its sweep.json, its status, the trials ranked."""

    path: Path
    sweep: Sweep
    status: str  # the sweep folder's status.json, as kexp.runs reads it (running with no process: incomplete)
    status_data: dict
    metric: str  # the objective, e.g. val_mae
    mode: str  # "min" or "max"
    entries: list[Entry]
    varying: list[str]  # the parameters whose values differ between trials (dotted config keys)
    problems: list[str] = field(default_factory=list)

    @property
    def best(self) -> Entry | None:
        return next((e for e in self.entries if e.best), None)


def objective(sweep: Sweep) -> tuple[str, str]:
    """The objective's metric and direction ("min"/"max"; from the metric's name while sweep.json has
    none yet)."""
    spec = sweep.objective or layout.Objective()
    metric = spec.metric if isinstance(spec.metric, str) and spec.metric else "val_loss"
    mode = spec.mode if spec.mode in ("min", "max") else metric_mode(metric)
    return metric, mode


def ranked(sweep: Sweep, mode: str) -> list[Entry]:
    """The trials best first (those with a finite objective), then the others in trial order. The best
    is sweep.json's `best.trial`, else the first ranked trial."""
    trials = sweep.trial_list()
    scored = [t for t in trials if number(t.objective) is not None and t.status in (None, "completed")]
    sign = -1 if mode == "max" else 1
    scored.sort(key=lambda t: sign * t.objective)
    entries = [Entry(t, rank) for rank, t in enumerate(scored, 1)]
    entries += [Entry(t, None) for t in trials if not any(t is e.trial for e in entries)]
    named = sweep.best.trial if isinstance(sweep.best, layout.SweepBest) else None
    chosen = next((e for e in entries if named is not None and e.trial.id == named), None)
    if chosen is None and named is None and entries and entries[0].rank is not None:
        chosen = entries[0]
    if chosen is not None:
        chosen.best = True
    return entries


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def varying_params(trials: Sequence[Trial]) -> list[str]:
    """The parameters (dotted keys, in the order first seen) whose values are not the same in every
    trial; all of them when none varies (a sweep of one point still shows it)."""
    params = [t.params or {} for t in trials]
    keys = list(dict.fromkeys(k for p in params for k in p))
    varying = [k for k in keys if len({_canonical(p[k]) if k in p else "<missing>" for p in params}) > 1]
    return varying or keys


def _layer_token(layer: dict) -> str:
    """One layer of a stack, short: a Dense layer by its units (`16`, `16+L2=0.001` with a kernel
    regularizer), Dropout by its rate (`d0.5`), any other layer by its name."""
    kind = str(layer.get("layer"))
    if kind == "Dense" and "units" in layer:
        regularizer = layer.get("kernel_regularizer")
        if isinstance(regularizer, dict):
            values = [f"{k}={format_number(v)}" for k, v in regularizer.items() if k != "name"]
            return f"{format_number(layer['units'])}+{regularizer.get('name')}" + (f"={values[0].split('=')[1]}"
                                                                                     if len(values) == 1 else "")
        return format_number(layer["units"])
    if kind == "Dropout" and "rate" in layer:
        return f"d{format_number(layer['rate'])}"
    return kind


def param_text(value: Any) -> str:
    """A parameter's value, short: 0.001, relu, null, L2(l2=0.0001); a stack of layers as its shape,
    `16-16-1` (Dense units), `16+L2=0.001-d0.5-1` (regularizer, Dropout rate)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "layer" in v for v in value):
        return "-".join(_layer_token(v) for v in value)
    if isinstance(value, dict):
        name = value.get("name", value.get("layer"))
        rest = [(k, v) for k, v in value.items() if not (isinstance(name, str) and k in ("name", "layer"))]
        if isinstance(name, str):
            return f"{name}({', '.join(f'{k}={param_text(v)}' for k, v in rest)})"
        return "{" + ", ".join(f"{k}: {param_text(v)}" for k, v in rest) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    if value is None:
        return "null"
    return format_number(value)


def params_text(params: dict | None, keys: Sequence[str]) -> str:
    """A trial's values of `keys`, short: `L0.units=64, opt.lr=0.003`."""
    return ", ".join(f"{short_key(k)[0]}={param_text(v)}" for k, v in (params or {}).items() if k in keys)


def space_size(space: Any) -> int | None:
    """How many points the space has (the product of each key's count of choices); None when a range is
    continuous (a float range without a step) or the space cannot be read."""
    if not isinstance(space, dict) or not space:
        return None
    size = 1
    for spec in space.values():
        count = _choices(spec)
        if count is None:
            return None
        size *= count
    return size


def _choices(spec: Any) -> int | None:
    if isinstance(spec, list):
        return len(spec)
    if not isinstance(spec, dict):
        return None
    for key in ("choices", "values"):
        if isinstance(spec.get(key), list):
            return len(spec[key])
    low, high, step = (number(spec.get(k)) for k in ("min", "max", "step"))
    if low is None or high is None or high < low:
        return None
    if step is not None and step > 0 and not spec.get("log"):
        return int((high - low) / step + 1e-9) + 1
    if step is None and isinstance(low, int) and isinstance(high, int):
        return high - low + 1
    return None


def method_text(method: Any) -> str:
    if isinstance(method, dict):
        name = method.get("name", method.get("method"))
        rest = ", ".join(f"{k} {param_text(v)}" for k, v in method.items() if k not in ("name", "method"))
        return f"{name or '?'}{f' ({rest})' if rest else ''}"
    return str(method) if method else "?"


def read_leaderboard(path: str | Path) -> Leaderboard:
    """A sweep folder's leaderboard. RunError when `path` is not a sweep folder."""
    path = Path(path)
    if not path.is_dir() or not runs.is_sweep_folder(path):
        raise RunError(f"{path}: not a kexp sweep folder (it has no {layout.STATUS} and {layout.SWEEP_JSON})")
    problems: list[str] = []
    sweep = layout.read_sweep(path, problems)
    if sweep is None:
        if not problems:
            problems.append(f"{layout.SWEEP_JSON}: missing (the sweep has not planned its trials yet)")
        sweep = Sweep()
    record = runs.read_run(path)
    metric, mode = objective(sweep)
    trials = sweep.trial_list()
    return Leaderboard(path=path, sweep=sweep, status=record.status if record.status_data is not None else "unknown",
                       status_data=record.status_data or {}, metric=metric, mode=mode, entries=ranked(sweep, mode),
                       varying=varying_params(trials), problems=problems)


# --------------------------------------------------------------------------- rendering
def leaderboard(path: str | Path):
    """`kexp show SWEEP`: the sweep's facts, then its leaderboard, as a Rich renderable."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    board = read_leaderboard(path)
    parts: list[Any] = [facts(board)]
    if board.entries:
        done = sum(e.rank is not None for e in board.entries)
        parts += [Rule(f"leaderboard: {done} of {len(board.entries)} trials scored, best first", align="left"),
                  table(board)]
        legend = _legend(board.varying)
        notes = [f"{BEST_MARK} the best trial; objective: {board.metric}, mean ± std "
                 f"({_over(board.sweep)}); margin: the main metric's over the common-sense baseline"]
        notes += [f"headers: {', '.join(legend)}"] if legend else []
        parts.append(Text("\n".join(notes), style="dim"))
    failed = [e.trial for e in board.entries if e.trial.error]
    if failed:
        parts += [Rule("errors", align="left"),
                  Text("\n".join(f"{t.id}: {_one_line(t.error)}" for t in failed), style="red")]
    if board.problems:
        parts += [Rule("problems", align="left"), Text("\n".join(board.problems), style="yellow")]
    return Group(*parts)


def _over(sweep: Sweep) -> str:
    seeds = number(sweep.seeds)
    return f"std over {seeds} seeds" if seeds is not None and seeds > 1 else "K-fold: std over folds"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def facts(board: Leaderboard):
    """The sweep's facts, one per line: folder, status, method and space, objective, best, best.yaml."""
    from rich.table import Table
    from rich.text import Text

    sweep, status = board.sweep, board.status_data
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("sweep", Text(str(board.path)))
    grid.add_row("status", Text(board.status, style=_STATUS_STYLES.get(board.status, "")))
    for label, value in (("started", status.get("started")), ("ended", status.get("ended"))):
        if value is not None:
            grid.add_row(label, Text(str(value)))
    if status.get("error"):
        grid.add_row("error", Text(str(status["error"]), style="red"))
    size = space_size(sweep.space)
    space = f"{size} points" if size is not None else "continuous" if sweep.space else "?"
    keys = len(sweep.space or {})
    grid.add_row("method", Text(f"{method_text(sweep.method)}; space: {space} ({keys} parameter{'s' * (keys != 1)})"))
    counts: dict[str, int] = {}
    for entry in board.entries:
        counts[entry.trial.status or "?"] = counts.get(entry.trial.status or "?", 0) + 1
    grid.add_row("trials", Text(f"{len(board.entries)}" + (f" ({', '.join(f'{n} {s}' for s, n in counts.items())})"
                                                           if counts else "")))
    how = sweep.objective.score if sweep.objective is not None and sweep.objective.score else None
    grid.add_row("objective", Text(f"{board.metric} ({board.mode})" + (f": {how}" if how else "")))
    seeds = number(sweep.seeds)
    if seeds is not None and seeds > 1:
        grid.add_row("seeds", Text(f"{seeds} per trial: the objective is the mean over them, ± their std"))
    best = board.best
    if best is not None:
        params = params_text(best.trial.params, board.varying)
        grid.add_row("best", Text(f"{best.trial.id}: {board.metric} "
                                  f"{value_text(best.trial.objective, best.trial.objective_std)}"
                                  + (f" ({params})" if params else "")))
    target = board.path / layout.BEST_CONFIG
    if target.is_file():
        grid.add_row("best config", Text(f"{target} (run it: kexp {_command(board)} {target})"))
    elif board.status in ("running", "incomplete", "interrupted"):
        grid.add_row("best config", Text(f"{layout.BEST_CONFIG} is written when the sweep completes"))
    final = sweep.final if isinstance(sweep.final, dict) else None
    if final:
        test = final.get("test") if isinstance(final.get("test"), dict) else {}
        scores = ", ".join(f"{k} {format_number(v)}" for k, v in test.items()) or "no test split"
        grid.add_row("final model", Text(f"{final.get('trial')} retrained on all training data "
                                         f"({final.get('epochs')} epochs): test {scores}; {final.get('run')}"))
    if board.status in ("interrupted", "incomplete"):
        grid.add_row("resume", Text(f"kexp sweep --resume {board.path}"))
    return grid


def _command(board: Leaderboard) -> str:
    """`train` or `kfold`: as the best trial's run folder was run."""
    best = board.best
    found = [r for r in (best.trial.runs or []) if isinstance(r, str)] if best is not None else []
    command = runs.read_run(board.path / found[0]).command if found else None
    return command if command in ("train", "kfold") else "train (or kfold)"


def _legend(keys: Sequence[str]) -> list[str]:
    legend: dict[str, None] = {}
    for key in keys:
        legend.update(dict.fromkeys(short_key(key)[1]))
    return list(legend)


def _headers(keys: Sequence[str]) -> list[str]:
    """Short headers for the parameters (`opt.lr`); the full key where two would read alike."""
    short = [short_key(k)[0] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys)]


def table(board: Leaderboard):
    """The leaderboard as a Rich renderable: rank, trial, the varying parameters, the objective (mean ±
    std), best and overfitting-onset epochs, margin over the baseline, epochs trained, time, status.
    Where the console is too narrow, columns go 1 apart, then epochs trained, time and the
    overfitting-onset epoch are left out (said below it), then parameter values fold."""
    return _BoardTable(board)


_DROPPABLE = ("epochs\ntrained", "time", "overfit\nepoch")  # left out first, in this order, where too narrow


class _BoardTable:
    def __init__(self, board: Leaderboard):
        self.board = board

    def columns(self) -> tuple[list[str], list[list[str]], int]:
        """The headers, the rows' cells (the status last) and how many parameter columns follow `trial`."""
        board = self.board
        heads = ["", "rank", "trial", *_headers(board.varying), f"{board.metric}\n({board.mode})", "best\nepoch",
                 "overfit\nepoch", "margin", "epochs\ntrained", "time", "status"]
        rows = []
        for entry in board.entries:
            trial, params = entry.trial, entry.trial.params or {}
            rows.append([BEST_MARK if entry.best else "", format_number(entry.rank), trial.id or "?",
                         *(param_text(params[k]) if k in params else "-" for k in board.varying),
                         value_text(trial.objective, trial.objective_std), format_number(number(trial.best_epoch)),
                         format_number(number(trial.overfit_epoch)), format_number(number(trial.margin), signed=True),
                         format_number(number(trial.epochs_trained)), format_duration(trial.duration_s),
                         trial.status or "?"])
        return heads, rows, len(board.varying)

    def __rich_console__(self, console, options):
        from rich.table import Table
        from rich.text import Text

        heads, rows, n_params = self.columns()
        params = range(3, 3 + n_params)
        widths = [max(len(line) for text in [head, *(row[i] for row in rows)] for line in text.splitlines() or [""])
                  for i, head in enumerate(heads)]
        widths = [min(w, 28) if i in params else w for i, w in enumerate(widths)]
        shown = list(range(len(heads)))

        def total(gap: int) -> int:
            return sum(widths[i] for i in shown) + gap * (len(shown) - 1)

        gap = 2 if total(2) <= options.max_width else 1
        left_out = []
        for head in _DROPPABLE:
            if total(gap) <= options.max_width:
                break
            shown.remove(heads.index(head))
            left_out.append(head.replace("\n", " "))
        grid = Table(box=None, padding=(0, 1) if gap == 2 else (0, 1, 0, 0), pad_edge=False, header_style="bold")
        for i in shown:
            if i in params:
                grid.add_column(heads[i], overflow="fold", max_width=28)
            else:
                grid.add_column(heads[i], justify="right" if 0 < i and i not in (2, len(heads) - 1) else "left",
                                no_wrap=True)
        for entry, row in zip(self.board.entries, rows):
            cells: list = [row[i] for i in shown]
            cells[-1] = Text(row[-1], style=_STATUS_STYLES.get(row[-1], ""))
            grid.add_row(*cells, style="bold" if entry.best else None)
        yield grid
        if left_out:
            yield Text(f"left out at this width: {', '.join(left_out)}", style="dim")
