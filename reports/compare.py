"""Two sets of records side by side, with the ratio per row (as `asv compare` does).

Each side is a selector (fmmforge.reports.data: ``run:N``, ``device:cpu``, ``version:0.1.0``,
``since:DATE``... joined by ``+``). Rows are matched on what was measured: algorithm, levels,
backend, variant, dtype and size M×K×N (not the device or version, so two devices or two
fmmforge versions compare too); where a side measured a row more than once, its latest
measurement counts. ``kernel_ratio`` = B's kernel time / A's (below 1: B is faster);
``speedup_ratio`` = B's speed-up / A's.
"""

from __future__ import annotations

import pandas as pd

from fmmforge.core.errors import FmmforgeError
from fmmforge.reports.data import latest, parse_selector, select

MATCH = ["algorithm", "levels", "backend", "variant", "dtype", "m", "k", "n"]
VALUES = ["kernel_median_ms", "vendor_median_ms", "speedup"]


def compare(frame: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """One row per measured plan and size found in ``a`` or ``b``: both sides' times, speed-ups and ratios."""
    sides = []
    for name, text in (("a", a), ("b", b)):
        sel = parse_selector(text)
        rows = select(frame, sel)
        if not len(rows):
            raise FmmforgeError(f"selector {text!r} matches no records; list the runs with `fmmforge report --runs`")
        sides.append(latest(rows, MATCH)[[*MATCH, "size", *VALUES]].rename(columns={v: f"{name}_{v}" for v in VALUES}))
    both = sides[0].merge(sides[1], on=[*MATCH, "size"], how="outer", sort=True)
    both["kernel_ratio"] = both["b_kernel_median_ms"] / both["a_kernel_median_ms"]
    both["speedup_ratio"] = both["b_speedup"] / both["a_speedup"]
    columns = ["algorithm", "levels", "size", "dtype", "a_kernel_median_ms", "b_kernel_median_ms", "kernel_ratio",
               "a_vendor_median_ms", "b_vendor_median_ms", "a_speedup", "b_speedup", "speedup_ratio"]
    return both[columns].reset_index(drop=True)
