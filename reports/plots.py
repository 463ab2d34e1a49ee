"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) into PNG bytes.

Each function takes the measurement table (fmmforge.reports.data) and returns the PNG, or None
when there is nothing to draw: a report never shows an empty plot. Where a plan was measured
more than once at a size, the latest measurement is drawn (the tables list them all).
"""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np
import pandas as pd

from fmmforge.reports.data import latest, series_labels

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f")
FIGSIZE = (10.0, 5.2)
DPI = 110


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=13)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _png(fig: Any, ax: Any) -> bytes:
    """Legend beside the axes (never over the data), then the PNG."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def effective_size(frame: pd.DataFrame) -> pd.Series:
    """N for a square size, (M·K·N)^(1/3) otherwise: the x axis of the size plots."""
    return np.cbrt(frame["m"].astype(float) * frame["k"] * frame["n"])


def _log2_axis(ax: Any, values: pd.Series) -> None:
    """Log2 x axis with a tick at every measured value."""
    ticks = sorted(set(values.round(6)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)


def _size_axis(ax: Any, frame: pd.DataFrame) -> None:
    _log2_axis(ax, effective_size(frame))


def _series(frame: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(label, colour, rows sorted by size) per plotted line, latest measurement per size."""
    data = frame.assign(series=series_labels(frame), x=effective_size(frame))
    data = latest(data, ["series", "m", "k", "n"])
    for i, (label, rows) in enumerate(data.groupby("series", sort=False)):
        yield str(label), COLORS[i % len(COLORS)], rows.sort_values("x")


def speedup_band(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The speed-ups at the ends of both IQRs: (vendor ∓ IQR/2) / (kernel ± IQR/2)."""
    low = (rows["vendor_median_ms"] - rows["vendor_iqr_ms"] / 2) / (rows["kernel_median_ms"] + rows["kernel_iqr_ms"] / 2)
    slow = (rows["kernel_median_ms"] - rows["kernel_iqr_ms"] / 2).clip(lower=1e-12)
    high = (rows["vendor_median_ms"] + rows["vendor_iqr_ms"] / 2) / slow
    return low, high


def speedup_plot(frame: pd.DataFrame, device: str) -> bytes | None:
    from matplotlib.lines import Line2D

    rows = frame[frame["levels"] > 0]
    if not len(rows):
        return None
    fig, ax = _axes(f"Speed-up over the vendor matmul ({device})", "size N (MxKxN: (MKN)^1/3)",
                    "speed-up (vendor time / kernel time)")
    for label, color, g in _series(rows):
        ax.plot(g["x"], g["speedup"], marker="o", color=color, label=label)
        low, high = speedup_band(g)
        ax.fill_between(g["x"], low, high, color=color, alpha=0.18, linewidth=0)
        if g["ceiling"].notna().all():
            ax.plot(g["x"], g["ceiling"], linestyle="--", color=color, linewidth=1.2)
    ax.axhline(1.0, color="black", linewidth=1.0, label="1.0 (vendor matmul)")
    handles, _ = ax.get_legend_handles_labels()
    ax.add_artist(ax.legend(handles=[Line2D([], [], linestyle="--", color="grey", label="ceiling (nmp/R)^L"),
                                     Line2D([], [], color="grey", alpha=0.3, linewidth=8, label="IQR band")],
                            loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=9, frameon=False))
    _size_axis(ax, rows)
    return _png(fig, ax)


def gflops_plot(frame: pd.DataFrame, device: str, peak: float | None) -> bytes | None:
    if not len(frame):
        return None
    fig, ax = _axes(f"Effective GFLOP/s = 2MKN / t ({device})", "size N (MxKxN: (MKN)^1/3)", "GFLOP/s")
    for label, color, g in _series(frame[frame["levels"] > 0]):
        ax.plot(g["x"], g["kernel_gflop_per_s"], marker="o", color=color, label=label)
    vendor = frame.assign(x=effective_size(frame)).groupby("x", sort=True)["vendor_gflop_per_s"].mean()
    ax.plot(vendor.index, vendor.values, marker="s", color="black", linewidth=2, label="vendor matmul (mean)")
    if peak:
        ax.axhline(peak, color="black", linestyle=":", linewidth=1.2, label=f"measured peak {peak:.0f} GFLOP/s")
    ax.set_ylim(bottom=0)
    _size_axis(ax, frame)
    return _png(fig, ax)


def error_plot(frame: pd.DataFrame) -> bytes | None:
    rows = frame[frame["max_error"].notna()]
    if not len(rows):
        return None
    fig, ax = _axes("Max error against float64, by levels (worst over sizes)", "levels L",
                    "max |C - C_ref| (log scale)")
    for i, (algorithm, g) in enumerate(rows.groupby("algorithm", sort=False)):
        color = COLORS[i % len(COLORS)]
        worst = g.groupby("levels")[["max_error", "error_bound"]].max()
        ax.plot(worst.index, worst["max_error"], marker="o", color=color, label=f"{algorithm}: measured")
        if worst["error_bound"].notna().any():
            ax.plot(worst.index, worst["error_bound"], marker="x", linestyle="--", color=color,
                    label=f"{algorithm}: stability bound")
    ax.set_yscale("log")
    levels = sorted(set(rows["levels"]))
    ax.set_xticks(levels, [str(v) for v in levels])
    return _png(fig, ax)


def memory_plot(frame: pd.DataFrame) -> bytes | None:
    rows = frame[(frame["levels"] > 0) & (frame["workspace_mib"].notna() | frame["peak_extra_mib"].notna())]
    if not len(rows):
        return None
    fig, ax = _axes("Workspace and peak extra memory against the size of C", "size of C [MiB]", "memory [MiB]")
    for label, color, g in _series(rows):
        g = g.sort_values("c_mib")
        if g["workspace_mib"].notna().any():
            ax.plot(g["c_mib"], g["workspace_mib"], marker="o", color=color, label=f"{label}: workspace")
        if g["peak_extra_mib"].notna().any():
            ax.plot(g["c_mib"], g["peak_extra_mib"], marker="^", linestyle="--", color=color,
                    label=f"{label}: peak extra")
    _log2_axis(ax, rows["c_mib"])
    values = pd.concat([rows["workspace_mib"], rows["peak_extra_mib"]]).dropna()
    if (values > 0).all():  # a zero has no place on a log axis: stay linear then
        ax.set_yscale("log")
    return _png(fig, ax)


def cost_model_plot(rows: pd.DataFrame, name: str) -> bytes | None:
    rows = rows[rows["predicted_ms"].notna()]
    if not len(rows):
        return None
    fig, ax = _axes(f"Cost model {name}: predicted against measured kernel time", "measured [ms]", "predicted [ms]")
    for label, color, g in _series(rows):
        ax.scatter(g["kernel_median_ms"], g["predicted_ms"], color=color, label=label)
    both = pd.concat([rows["kernel_median_ms"], rows["predicted_ms"]])
    lo, hi = float(both.min()) / 1.2, float(both.max()) * 1.2
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="predicted = measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    return _png(fig, ax)
