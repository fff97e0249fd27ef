"""The terminal side of `train`, `kfold` and `sweep`: progress as the run goes, and the final tables.

Three ways to show progress (`Display(mode=...)`), one set of Observer hooks:
- `live`: compact Rich progress bars, one per running split (a terminal);
- `plain`: one line per epoch per split, at most one per `interval` seconds per split when epochs are
  fast (the first and last epoch always), for logs that are read later: CI, `nohup`, a file. `auto`
  (the default) is `live` on a terminal and `plain` otherwise;
- `json` (`--json-logs`): one JSON object per event on stdout and nothing else (see README: Logs).
`quiet` shows no progress in any mode (the final tables, or with `json` the `end` event, only).

Part of the CLI layer (it prints); the experiment only calls the Observer hooks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from kexp.experiment import Observer, Result
from kexp.layout import NOT_METRICS, Metrics
from kexp.report import view
from kexp.report.numbers import format_number


def _compact(logs: dict, limit: int = 4) -> str:
    """One epoch's logs for the progress line: the loss and every output's metrics (an output without
    a metric shows its own loss), training then validation; `learning_rate` is not a metric."""
    train = [k for k in logs if not k.startswith("val_") and k not in NOT_METRICS and k != "epoch"]
    keys = [k for k in train if k == "loss"] + [k for k in train if not k.endswith("loss")]
    for key in train:  # `price_loss` of an output `price` that has no metric of its own
        if key.endswith("_loss") and not any(k.startswith(key.removesuffix("loss")) for k in keys):
            keys.append(key)
    keys = keys[:limit]
    keys += [f"val_{k}" for k in keys if f"val_{k}" in logs]
    return "  ".join(f"{k} {format_number(logs[k], decimals=3)}" for k in keys)


PLAIN_INTERVAL_S = 10.0  # plain logs: at most one line per split this often (first and last epoch always)


def _json_value(value):
    """Plain JSON (no NaN/Infinity, which strict parsers refuse): non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class Display(Observer):
    def __init__(self, console: Console, quiet: bool = False, mode: str = "auto",
                 interval: float = PLAIN_INTERVAL_S, clock=time.monotonic):
        if mode not in ("auto", "live", "plain", "json"):
            raise ValueError(f"mode must be auto, live, plain or json; got {mode!r}")
        self.console = console
        self.quiet = quiet
        self.mode = ("live" if console.is_terminal else "plain") if mode == "auto" else mode
        self.interval, self.clock = interval, clock
        self.shown: dict[str, float] = {}  # plain: split id -> when its last line was printed
        self.pending: dict[str, str] = {}  # plain: split id -> its latest epoch line not printed yet
        self.progress = Progress(
            TextColumn("[bold]{task.description:>10}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[logs]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or self.mode != "live",
            transient=False,
        )
        self.tasks: dict[str, int] = {}  # split id -> progress task id
        self.totals: dict[str, int] = {}  # split id -> its epochs
        self.overall: int | None = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    # ------------------------------------------------------------------ plain lines and JSON events
    def line(self, text: str) -> None:
        """One plain line, never wrapped or styled (a log file keeps it whole)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def event(self, kind: str, always: bool = False, **fields) -> None:
        """json mode: one JSON object on its own line, flushed (a reader sees it at once)."""
        if self.mode != "json" or (self.quiet and not always):
            return
        self.console.file.write(json.dumps(_json_value({"event": kind, **fields})) + "\n")
        self.console.file.flush()

    def flush(self, split_id: str | None = None) -> None:
        """plain: print the latest epoch line that the throttle held back (of one split, or all)."""
        for key in [split_id] if split_id is not None else list(self.pending):
            text = self.pending.pop(key, None)
            if text is not None:
                self.line(text)

    # ------------------------------------------------------------------ the hooks
    def start(self, run_path: Path, splits: list[str], epochs: int) -> None:
        self.event("start", run=run_path, splits=splits, epochs=epochs)
        if not self.quiet and self.mode != "json":
            self.progress.console.print(f"run folder: {run_path}", highlight=False, soft_wrap=True)
        if len(splits) > 1:
            self.overall = self.progress.add_task("folds", total=len(splits), logs="")

    def split_start(self, split_id: str, epochs: int) -> None:
        self.tasks[split_id] = self.progress.add_task(split_id, total=epochs, logs="")
        self.totals[split_id] = epochs
        self.event("split_start", split=split_id, epochs=epochs)

    def epoch_end(self, split_id: str, epoch: int, logs: dict) -> None:
        task = self.tasks.get(split_id)
        if task is None:
            return
        self.progress.update(task, completed=epoch, logs=_compact(logs))
        total = self.totals.get(split_id)
        self.event("epoch", split=split_id, epoch=epoch, epochs=total, logs=logs)
        if self.mode != "plain" or self.quiet:
            return
        self.pending[split_id] = f"{split_id} epoch {epoch}/{total}  {_compact(logs)}".rstrip()
        now = self.clock()
        last = self.shown.get(split_id)
        if last is None or epoch >= (total or 0) or now - last >= self.interval:
            self.shown[split_id] = now
            self.flush(split_id)

    def split_end(self, split_id: str, result: dict) -> None:
        task = self.tasks.get(split_id)
        if task is not None:
            self.progress.update(task, completed=self.totals[split_id], visible=False)
        if self.overall is not None:
            self.progress.advance(self.overall)
        self.event("split_end", split=split_id, metrics=result)
        if self.mode == "plain" and not self.quiet:
            self.flush(split_id)
            self.line(f"{split_id} done: {_split_summary(result)}".rstrip(": "))

    def final_start(self, epochs: int) -> None:
        self.event("final_start", epochs=epochs)
        if self.mode == "plain" and not self.quiet:
            self.flush()  # the hold-out's last epoch, if early stopping ended it between two lines
            self.line(f"final model: training {epochs} epoch{'s' * (epochs != 1)} on all training data")

    def note(self, text: str) -> None:
        self.event("note", text=text)
        if not self.quiet and self.mode != "json":
            self.progress.console.print(text, highlight=False, soft_wrap=self.mode == "plain")

    # ------------------------------------------------------------------ the end
    def report(self, result: Result) -> None:
        """The end of a `train`/`kfold` run: its tables (json: the `end` event with the metrics)."""
        self.flush()
        if self.mode == "json":
            self.event("end", always=True, run=result.path, status=result.status,
                       already_complete=result.already_complete, metrics=result.metrics)
        elif result.already_complete:
            self.line(f"{result.path}: the run is already complete; nothing to resume (no file was changed)")
        else:
            self.console.print(render_result(result.metrics, result.path))


def _split_summary(result: dict) -> str:
    """A finished fold in words: epochs run, best epoch, its validation scores."""
    best = ((result.get("validation") or {}).get("best")) or {}
    scores = "  ".join(f"val_{k} {format_number(v, decimals=3)}" for k, v in list(best.items())[:4]
                       if isinstance(v, (int, float)))
    parts = [f"{result['epochs_run']} epochs" if result.get("epochs_run") is not None else "",
             f"best epoch {result['best_epoch']}" if result.get("best_epoch") is not None else "", scores]
    return ", ".join(p for p in parts if p)


def render_result(metrics: dict | Metrics, path: Path) -> Group:
    """The end of a `train`/`kfold` run: the metrics as `kexp show` shows them (kexp.report.view, one
    renderer for both), then why training stopped early, if it did, and the run folder."""
    from rich.rule import Rule

    m = metrics if isinstance(metrics, Metrics) else Metrics.from_dict(metrics)
    parts: list = []
    for title, renderable in view.sections(m):
        parts += [Rule(title, align="left"), renderable]
    if m.stop_reason:
        parts.append(Text(f"stopped: {m.stop_reason}"))
    parts.append(Text(f"run folder: {path}"))
    return Group(*parts)


class SweepDisplay(Display):
    """`kexp sweep`: one line as each trial starts and ends, and a bar per running task (`t003/r0-f1`:
    trials run side by side when there are several workers); plain: those lines and the epoch lines;
    json: `trial_start`/`trial_end`/`rung_start` events besides the runs' own."""

    def split_end(self, split_id: str, result: dict) -> None:
        task = self.tasks.pop(split_id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.event("split_end", split=split_id, metrics=result)
        if self.mode == "plain" and not self.quiet:
            self.flush(split_id)

    def note(self, text: str) -> None:
        if self.mode != "json":
            super().note(text)

    def rung_start(self, rung: int, rungs: int, epochs: int, trials: int) -> None:
        self.event("rung_start", rung=rung + 1, rungs=rungs, epochs=epochs, trials=trials)
        self.note(f"rung {rung + 1}/{rungs}: {trials} trial{'s' * (trials != 1)} to {epochs} epochs")

    def trial_start(self, trial: dict, index: int, total: int) -> None:
        self.event("trial_start", trial=trial["id"], index=index + 1, total=total, params=trial["params"])
        params = "  ".join(f"{key}={value!r}" for key, value in trial["params"].items())
        self.note(f"trial {trial['id']} ({index + 1}/{total}): {params}")

    def report_sweep(self, path: Path, status: str) -> None:
        """The end of a sweep: its leaderboard (json: the `end` event with the sweep folder)."""
        self.flush()
        if self.mode == "json":
            self.event("end", always=True, sweep=path, status=status)
        else:
            from kexp import report

            self.console.print(report.show(path))

    def trial_end(self, trial: dict) -> None:
        self.event("trial_end", trial=trial["id"], status=trial.get("status"), objective=trial.get("objective"),
                   objective_std=trial.get("objective_std"), best_epoch=trial.get("best_epoch"),
                   error=trial.get("error"))
        if trial.get("status") != "completed":
            self.note(f"trial {trial['id']}: {trial.get('status')}: {trial.get('error', '')}".rstrip(": "))
            return
        std = trial.get("objective_std")
        score = format_number(trial["objective"]) + (f" ± {format_number(std)}" if std is not None else "")
        self.note(f"trial {trial['id']}: objective {score} (best epoch {trial.get('best_epoch')})")
