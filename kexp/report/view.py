"""The one renderer of a run's metrics: what the end of `kexp train` / `kexp kfold` prints and what
`kexp show` shows, so that the two always agree. Rich renderables from a kexp.layout.Metrics.

Sections, each a (title, renderable) pair: `metrics` (every output's metrics at the best and the last
epoch, training at the last, test; K-fold: mean ± std over folds), `folds` (K-fold: each fold's main
metrics at its last and its own best epoch, per-fold detail only), `baseline` and `diagnostics`.
"""

from __future__ import annotations

from typing import Any

from kexp.layout import Baseline, FoldMetrics, Metrics
from kexp.report.numbers import format_duration, format_number, number
from kexp.report.rows import scores

DECIMALS = 4  # metric values: 0.1250, 2.4000 (scientific below 0.001 and from 10,000)
STD_DECIMALS = 3


def value_text(value: Any, std: Any = None) -> str:
    """A metric value, and its K-fold std when there is one: `0.4000 ± 0.177`."""
    value, std = number(value), number(std)
    text = format_number(value, decimals=DECIMALS)
    if value is not None and std is not None:
        text += f" ± {format_number(float(std), decimals=STD_DECIMALS)}"
    return text


def main_metrics(m: Metrics) -> list[str]:
    """Every output's main metric, the first output's first."""
    names = [output.main_metric for _, output in m.output_list()]
    return [n for n in names if n] or [m.main_metric or "loss"]


def sections(m: Metrics) -> list[tuple[str, Any]]:
    """The rendered metrics, section by section (empty sections left out)."""
    from rich.console import Group
    from rich.text import Text

    out: list[tuple[str, Any]] = []
    table = metrics_table(m)
    if table is not None:
        note = kfold_note(m)
        out.append(("metrics", Group(Text(note), table) if note else table))
    folds = m.fold_list()
    if folds:
        out.append((f"folds ({len(folds)}): validation per fold", folds_table(folds, main_metrics(m))))
    baselines = m.baseline_list()
    if baselines:
        out.append(("baseline" if len(baselines) == 1 else f"baselines ({len(baselines)} outputs)",
                    baselines_text(baselines)))
    sentence = m.diagnostics.sentence if m.diagnostics is not None else None
    if sentence:
        out.append(("diagnostics", Text(str(sentence))))
    return out


def kfold_note(m: Metrics) -> str | None:
    """K-fold: what the numbers are (mean ± std over folds) and which epoch `best` is."""
    n = len(m.fold_list())
    if not n and not (m.validation is not None and m.validation.best_std):
        return None
    over = f"mean ± std over {n} folds" if n else "mean ± std over the folds"
    if m.validation is not None and m.validation.best_epoch_source == "mean_curve":
        curve = m.curve
        name = (curve.metric if curve is not None else None) or m.monitor
        smoothed = " (smoothed)" if curve is not None and curve.smoothed else ""
        return f"{over}; best at epoch {m.best_epoch}: best of the mean {name} curve{smoothed}"
    return f"{over}; best: mean of each fold's own best epoch (each fold's own best)"


def metrics_table(m: Metrics):
    """Every metric of every output (learning_rate is not one), at the best and the last epoch, in
    training at the last, and on test; the main metrics first, in bold. None when there is none."""
    from rich.table import Table

    sources = [(f"val@best\nepoch {format_number(number(m.best_epoch))}", "validation", "best"),
               (f"val@last\nepoch {format_number(number(m.epochs_run))}", "validation", "last"),
               ("train@last\nepoch", "train", "last"),
               ("test\n(final model)" if m.final_model is not None else "test", "test", None)]
    names: dict[str, None] = {}
    for _, part, which in sources:
        names.update(dict.fromkeys(scores(m, part, which)))
    if not names:
        return None
    mains = [k for k in main_metrics(m) if k in names]
    grid = Table(box=None, padding=(0, 2), pad_edge=False, header_style="bold")
    grid.add_column("metric", overflow="fold")
    for title, _, _ in sources:
        grid.add_column(title, justify="right", no_wrap=True)
    for name in dict.fromkeys([*mains, *names]):
        cells = [name]
        for _, part, which in sources:
            std = scores(m, part, f"{which}_std").get(name) if which else None
            cells.append(value_text(scores(m, part, which).get(name), std))
        grid.add_row(*cells, style="bold" if name in mains else None)
    if m.final_model is not None:
        grid.caption = (f"final model: retrained {format_number(number(m.final_model.epochs))} epochs on "
                        f"{format_number(number(m.final_model.n_train))} samples")
        grid.caption_justify = "left"
    return grid


def folds_table(folds: list[FoldMetrics], mains: list[str]):
    """Each fold: its epochs, its own best epoch, every output's main metric at its last and its own
    best epoch, then its sizes and time (left out where the console is too narrow for them)."""
    return _FoldsTable(folds, mains)


class _FoldsTable:
    def __init__(self, folds: list[FoldMetrics], mains: list[str]):
        self.folds, self.mains = folds, mains

    def __rich_console__(self, console, options):
        from rich.table import Table

        heads = ["fold", "epochs", "own best\nepoch", *(f"{main}\n{at}" for main in self.mains
                                                      for at in ("last", "own best")), "train", "val", "time"]
        rows = [self._cells(fold) for fold in self.folds]
        widths = [max(len(line) for text in [head, *(row[i] for row in rows)] for line in text.splitlines() or [""])
                  for i, head in enumerate(heads)]
        shown = len(heads) if sum(widths) + 2 * (len(heads) - 1) <= options.max_width else len(heads) - 3
        grid = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")  # columns 2 apart
        for index, head in enumerate(heads[:shown]):
            grid.add_column(head, justify="left" if index == 0 else "right", no_wrap=True)
        for row in rows:
            grid.add_row(*row[:shown])
        yield grid

    def _cells(self, fold: FoldMetrics) -> list[str]:
        validation = fold.validation
        cells = [str(fold.id or "?"), format_number(number(fold.epochs_run)), format_number(number(fold.best_epoch))]
        for main in self.mains:
            for which in ("last", "best"):
                values = getattr(validation, which, None) if validation is not None else None
                cells.append(value_text((values or {}).get(main)))
        return cells + [format_number(number(fold.n_train)), format_number(number(fold.n_val)),
                        format_duration(fold.duration_s)]


def baselines_text(baselines: list[Baseline]):
    """Every output's baseline in words: its score against the model's, then its scores in detail."""
    from rich.text import Text

    text = Text()
    several = len(baselines) > 1
    for index, baseline in enumerate(baselines):
        if index:
            text.append("\n")
        text.append_text(baseline_text(baseline, several))
    return text


def baseline_text(baseline: Baseline, named: bool = False):
    from rich.text import Text

    if baseline.error:
        return Text(f"baseline not computed: {baseline.error}")
    text = Text()
    name = f" {baseline.output}" if named and baseline.output else ""
    value, model = number(baseline.value), number(baseline.model)
    if value is not None:
        if baseline.beats is False:
            text.append("warning: ", style="bold red")
        text.append(f"baseline{name} ({baseline.metric or '?'}): {value_text(value)}")
        if model is not None:
            text.append(f", model: {value_text(model)}, margin: {value_text(baseline.margin)}")
            if baseline.beats is not None:
                text.append(": the model beats the baseline" if baseline.beats else
                            ": the model does NOT beat the baseline", style=None if baseline.beats else "bold red")
    for split, values in (("validation", baseline.validation), ("test", baseline.test)):
        if isinstance(values, dict):
            line = ", ".join(f"{k} {value_text(v)}" for k, v in values.items())
            if split == "test" and number(baseline.test_model) is not None:
                line += f"; model {value_text(baseline.test_model)}"
            text.append(f"\n  {split}{name}: {line}" if len(text) else f"{split}{name}: {line}")
    return text if len(text) else Text("no baseline")
