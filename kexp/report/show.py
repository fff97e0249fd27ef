"""`kexp show`: one run in full as a Rich renderable: status, metrics (kexp.report.view, the renderer
the end of a run uses too), folds, baseline, diagnostics, config, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp import runs
from kexp.errors import RunError
from kexp.layout import Metrics
from kexp.report import view
from kexp.report.numbers import format_duration, format_number, number
from kexp.report.rows import RunRow, make_row, resume_hint
from kexp.report.sweep import leaderboard
from kexp.report.table import STATUS_STYLES


def show(path: str | Path):
    """One run in full as a Rich renderable: status, metrics, folds, baseline, diagnostics, config,
    files; for a sweep folder, its leaderboard (kexp.report.sweep). Partial folders show what they
    have. RunError when `path` is neither."""
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    path = Path(path)
    if path.is_dir() and runs.is_sweep_folder(path):
        return leaderboard(path)
    if not path.is_dir() or not runs.is_run_folder(path):
        raise RunError(f"{path}: not a kexp run folder (it has no status.json)")
    record = runs.read_run(path)
    row = make_row(record)
    parts: list[Any] = [facts(row)]
    for title, renderable in view.sections(row.metrics):
        if title.startswith("metrics") and isinstance(row.metrics.partial, dict):
            title += " (of what finished)"
        parts += [Rule(title, align="left"), renderable]
    if record.config is not None:
        import yaml

        text = yaml.safe_dump(record.config, sort_keys=False, allow_unicode=True).rstrip()
        parts += [Rule("config (resolved)", align="left"), Text(text)]
    parts += [Rule(Text(f"files in {record.path}"), align="left"), Text(files_text(record.path))]
    if record.problems:
        parts += [Rule("problems", align="left"), Text("\n".join(record.problems), style="yellow")]
    return Group(*parts)


def facts(row: RunRow):
    """The run's facts, one per line: folder, status, command, times, host, epochs, outputs."""
    from rich.table import Table
    from rich.text import Text

    record, metrics = row.record, row.metrics
    status = record.status_data or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("run", Text(str(record.path)))
    grid.add_row("status", Text(row.fields["status"], style=STATUS_STYLES.get(row.fields["status"], "")))
    for label, value in (("command", row.fields["command"]), ("dataset", row.fields["dataset"]),
                         ("scheme", row.fields["scheme"]), ("started", status.get("started")),
                         ("ended", status.get("ended")), ("host", status.get("host")), ("pid", status.get("pid"))):
        if value is not None:
            grid.add_row(label, Text(str(value)))
    if row.fields["duration"] is not None:
        grid.add_row("duration", Text(format_duration(row.fields["duration"]) + _durations(metrics)))
    if status.get("error"):
        grid.add_row("error", Text(str(status["error"]), style="red"))
    if metrics.stop_reason:
        grid.add_row("stopped", Text(str(metrics.stop_reason)))
    if metrics.monitor:
        grid.add_row("monitor", Text(f"{metrics.monitor} ({metrics.mode or '?'})"))
    if row.fields["epochs"] is not None:
        epochs, best = format_number(row.fields["epochs"]), format_number(row.fields["best_epoch"])
        of_mean = metrics.validation is not None and metrics.validation.best_epoch_source == "mean_curve"
        source = " (of the mean curve over folds)" if of_mean else ""
        grid.add_row("epochs", Text(f"{epochs} run, best epoch {best}{source}"))
    partial = metrics.partial
    if isinstance(partial, dict):
        total = partial.get("folds_total")
        grid.add_row("finished", Text(f"{partial.get('folds_done')} of {total if total else '?'} folds"))
    sweep = record.path.parent.parent if row.fields.get("sweep") else None
    if sweep is not None:
        grid.add_row("sweep", Text(f"a trial of {sweep} (its leaderboard: kexp show {sweep})"))
    if resume_hint(row):
        grid.add_row("resume", Text(f"kexp sweep --resume {sweep}" if sweep is not None
                                    else f"kexp kfold --resume {record.path}"))
    outputs = metrics.output_list()
    if len(outputs) > 1:
        grid.add_row("outputs", Text(", ".join(f"{name} ({info.task or '?'}, main metric {info.main_metric or '?'})"
                                               for name, info in outputs)))
    return grid


def _durations(metrics: Metrics) -> str:
    durations = metrics.durations or {}
    parts = [f"{k.removesuffix('_s')} {format_duration(v)}" for k, v in durations.items() if k != "total_s"
             and number(v) is not None]
    return f" ({', '.join(parts)})" if parts else ""


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
