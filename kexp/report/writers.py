"""`kexp compare` in the other formats: Markdown, CSV and JSON, and `render`, which picks one."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from kexp.errors import UsageError
from kexp.report.query import Comparison
from kexp.report.rows import COLUMNS
from kexp.report.table import format_cell, run_labels, table

FORMATS = ("table", "markdown", "csv", "json")

_NUMERIC_COLUMNS = ("epochs", "best_epoch", "val_best", "val_last", "test", "chance", "baseline", "margin",
                    "duration")


def markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured Markdown table of every column (nothing hidden)."""
    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    heads = [escape(COLUMNS[c].long if c in COLUMNS else c) for c in comparison.columns]
    labels = run_labels([r.record.name for r in comparison.rows])
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---:" if c in _NUMERIC_COLUMNS else "---" for c in comparison.columns) + "|"]
    for row, label in zip(comparison.rows, labels):
        cells = [label if c == "run" else format_cell(c, *row.value(c)) for c in comparison.columns]
        lines.append("| " + " | ".join(escape(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(comparison: Comparison) -> str:
    """CSV of the raw values: numbers in full precision, empty for null, true/false, `<col>_std`
    columns for K-fold stds."""
    values = comparison.values()
    fields = list(values[0]) if values else comparison.columns
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for item in values:
        writer.writerow([_csv_cell(item.get(k)) for k in fields])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_json(comparison: Comparison) -> str:
    """A JSON list with one object per run (numbers as numbers, null for missing)."""
    return json.dumps(comparison.values(), indent=2) + "\n"


def render(comparison: Comparison, fmt: str = "table"):
    """The comparison in a format: a Rich renderable for "table", else a string."""
    if fmt == "table":
        return table(comparison)
    if fmt == "markdown":
        return markdown(comparison)
    if fmt == "csv":
        return to_csv(comparison)
    if fmt == "json":
        return to_json(comparison)
    raise UsageError(f"--format {fmt}: unknown format; allowed: {', '.join(FORMATS)}")
