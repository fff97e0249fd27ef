"""The terminal side of `train` and `kfold`: a compact Rich progress display and the final tables.

Part of the CLI layer (it prints); the experiment only calls the Observer hooks.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from kexp.experiment import Observer, Result


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def _compact(logs: dict, limit: int = 4) -> str:
    keys = [k for k in logs if not k.startswith("val_")][:2] + [k for k in logs if k.startswith("val_")][:2]
    return "  ".join(f"{k} {fmt(logs[k], 3)}" for k in keys[:limit])


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
        self.tasks: dict[str, int] = {}
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

    def epoch_end(self, split_id: str, epoch: int, logs: dict) -> None:
        task = self.tasks.get(split_id)
        if task is not None:
            self.progress.update(task, completed=epoch, logs=_compact(logs))

    def split_end(self, split_id: str, result: dict) -> None:
        task = self.tasks.get(split_id)
        if task is not None:
            self.progress.update(task, completed=self.progress.tasks[task].total, visible=False)
        if self.overall is not None:
            self.progress.advance(self.overall)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text, highlight=False)

    # ------------------------------------------------------------------ the end
    def report(self, result: Result) -> None:
        self.console.print(render_result(result.metrics, result.path))


def render_result(m: dict, path: Path) -> Group:
    parts = []
    folds = m.get("folds")
    main = m.get("main_metric", "loss")
    best = m.get("best_epoch")
    if folds:
        table = Table(title=f"K-fold: {len(folds)} folds", title_justify="left")
        for col in ("fold", "epochs", "best epoch", f"val {main} (final)", f"val {main} (best)"):
            table.add_column(col, justify="right")
        for f in folds:
            table.add_row(f["id"], str(f.get("epochs_run")), str(f.get("best_epoch")),
                          fmt(f["validation"]["final"].get(main)), fmt(f["validation"]["best"].get(main)))
        v = m.get("validation", {})
        table.add_row("mean ± std", "", "",
                      f"{fmt(v.get('final', {}).get(main))} ± {fmt(v.get('final_std', {}).get(main), 3)}",
                      f"{fmt(v.get('best', {}).get(main))} ± {fmt(v.get('best_std', {}).get(main), 3)}",
                      style="bold")
        parts.append(table)
        curve = m.get("curve") or {}
        parts.append(f"best epoch of the mean {curve.get('metric')} curve"
                     f"{' (smoothed)' if curve.get('smoothed') else ''}: {best}")
    else:
        table = Table(title="Results", title_justify="left")
        table.add_column("metric")
        table.add_column(f"final (epoch {m.get('epochs_run')})", justify="right")
        table.add_column(f"best (epoch {best})", justify="right")
        table.add_column("test", justify="right")
        v, t = m.get("validation", {}), m.get("test") or {}
        train = m.get("train", {})
        for key in dict.fromkeys([*train.get("final", {}), *v.get("final", {})]):
            table.add_row(key, fmt(v.get("final", {}).get(key)), fmt(v.get("best", {}).get(key)), fmt(t.get(key)))
        parts.append(table)
    if folds and m.get("test"):
        final = m.get("final_model") or {}
        parts.append(f"final model ({final.get('epochs')} epochs on {final.get('n_train')} samples), test: "
                     + ", ".join(f"{k} {fmt(v)}" for k, v in m["test"].items()))
    baseline = m.get("baseline") or {}
    if baseline.get("value") is not None:
        margin = baseline.get("margin")
        line = (f"baseline ({baseline.get('metric')}): {fmt(baseline['value'])}, model: "
                f"{fmt(baseline.get('model'))}, margin: {fmt(margin)}")
        if baseline.get("beats") is False:
            line = f"[bold red]warning: the model does not beat the common-sense baseline.[/] {line}"
        parts.append(line)
    sentence = (m.get("diagnostics") or {}).get("sentence")
    if sentence:
        parts.append(sentence)
    if m.get("stop_reason"):
        parts.append(f"stopped: {m['stop_reason']}")
    parts.append(f"run folder: {path}")
    return Group(*parts)
