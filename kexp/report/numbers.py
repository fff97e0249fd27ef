"""Numbers as people read them: the one formatter of kexp's reports and end-of-run tables, the one
"is this a finite number" test, and the one mean ± std over folds (ddof=0). Standard library only."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def number(value: Any) -> float | int | None:
    """`value` when it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """The mean and the population std (ddof=0, as numpy's default) of the finite values; (None, None)
    when there are none."""
    finite = [v for v in values if number(v) is not None]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def format_number(value: Any, signed: bool = False, decimals: int | None = None) -> str:
    """A value as a table shows it: "-" for none, true/false, integers as they are; a float with 4
    significant digits (`compare`'s narrow columns: 0.1667, 2.4), or with `decimals` fixed decimals,
    which line up in a column of metrics (0.1667, 2.4000; scientific below 0.001 and from 10,000)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    sign = "+" if signed else ""
    if decimals is not None:
        compact = abs(value) >= 1e4 or abs(value) < 1e-3
        return f"{value:{sign}.{decimals}g}" if compact else f"{value:{sign}.{decimals}f}"
    if abs(value) >= 1000:
        return f"{value:{sign}.0f}"
    return f"{value:+.3g}" if signed else f"{value:.4g}"


def format_duration(seconds: Any) -> str:
    if number(seconds) is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
