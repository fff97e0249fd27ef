"""The terminal side of `train` and `kfold`: a compact Rich progress display and the final tables.

Part of the CLI layer (it prints); the experiment only calls the Observer hooks.
"""

from __future__ import annotations

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


class Display(Observer):
    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description:>10}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[logs]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
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

    def start(self, run_path: Path, splits: list[str], epochs: int) -> None:
        if not self.quiet:
            self.progress.console.print(f"run folder: {run_path}", highlight=False)
        if len(splits) > 1:
            self.overall = self.progress.add_task("folds", total=len(splits), logs="")

    def split_start(self, split_id: str, epochs: int) -> None:
        self.tasks[split_id] = self.progress.add_task(split_id, total=epochs, logs="")
        self.totals[split_id] = epochs

    def epoch_end(self, split_id: str, epoch: int, logs: dict) -> None:
        task = self.tasks.get(split_id)
        if task is not None:
            self.progress.update(task, completed=epoch, logs=_compact(logs))

    def split_end(self, split_id: str, result: dict) -> None:
        task = self.tasks.get(split_id)
        if task is not None:
            self.progress.update(task, completed=self.totals[split_id], visible=False)
        if self.overall is not None:
            self.progress.advance(self.overall)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text, highlight=False)

    # ------------------------------------------------------------------ the end
    def report(self, result: Result) -> None:
        self.console.print(render_result(result.metrics, result.path))


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
    trials run side by side when there are several workers)."""

    def split_end(self, split_id: str, result: dict) -> None:
        task = self.tasks.pop(split_id, None)
        if task is not None:
            self.progress.remove_task(task)

    def rung_start(self, rung: int, rungs: int, epochs: int, trials: int) -> None:
        self.note(f"rung {rung + 1}/{rungs}: {trials} trial{'s' * (trials != 1)} to {epochs} epochs")

    def trial_start(self, trial: dict, index: int, total: int) -> None:
        params = "  ".join(f"{key}={value!r}" for key, value in trial["params"].items())
        self.note(f"trial {trial['id']} ({index + 1}/{total}): {params}")

    def trial_end(self, trial: dict) -> None:
        if trial.get("status") != "completed":
            self.note(f"trial {trial['id']}: {trial.get('status')}: {trial.get('error', '')}".rstrip(": "))
            return
        std = trial.get("objective_std")
        score = format_number(trial["objective"]) + (f" ± {format_number(std)}" if std is not None else "")
        self.note(f"trial {trial['id']}: objective {score} (best epoch {trial.get('best_epoch')})")
