"""The terminal side of `train` and `kfold`: a compact Rich progress display and the final tables.

Part of the CLI layer (it prints); the experiment only calls the Observer hooks.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from kexp.diagnostics import NOT_METRICS
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
    """One epoch's logs for the progress line: the loss and every output's metrics (an output without
    a metric shows its own loss), training then validation; `learning_rate` is not a metric."""
    train = [k for k in logs if not k.startswith("val_") and k not in NOT_METRICS and k != "epoch"]
    keys = [k for k in train if k == "loss"] + [k for k in train if not k.endswith("loss")]
    for key in train:  # `price_loss` of an output `price` that has no metric of its own
        if key.endswith("_loss") and not any(k.startswith(key.removesuffix("loss")) for k in keys):
            keys.append(key)
    keys = keys[:limit]
    keys += [f"val_{k}" for k in keys if f"val_{k}" in logs]
    return "  ".join(f"{k} {fmt(logs[k], 3)}" for k in keys)


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


def _part(section: dict, which: str) -> dict:
    """`last`/`last_std` of a validation/train dict; format 1 (no `format` key) called them `final`."""
    value = section.get(which)
    if value is None and which.startswith("last"):
        value = section.get(which.replace("last", "final", 1))
    return value if isinstance(value, dict) else {}


def _main_metrics(m: dict) -> list[str]:
    """Every output's main metric, the first output's first."""
    outputs = m.get("outputs")
    names = [o.get("main_metric") for o in outputs.values() if isinstance(o, dict)] if isinstance(outputs, dict) else []
    return [n for n in names if n] or [m.get("main_metric") or "loss"]


def _metric_keys(mains: list[str], *sections: dict) -> list[str]:
    """The main metrics first, then every other metric, without non-metrics (`learning_rate`)."""
    keys = dict.fromkeys([*mains, *(k for section in sections for k in section)])
    return [k for k in keys if k not in NOT_METRICS and any(k in section for section in sections)]


def _mean_std(mean: dict, std: dict, key: str) -> str:
    if mean.get(key) is None:
        return "-"
    return f"{fmt(mean.get(key))} ± {fmt(std.get(key), 3)}"


def _kfold_tables(m: dict, mains: list[str]) -> list:
    folds = m.get("folds") or []
    best = m.get("best_epoch")
    table = Table(title=f"K-fold: {len(folds)} folds, validation per fold (each fold's own best epoch: "
                  "per-fold detail only)", title_justify="left")
    for col in ("fold", "epochs", "own best\nepoch"):
        table.add_column(col, justify="right")
    for main in mains:
        table.add_column(f"{main}\nlast", justify="right")
        table.add_column(f"{main}\nown best", justify="right")
    for f in folds:
        validation = f.get("validation") or {}
        cells = []
        for main in mains:
            cells += [fmt(_part(validation, "last").get(main)), fmt(_part(validation, "best").get(main))]
        table.add_row(str(f.get("id")), str(f.get("epochs_run")), str(f.get("best_epoch")), *cells)

    v = m.get("validation") or {}
    curve = m.get("curve") or {}
    if v.get("best_epoch_source") == "mean_curve":
        at_best = (f"at epoch {best}: best of the mean {curve.get('metric') or m.get('monitor')} curve"
                   f"{' (smoothed)' if curve.get('smoothed') else ''}")
    else:  # format 1: the mean of each fold's own best
        at_best = "mean of each fold's own best epoch"
    score = Table(title="K-fold score: mean ± std over folds", title_justify="left")
    score.add_column("val metric")
    score.add_column(at_best, justify="right")
    score.add_column(f"at the last epoch ({m.get('epochs_run')})", justify="right")
    last, last_std = _part(v, "last"), _part(v, "last_std")
    for key in _metric_keys(mains, v.get("best") or {}, last):
        score.add_row(key, _mean_std(v.get("best") or {}, v.get("best_std") or {}, key),
                      _mean_std(last, last_std, key), style="bold" if key in mains else None)
    return [table, score]


def _holdout_table(m: dict, mains: list[str]) -> Table:
    best = m.get("best_epoch")
    table = Table(title="Results", title_justify="left")
    table.add_column("metric")
    table.add_column(f"last (epoch {m.get('epochs_run')})", justify="right")
    table.add_column(f"best (epoch {best})", justify="right")
    table.add_column("test", justify="right")
    v, t, train = m.get("validation") or {}, m.get("test") or {}, m.get("train") or {}
    last, at_best = _part(v, "last"), v.get("best") or {}
    for key in _metric_keys(mains, _part(train, "last"), last):
        table.add_row(key, fmt(last.get(key)), fmt(at_best.get(key)), fmt(t.get(key)),
                      style="bold" if key in mains else None)
    return table


def _baseline_lines(m: dict) -> list[str]:
    baselines = m.get("baselines")
    if not isinstance(baselines, dict) or not baselines:
        baselines = {None: m.get("baseline")}
    lines = []
    for out, baseline in baselines.items():
        if not isinstance(baseline, dict) or baseline.get("value") is None:
            continue
        name = f" {out}" if len(baselines) > 1 else ""
        line = (f"baseline{name} ({baseline.get('metric')}): {fmt(baseline['value'])}, model: "
                f"{fmt(baseline.get('model'))}, margin: {fmt(baseline.get('margin'))}")
        if baseline.get("beats") is False:
            line = f"[bold red]warning: the model does not beat the common-sense baseline.[/] {line}"
        lines.append(line)
    return lines


def render_result(m: dict, path: Path) -> Group:
    """The end of a `train`/`kfold` run: every output's metrics; K-fold: the score at the mean curve's
    best epoch (mean ± std) beside the last-epoch mean, per-fold bests as per-fold detail only."""
    mains = _main_metrics(m)
    parts: list = []
    if m.get("folds"):
        parts += _kfold_tables(m, mains)
        if m.get("test"):
            final = m.get("final_model") or {}
            parts.append(f"final model ({final.get('epochs')} epochs on {final.get('n_train')} samples), test: "
                         + ", ".join(f"{k} {fmt(v)}" for k, v in m["test"].items()))
    else:
        parts.append(_holdout_table(m, mains))
    parts += _baseline_lines(m)
    sentence = (m.get("diagnostics") or {}).get("sentence")
    if sentence:
        parts.append(sentence)
    if m.get("stop_reason"):
        parts.append(f"stopped: {m['stop_reason']}")
    parts.append(f"run folder: {path}")
    return Group(*parts)
