"""Reports on run folders: the `kexp compare` table and the `kexp show` page.

Quiet library code: functions return rows, Rich renderables and strings; the CLI prints them. Run
folders are read through `kexp.runs` and `kexp.layout` only. Nothing here imports TensorFlow, numpy
or matplotlib (`--plot` imports `kexp.plots` in the CLI), so `kexp compare` starts fast.

    rows.py     one run folder as a row: the built-in columns, its config flattened, its metrics
    query.py    the comparison and its query language (--where, --sort, --last, --columns)
    table.py    the compare table: a layout engine that fits the console's width
    writers.py  markdown, CSV and JSON, and `render`, which picks the format
    view.py     the one renderer of a run's metrics (the end of `train`/`kfold`, and `show`)
    show.py     the show page (of a run, or of a sweep folder: sweep.py)
    sweep.py    a sweep folder's leaderboard (`kexp show SWEEP`), read from its sweep.json
    numbers.py  the one number formatter, finite-number test and mean ± std
"""

from kexp.report.numbers import format_duration, format_number
from kexp.report.query import Comparison, compare, differing_keys, select, sort_rows
from kexp.report.rows import COLUMNS, DEFAULT_COLUMNS, RunRow, flatten, make_row, run_label
from kexp.report.show import show
from kexp.report.sweep import leaderboard, read_leaderboard
from kexp.report.table import run_labels, table
from kexp.report.writers import FORMATS, markdown, render, to_csv, to_json

__all__ = ["COLUMNS", "DEFAULT_COLUMNS", "FORMATS", "Comparison", "RunRow", "compare", "differing_keys", "flatten",
           "format_duration", "format_number", "leaderboard", "make_row", "markdown", "read_leaderboard", "render",
           "run_label", "run_labels", "select", "show", "sort_rows", "table", "to_csv", "to_json"]
