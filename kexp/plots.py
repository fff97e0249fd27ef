"""Learning-curve plots of run folders, and a sweep folder's plots (matplotlib, Agg backend, no display
needed).

matplotlib and numpy are imported inside the functions, so `import kexp.plots` costs nothing. Run
folders are read and written through `kexp.runs` only. `learning_curves` and `sweep_plots` never
raise: plotting can never fail a run or a sweep.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kexp import layout, runs
from kexp.errors import RunError, close_matches
from kexp.report.numbers import format_number, mean_std, number
from kexp.report.sweep import objective, param_text, params_text, ranked, varying_params

MAX_LEGEND = 20  # a comparison of more runs than this lists the first ones only
NOT_METRICS = layout.NOT_METRICS | {"epoch"}  # history.csv columns that are no metric's curve
_ALIASES = {"acc": "accuracy", "accuracy": "acc"}  # Keras logs `acc` when compiled as "acc"


class PlotError(RunError):
    """A `--plot` metric that no run has a curve of: a usage error."""

    exit_code = 2


@dataclass
class Curves:
    """Per-epoch curves of one run: column -> mean values (K-fold: over folds), and std for K-fold."""

    epochs: list[int] = field(default_factory=list)
    mean: dict[str, list[float]] = field(default_factory=dict)
    std: dict[str, list[float]] = field(default_factory=dict)
    n_folds: int = 0


def read_curves(record: runs.RunRecord) -> Curves:
    """The run's history: hold-out `history.csv`, or for K-fold the mean and std (ddof=0) over the
    folds' `history.csv`, epoch by epoch up to the shortest fold (falling back to metrics.json's
    `curves` means). Missing or unreadable files give empty curves."""
    metrics = record.metrics or layout.Metrics()
    histories = [h for h in (_history(p) for p in _fold_history_paths(record)) if h]
    if histories:
        return _fold_mean(histories)
    history = _history(record.path / layout.HISTORY)
    if history:
        curves = Curves(mean={k: v for k, v in history.items() if k != "epoch"})
        length = max((len(v) for v in curves.mean.values()), default=0)
        epochs = history.get("epoch") or []
        curves.epochs = [int(e) for e in epochs if number(e) is not None] if len(epochs) == length else []
        curves.epochs = curves.epochs or list(range(1, length + 1))
        return curves
    means = metrics.curves
    if means:
        curves = Curves(mean={k: [_num(x) for x in v] for k, v in means.items() if isinstance(v, list)})
        length = max((len(v) for v in curves.mean.values()), default=0)
        curves.epochs = list(range(1, length + 1))
        return curves
    return Curves()


def _num(value) -> float:
    """A curve's point: NaN where there is no number (matplotlib leaves a gap)."""
    value = number(value)
    return math.nan if value is None else float(value)


def _history(path: Path) -> dict[str, list[float]]:
    try:
        return runs.read_history(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _fold_history_paths(record: runs.RunRecord) -> list[Path]:
    folds_dir = record.path / layout.FOLDS_DIR
    ids = [f.id for f in record.metrics.fold_list()] if record.metrics is not None else []
    paths = [record.path / layout.split_history(str(i), kfold=True) for i in ids if i]
    if not paths and folds_dir.is_dir():
        paths = sorted(folds_dir.glob(f"*/{layout.HISTORY}"))
    return [p for p in paths if p.is_file()]


def _fold_mean(histories: list[dict[str, list[float]]]) -> Curves:
    """Epoch by epoch, the mean and std over folds of every column (kexp.report.numbers.mean_std)."""
    columns = [c for c in histories[0] if c != "epoch" and all(c in h for h in histories)]
    length = min(len(h[c]) for h in histories for c in columns) if columns else 0
    curves = Curves(epochs=list(range(1, length + 1)), n_folds=len(histories))
    for column in columns:
        points = [mean_std(h[column][i] for h in histories) for i in range(length)]
        curves.mean[column] = [_num(mean) for mean, _ in points]
        curves.std[column] = [_num(std) for _, std in points]
    return curves


def _file_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", metric) or "metric"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _labelled(figure, axes, xlabel: str, ylabel: str, title: str) -> bytes:
    """The figure as PNG bytes, its axes labelled and titled, with a grid and a legend."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    return _png(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- one run
def metric_names(columns) -> list[str]:
    """The metrics that history columns have curves of, without `val_`, in column order: `loss`,
    `price_loss`, `price_mae`, `band_accuracy`... (learning_rate is not a metric)."""
    names = (c.removeprefix("val_") for c in columns)
    return list(dict.fromkeys(n for n in names if n and n not in NOT_METRICS))


def learning_curves(run_path: str | Path) -> list[Path]:
    """Write `plots/<metric>.png` into a run folder for every metric in its history, loss first
    (training vs validation per epoch; with several outputs, each output's loss and metrics); K-fold
    runs show the mean over folds with a ±std band, and the smoothed curve when metrics.json has
    `curve.smoothed`. Returns the files written; never raises."""
    written: list[Path] = []
    try:
        record = runs.read_run(run_path)
        curves = read_curves(record)
        if not curves.mean:
            return written
        metrics = record.metrics or layout.Metrics()
        names = metric_names(curves.mean)
        run = runs.Run(path=Path(run_path), command=record.command or "")
        for metric in sorted(names, key=lambda name: name != "loss"):
            _save(written, run, f"{_file_name(metric)}.png", _learning_figure, curves, metric, metrics)
    except Exception:
        pass
    return written


def _save(written: list[Path], run: runs.Run, name: str, draw, *args) -> None:
    """Draw one figure and write it as plots/<name>, added to `written`; nothing when there is nothing
    to draw or drawing or writing fails (plots never fail a run)."""
    try:
        data = draw(*args)
        if data is not None:
            target = run.file(layout.PLOTS_DIR, name)
            runs.atomic_write(target, data)
            written.append(target)
    except Exception:
        pass


def _learning_figure(curves: Curves, metric: str, metrics: layout.Metrics) -> bytes | None:
    train, val = curves.mean.get(metric), curves.mean.get(f"val_{metric}")
    if not train and not val:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        kfold = curves.n_folds > 0
        for values, label, style, color in ((train, "training", "o-", "tab:blue"),
                                            (val, "validation", "-", "tab:orange")):
            if not values:
                continue
            epochs = curves.epochs[: len(values)]
            name = f"{label} {metric}" + (f" (mean of {curves.n_folds} folds)" if kfold else "")
            axes.plot(epochs, values[: len(epochs)], style, color=color, label=name,
                      markersize=3 if len(epochs) <= 60 else 0)
            std = curves.std.get(metric if values is train else f"val_{metric}")
            if std:
                low = [m - s for m, s in zip(values, std)]
                high = [m + s for m, s in zip(values, std)]
                axes.fill_between(epochs, low[: len(epochs)], high[: len(epochs)], color=color, alpha=0.2,
                                  label=f"{label} ± std")
        curve = metrics.curve
        if curve is not None and isinstance(curve.smoothed, list) and curve.metric == f"val_{metric}":
            skip = int(curve.skip or 0)
            smoothed, factor = curve.smoothed, curve.factor
            axes.plot(range(skip + 1, skip + 1 + len(smoothed)), [_num(v) for v in smoothed], "--",
                      color="tab:red", label=f"smoothed validation (EMA {factor}, first {skip} skipped)")
        best = metrics.best_epoch
        if isinstance(best, int) and best > 0:
            axes.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best}")
        return _labelled(figure, axes, "epoch", metric, f"training and validation {metric}")
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------- several runs
def plot_metric(records: Sequence[runs.RunRecord], metric: str) -> str:
    """The metric that `--plot METRIC` names, as the runs' histories call it (without `val_`):
    `val_acc` -> `accuracy`, `mae` -> `price_mae` when only the output `price` has one. Raises
    PlotError (with the close names) when no run has its curve."""
    return _resolve([read_curves(record) for record in records], metric)


def _resolve(all_curves: Sequence[Curves], metric: str) -> str:
    columns = list(dict.fromkeys(c for curves in all_curves for c in curves.mean))
    names = metric_names(columns)
    wanted = metric.strip().removeprefix("val_")
    for name in (wanted, _ALIASES.get(wanted)):
        if name in names:
            return name
    suffixed = [n for n in names
                if n.endswith(f"_{wanted}") or _ALIASES.get(wanted) and n.endswith(f"_{_ALIASES[wanted]}")]
    if len(suffixed) == 1:
        return suffixed[0]
    if len(suffixed) > 1:
        raise PlotError(f"--plot {metric}: several outputs have it; choose one of: {', '.join(suffixed)}")
    found = sorted(c for c in columns if c.startswith("val_") and c.removeprefix("val_") in names)
    raise PlotError(f"--plot {metric}: none of the {len(all_curves)} runs has a val_{wanted} curve; found: "
                    f"{', '.join(found) or 'no curves'}{close_matches(wanted, names)}")


def compare_plot(records: Sequence[runs.RunRecord], metric: str, out_path: str | Path, *,
                 labels: Sequence[str] | None = None) -> Path:
    """One PNG overlaying a metric's curves of several runs: validation solid, training dashed in the
    same colour (K-fold: the means over folds, with a faint ±std band around validation). `metric` is
    resolved by `plot_metric` (`val_acc` works). Runs without the curve are left out; raises PlotError
    when none has it."""
    all_curves = [read_curves(record) for record in records]
    name = _resolve(all_curves, metric)
    column = f"val_{name}"
    labels = list(labels) if labels is not None else [r.name for r in records]
    found: list[tuple[str, Curves]] = []
    for curves, label in zip(all_curves, labels):
        if curves.mean.get(column) or curves.mean.get(name):
            found.append((label, curves))
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    try:
        for index, (label, curves) in enumerate(found):
            color = None
            for key, style in ((column, "-"), (name, "--")):
                values = curves.mean.get(key)
                if not values:
                    continue
                epochs = curves.epochs[: len(values)]
                shown = label if index < MAX_LEGEND and (style == "-" or not curves.mean.get(column)) else None
                line, = axes.plot(epochs, values[: len(epochs)], style, label=shown,
                                  linewidth=1.2 if style == "-" else 0.9,
                                  color=color)
                color = line.get_color()
                std = curves.std.get(key)
                if std and style == "-":
                    axes.fill_between(epochs, [m - s for m, s in zip(values, std)][: len(epochs)],
                                      [m + s for m, s in zip(values, std)][: len(epochs)], color=color, alpha=0.12)
        title = f"{name}: validation (solid), training (dashed) of {len(found)} run{'s' if len(found) != 1 else ''}"
        if len(found) > MAX_LEGEND:
            title += f" (legend: first {MAX_LEGEND})"
        data = _labelled(figure, axes, "epoch", name, title)
    finally:
        plt.close(figure)
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(out_path, data)
    except OSError as exc:
        raise RunError(f"{out_path}: cannot write the plot: {exc.strerror or exc}") from None
    return out_path


# --------------------------------------------------------------------------- a sweep
TOP_TRIALS = 5  # the sweep's learning-curve plot overlays this many of the best trials


def sweep_plots(sweep_path: str | Path) -> list[Path]:
    """Write into <sweep>/plots/: `objective-<key>.png`, the objective against each parameter that
    varies (one dot per trial with its ± std; numbers on a numeric axis, a log axis where the values
    span two decades or more; other values as categories; the best trial as a star), and
    `top-trials.png`, the objective's validation curves of the best TOP_TRIALS trials overlaid (K-fold:
    the mean over folds; several seeds: the mean over them). Reads sweep.json through
    kexp.layout.read_sweep. Returns the files written; never raises (a damaged sweep gives fewer)."""
    written: list[Path] = []
    try:
        path = Path(sweep_path)
        sweep = layout.read_sweep(path)
        if sweep is None:
            return written
        metric, mode = objective(sweep)
        entries = [e for e in ranked(sweep, mode) if e.rank is not None]
        if not entries:
            return written
        run = runs.Run(path=path, command="sweep")
        for key in varying_params([e.trial for e in entries]):
            _save(written, run, f"objective-{_file_name(key)}.png", _objective_figure, sweep, entries, key, metric,
                  mode)
        _save(written, run, "top-trials.png", _top_figure, path, entries[:TOP_TRIALS], metric, mode)
    except Exception:
        pass
    return written


def _objective_figure(sweep: layout.Sweep, entries: list, key: str, metric: str, mode: str) -> bytes | None:
    points = [(e.trial.params[key], e.trial.objective, number(e.trial.objective_std), e.best)
              for e in entries if key in (e.trial.params or {})]
    if not points:
        return None
    numeric = all(number(x) is not None for x, *_ in points)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        if numeric:
            xs = [float(x) for x, *_ in points]
            spec = (sweep.space or {}).get(key)
            log = (isinstance(spec, dict) and bool(spec.get("log"))) or (min(xs) > 0 and max(xs) >= 100 * min(xs))
            if log and min(xs) > 0:
                axes.set_xscale("log")
        else:
            texts = [param_text(x) for x, *_ in points]
            spec = (sweep.space or {}).get(key)
            choices = spec.get("values") if isinstance(spec, dict) else spec  # {"values": [...]}, or a list
            order = [param_text(c) for c in choices] if isinstance(choices, list) else []
            categories = list(dict.fromkeys([t for t in order if t in texts] + texts))
            xs = [categories.index(t) for t in texts]
            axes.set_xticks(range(len(categories)))
            axes.set_xticklabels([c if len(c) <= 30 else c[:27] + "..." for c in categories],
                                 rotation=20 if max(len(c) for c in categories) > 8 else 0, ha="right"
                                 if max(len(c) for c in categories) > 8 else "center", fontsize="small")
            axes.set_xlim(-0.5, len(categories) - 0.5)
        ys = [float(y) for _, y, _, _ in points]
        errors = [s if s is not None else 0.0 for _, _, s, _ in points]
        axes.errorbar(xs, ys, yerr=errors if any(errors) else None, fmt="o", color="tab:blue", alpha=0.7,
                      ecolor="tab:gray", capsize=3, label="trial (± std)" if any(errors) else "trial")
        best = [(x, y) for x, (_, y, _, is_best) in zip(xs, points) if is_best]
        if best:
            axes.plot([best[0][0]], [float(best[0][1])], "*", color="tab:red", markersize=14, label="best trial")
        return _labelled(figure, axes, key, f"{metric} ({'lower' if mode == 'min' else 'higher'} is better)",
                         f"{metric} against {key} ({len(points)} trials)")
    finally:
        plt.close(figure)


def _trial_curve(sweep_path: Path, trial: layout.Trial, metric: str) -> list[float]:
    """The trial's validation curve of `metric`: its run's (K-fold: the mean over folds), or with several
    seeds the mean over its runs, epoch by epoch up to the shortest."""
    column = metric if metric.startswith("val_") else f"val_{metric}"
    curves = []
    for folder in trial.runs or []:
        if isinstance(folder, str):
            values = read_curves(runs.read_run(sweep_path / folder)).mean.get(column)
            if values:
                curves.append(values)
    length = min((len(c) for c in curves), default=0)
    return [_num(mean_std(c[i] for c in curves)[0]) for i in range(length)]


def _top_figure(sweep_path: Path, entries: list, metric: str, mode: str) -> bytes | None:
    found = [(e, curve) for e in entries if (curve := _trial_curve(sweep_path, e.trial, metric))]
    if not found:
        return None
    varying = varying_params([e.trial for e in entries])
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    try:
        for entry, curve in found:
            trial = entry.trial
            params = params_text(trial.params, varying)
            label = f"#{entry.rank} {trial.id}: {format_number(trial.objective)}" + (f" ({params})" if params else "")
            epochs = list(range(1, len(curve) + 1))
            line, = axes.plot(epochs, curve, "-", linewidth=2.0 if entry.best else 1.2,
                              label=label if len(label) <= 80 else label[:77] + "...")
            best = number(trial.best_epoch)
            if best is not None and 1 <= best <= len(curve):
                axes.plot([best], [curve[int(best) - 1]], "o", color=line.get_color(), markersize=5)
        return _labelled(figure, axes, "epoch", metric,
                         f"{metric} of the best {len(found)} trials ({mode}; dots: each one's best epoch)")
    finally:
        plt.close(figure)
