"""How every number in a report is written: one place, used by the terminal tables, the Markdown
and the HTML alike, so the three say the same thing with the same digits.

The format of a value follows its column name (the unit is in the name: ``_ms``, ``_mib``,
``gflop_per_s``...); a missing value is written ``-``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

MISSING = "-"

# Column names (or their endings) -> format spec.
_EXACT = {
    "speedup": ".3f", "ceiling": ".3f", "ratio": ".3f", "kernel_ratio": ".3f", "vendor_ratio": ".3f",
    "speedup_ratio": ".3f", "max_error": ".2e", "error_bound": ".2e", "error_pct": ".1f",
}
_SUFFIX = (("_ms", ".3f"), ("_mib", ".2f"), ("gflop_per_s", ".1f"), ("_speedup", ".3f"), ("_pct", ".1f"))

# What a column is called in a table (units in brackets).
HEADERS = {
    "record_id": "#", "run": "run", "started": "started (UTC)", "last": "last record (UTC)", "created_at": "measured at (UTC)", "fmmforge_version": "fmmforge",
    "algorithm": "algorithm", "levels": "L", "variant": "layout", "size": "size MxKxN", "dtype": "dtype", "threads": "threads",
    "kernel_median_ms": "kernel [ms]", "kernel_iqr_ms": "kernel IQR [ms]", "vendor_median_ms": "vendor [ms]",
    "vendor_iqr_ms": "vendor IQR [ms]", "speedup": "speed-up", "ceiling": "ceiling",
    "kernel_gflop_per_s": "kernel [GFLOP/s]", "vendor_gflop_per_s": "vendor [GFLOP/s]",
    "max_error": "max error", "error_bound": "bound", "c_mib": "C [MiB]", "workspace_mib": "workspace [MiB]",
    "peak_extra_mib": "peak extra [MiB]", "predicted_ms": "predicted [ms]", "error_pct": "error [%]",
    "a_kernel_median_ms": "A kernel [ms]", "b_kernel_median_ms": "B kernel [ms]", "kernel_ratio": "B/A kernel",
    "a_vendor_median_ms": "A vendor [ms]", "b_vendor_median_ms": "B vendor [ms]", "a_speedup": "A speed-up",
    "b_speedup": "B speed-up", "speedup_ratio": "B/A speed-up", "best_known": "best known",
    "before_alphatensor": "before AlphaTensor", "alphatensor": "AlphaTensor", "found_by": "found by", "stored_at": "stored at (UTC)",
}


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def spec_for(column: str) -> str | None:
    if column in _EXACT:
        return _EXACT[column]
    return next((spec for suffix, spec in _SUFFIX if column.endswith(suffix)), None)


def format_value(column: str, value: Any) -> str:
    """``value`` of ``column`` as the reports write it."""
    if is_missing(value):
        return MISSING
    spec = spec_for(column)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return f"{number:{spec}}" if math.isfinite(number) else str(number)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def header(column: str) -> str:
    return HEADERS.get(column, column.replace("_", " "))


def display(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """A table's headers and its rows as strings, every cell through :func:`format_value`."""
    columns = list(frame.columns)
    rows = [[format_value(c, v) for c, v in zip(columns, values)] for values in frame.itertuples(index=False)]
    return [header(c) for c in columns], rows
