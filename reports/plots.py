"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) into PNG bytes.

Each ``*_figure`` function takes the measurement table (fmmforge.reports.data) and returns the
matplotlib Figure, or None when there is nothing to draw (a report never shows an empty plot);
:func:`png` makes its PNG. Where a plan was measured more than once at a size, the latest
measurement is drawn (the tables list them all).

What a reader can rely on, on a noisy store too: every series has a colour and marker of its
own (:func:`style`) and one legend entry, the legend sits below the axes (never over the data)
and grows the figure rather than dropping entries, titles wrap to the figure's width, and the
axes span the data, not the noise: a measurement whose IQR band reaches past them is ringed and
drawn without a band (the tables give the IQRs), and a speed-up axis spanning more than :data:`LOG_SPAN` times goes logarithmic.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any, Iterator

import numpy as np
import pandas as pd

from fmmforge.reports.data import latest, series_labels

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#843c39", "#e7ba52")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")  # 9, prime to the 14 colours: 126 distinct pairs
FIGSIZE = (10.0, 5.2)
DPI = 110
TITLE_PT, LEGEND_PT = 13, 9
LEGEND_ROW_IN = 0.2  # height of one legend row
LOG_SPAN = 4.0  # a speed-up axis wider than this ratio (max / min) is drawn on a log scale


def style(i: int) -> tuple[str, str]:
    """(colour, marker) of the i-th series: no two series of a plot share a colour (up to 14) or
    both colour and marker (up to 126)."""
    return COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]


def wrap_title(title: str, width_in: float = FIGSIZE[0], points: float = TITLE_PT) -> str:
    """``title`` broken into lines that fit a figure ``width_in`` inches wide at ``points``."""
    chars = max(20, int(width_in * 72 / (points * 0.62)))
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False))


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(wrap_title(title), fontsize=TITLE_PT)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _legend(fig: Any, ax: Any, extra: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """One legend below the axes: an entry per labelled artist, then ``extra`` (style keys), in as
    many columns as the labels' width allows; the figure grows by its rows, so no entry is lost."""
    handles, labels = ax.get_legend_handles_labels()
    handles += list(extra)
    labels += [h.get_label() for h in extra]
    if not handles:
        return None
    widest = max(len(label) for label in labels)
    columns = max(1, min(4, int(FIGSIZE[0] * 72 // (widest * LEGEND_PT * 0.55 + 30))))
    rows = math.ceil(len(handles) / columns)
    fig.set_size_inches(FIGSIZE[0], FIGSIZE[1] + rows * LEGEND_ROW_IN)
    return fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=LEGEND_PT, frameon=False)


def png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _key(label: str, **line: Any) -> Any:
    """A legend entry for a style (not a series): a line of ``line``'s properties."""
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, **{"color": "grey", **line})


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


def _series(frame: pd.DataFrame, keep: pd.Series | None = None) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(label, colour, marker, rows sorted by size) per plotted line of the rows ``keep`` selects,
    latest measurement per size, in label order. Labels and styles come from the whole ``frame``
    (the report's rows), so a series looks the same in every plot of a report."""
    labels = series_labels(frame)
    styles = {label: style(i) for i, label in enumerate(sorted(set(labels)))}
    data = frame.assign(series=labels, x=effective_size(frame))
    data = latest(data if keep is None else data[keep], ["series", "m", "k", "n"])
    for label, rows in sorted(data.groupby("series", sort=False), key=lambda item: str(item[0])):
        yield (str(label), *styles[label], rows.sort_values("x"))


def speedup_band(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The speed-ups at the ends of both IQRs: (vendor ∓ IQR/2) / (kernel ± IQR/2)."""
    low = (rows["vendor_median_ms"] - rows["vendor_iqr_ms"] / 2) / (rows["kernel_median_ms"] + rows["kernel_iqr_ms"] / 2)
    slow = (rows["kernel_median_ms"] - rows["kernel_iqr_ms"] / 2).clip(lower=1e-12)
    high = (rows["vendor_median_ms"] + rows["vendor_iqr_ms"] / 2) / slow
    return low, high


def _span(values: list[float], pad: float = 0.08) -> tuple[float, float, bool]:
    """(low, high, log) y limits around the finite positive ``values``, padded."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    lo, hi = (min(finite), max(finite)) if finite else (0.5, 2.0)
    if hi / lo > LOG_SPAN:
        return lo / (1 + 2 * pad), hi * (1 + 2 * pad), True
    gap = (hi - lo) or hi * 0.1
    return max(0.0, lo - pad * gap), hi + pad * gap, False


def _speedup_axis(drawn: list[tuple[str, str, str, pd.DataFrame]]) -> tuple[float, float, bool]:
    """(low, high, log) of the speed-up axis: the medians, the ceilings drawn and 1.0 (not the bands)."""
    values = [1.0]
    for _, _, _, g in drawn:
        values += g["speedup"].tolist()
        if g["ceiling"].notna().all():
            values += g["ceiling"].tolist()
    return _span(values)


def _cut(g: pd.DataFrame, lo: float, hi: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The band's low and high ends, and which of its points reach past the axis [lo, hi]."""
    low, high = speedup_band(g)
    return low, high, (low < lo) | (high > hi)


def bands_cut(frame: pd.DataFrame) -> int:
    """How many measurements of the speed-up plot of ``frame`` have an IQR band reaching past its
    axis (drawn as a ring, without a band)."""
    drawn = list(_series(frame, frame["levels"] > 0))
    if not drawn:
        return 0
    lo, hi, _ = _speedup_axis(drawn)
    return sum(int(_cut(g, lo, hi)[2].sum()) for *_, g in drawn)


def speedup_figure(frame: pd.DataFrame, device: str) -> Any:
    from matplotlib.ticker import FuncFormatter, LogLocator

    rows = frame[frame["levels"] > 0]
    if not len(rows):
        return None
    fig, ax = _axes(f"Speed-up over the vendor matmul ({device})", "size N (MxKxN: (MKN)^1/3)",
                    "speed-up (vendor time / kernel time)")
    drawn = list(_series(frame, frame["levels"] > 0))
    lo, hi, log = _speedup_axis(drawn)
    rings = False
    for label, color, marker, g in drawn:
        ax.plot(g["x"], g["speedup"], marker=marker, color=color, label=label)
        low, high, cut = _cut(g, lo, hi)
        # a band past the axis says "noise": it gets a ring, not a band stretched over every other line
        ax.fill_between(g["x"], low.where(~cut), high.where(~cut), color=color, alpha=0.15, linewidth=0)
        if cut.any():
            rings = True
            ax.plot(g["x"][cut], g["speedup"][cut], linestyle="none", marker="o", markersize=15,
                    markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.5)
        if g["ceiling"].notna().all():
            ax.plot(g["x"], g["ceiling"], linestyle="--", color=color, linewidth=1.2)
    ax.axhline(1.0, color="black", linewidth=1.0, label="1.0 (vendor matmul)")
    if log:
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(lo, hi)
    _size_axis(ax, rows)
    keys = [_key("ceiling (nmp/R)^L (dashed)", linestyle="--"), _key("IQR band", alpha=0.3, linewidth=8)]
    if rings:
        keys.append(_key("ring: IQR band past the plot", linestyle="none", marker="o", markersize=10,
                         markerfacecolor="none"))
    _legend(fig, ax, keys)
    return fig


def gflops_figure(frame: pd.DataFrame, device: str, peak: float | None) -> Any:
    if not len(frame):
        return None
    fig, ax = _axes(f"Effective GFLOP/s = 2MKN / t ({device})", "size N (MxKxN: (MKN)^1/3)", "GFLOP/s")
    values = []
    for label, color, marker, g in _series(frame, frame["levels"] > 0):
        ax.plot(g["x"], g["kernel_gflop_per_s"], marker=marker, color=color, label=label)
        values += g["kernel_gflop_per_s"].tolist()
    vendor = frame.assign(x=effective_size(frame)).groupby("x", sort=True)["vendor_gflop_per_s"].mean()
    ax.plot(vendor.index, vendor.values, marker="*", markersize=9, color="black", linewidth=2,
            label="vendor matmul (mean)")
    if peak:
        ax.axhline(peak, color="black", linestyle=":", linewidth=1.2, label=f"measured peak {peak:.0f} GFLOP/s")
    lo, hi, log = _span(values + vendor.tolist() + ([peak] if peak else []))
    if log:  # an outlier (or a slow plan) would flatten the rest on a linear axis
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
    else:
        ax.set_ylim(0, hi)
    _size_axis(ax, frame)
    _legend(fig, ax)
    return fig


def error_figure(frame: pd.DataFrame) -> Any:
    rows = frame[frame["max_error"].notna()]
    if not len(rows):
        return None
    fig, ax = _axes("Max error against float64, by levels (worst over sizes)", "levels L",
                    "max |C - C_ref| (log scale)")
    bounds = False
    for i, (algorithm, g) in enumerate(rows.groupby("algorithm", sort=False)):
        color, marker = style(i)
        worst = g.groupby("levels")[["max_error", "error_bound"]].max()
        ax.plot(worst.index, worst["max_error"], marker=marker, color=color, label=str(algorithm))
        if worst["error_bound"].notna().any():
            bounds = True
            ax.plot(worst.index, worst["error_bound"], marker=marker, markerfacecolor="none", linestyle="--",
                    color=color)
    ax.set_yscale("log")
    levels = sorted(set(rows["levels"]))
    ax.set_xticks(levels, [str(v) for v in levels])
    _legend(fig, ax, [_key("solid, filled: measured", marker="o")]
            + ([_key("dashed, hollow: stability bound", marker="o", markerfacecolor="none", linestyle="--")]
               if bounds else []))
    return fig


def memory_figure(frame: pd.DataFrame) -> Any:
    kept = (frame["levels"] > 0) & (frame["workspace_mib"].notna() | frame["peak_extra_mib"].notna())
    rows = frame[kept]
    if not len(rows):
        return None
    fig, ax = _axes("Workspace and peak extra memory against the size of C", "size of C [MiB]", "memory [MiB]")
    keys = []
    for label, color, marker, g in _series(frame, kept):
        g = g.sort_values("c_mib")
        named = False  # one legend entry per series, on whichever line it has
        if g["workspace_mib"].notna().any():
            ax.plot(g["c_mib"], g["workspace_mib"], marker=marker, color=color, label=label)
            named = True
        if g["peak_extra_mib"].notna().any():
            ax.plot(g["c_mib"], g["peak_extra_mib"], marker=marker, markerfacecolor="none", linestyle="--",
                    color=color, label=None if named else label)
    if rows["workspace_mib"].notna().any():
        keys.append(_key("solid, filled: workspace", marker="o"))
    if rows["peak_extra_mib"].notna().any():
        keys.append(_key("dashed, hollow: peak extra", marker="o", markerfacecolor="none", linestyle="--"))
    _log2_axis(ax, rows["c_mib"])
    values = pd.concat([rows["workspace_mib"], rows["peak_extra_mib"]]).dropna()
    if (values > 0).all():  # a zero has no place on a log axis: stay linear then
        ax.set_yscale("log")
    _legend(fig, ax, keys)
    return fig


def cost_model_figure(frame: pd.DataFrame, name: str) -> Any:
    rows = frame[frame["predicted_ms"].notna()]
    if not len(rows):
        return None
    fig, ax = _axes(f"Cost model {name}: predicted against measured kernel time", "measured [ms]", "predicted [ms]")
    for label, color, marker, g in _series(frame, frame["predicted_ms"].notna()):
        ax.scatter(g["kernel_median_ms"], g["predicted_ms"], color=color, marker=marker, label=label)
    both = pd.concat([rows["kernel_median_ms"], rows["predicted_ms"]])
    lo, hi = float(both.min()) / 1.2, float(both.max()) * 1.2
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="predicted = measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _legend(fig, ax)
    return fig
