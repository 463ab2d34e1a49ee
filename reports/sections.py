"""The report's eight sections, built in memory: text, tables (DataFrames) and plots (PNG bytes).

Nothing here prints or writes: fmmforge.reports.render turns a :class:`Report` into HTML and
Markdown, and the `fmmforge report` command prints the same tables in the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fmmforge.core.store import Store
from fmmforge.core.version import __version__
from fmmforge.reports import models, plots
from fmmforge.reports.data import distinct

BENCH_HINT = "run `fmmforge bench --sizes 512,1024,2048 --algos strassen,laderman --levels 1,2`"


@dataclass(frozen=True)
class Table:
    title: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class Figure:
    name: str  # file name of the PNG beside report.md
    title: str
    png: bytes


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    records: pd.DataFrame  # the rows behind every table and plot (records.csv)


def _measurements(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[["record_id", "algorithm", "levels", "variant", "size", *columns]].reset_index(drop=True)


# ---------------------------------------------------------------------- 1. device
def this_machine(device: str) -> tuple[str | None, dict[str, Any]]:
    """This machine's key for ``device`` and its details, or (None, {}) when it has no such device."""
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.hardware.devices import get_device, machine_key

    try:
        dev = get_device(device)
    except FmmforgeError:
        return None, {}
    return (machine_key() if dev.kind == "cpu" else dev.description), dev.details


def _device_rows(device: str, machine: str, rows: pd.DataFrame) -> list[tuple[str, str]]:
    here, details = this_machine(device)
    items: list[tuple[str, str]] = [("device", device)]
    if device == "cpu":
        parts = machine.split("|")
        model, cores, torch_version, blas = (parts + ["?"] * 4)[:4]
        items += [("CPU model", model), ("cores", cores), ("torch", torch_version), ("torch BLAS", blas)]
        if machine == here:
            items.append(("ISA", ", ".join(details.get("isa", [])) or "-"))
            for lib in details.get("libraries", []):
                items.append((f"library {lib.get('internal_api')}",
                              f"{lib.get('prefix')} {lib.get('version') or ''}, {lib.get('num_threads')} threads"))
    else:
        items.append(("GPU", machine))
        if machine == here:
            items += [("SMs", str(details.get("sms", "-"))), ("memory", f"{details.get('memory_gib', '-')} GiB")]
    threads = sorted({str(t) for t in rows["threads"].tolist() if not pd.isna(t)})
    items += [("threads used", ", ".join(threads) or "-"), ("dtypes", ", ".join(distinct(rows, "dtype"))),
              ("fmmforge (measured with)", ", ".join(distinct(rows, "fmmforge_version"))),
              ("fmmforge (this report)", __version__),
              ("measured", f"{rows['created_at'].min()} to {rows['created_at'].max()} (UTC)"),
              ("measurements", str(len(rows)))]
    if machine != here:
        items.append(("note", "measured on another machine than this one"
                      + (f" (this machine: {here})" if here else "")))
    return items


def device_section(frame: pd.DataFrame, device: str) -> Section:
    section = Section("1. The device")
    if not len(frame):
        section.notes.append(f"no benchmark records for {device} in the store yet: {BENCH_HINT}")
        return section
    for machine in distinct(frame, "machine"):
        rows = frame[frame["machine"] == machine]
        items = _device_rows(device, machine, rows)
        section.tables.append(Table(f"{device} on {machine.split('|')[0]}",
                                    pd.DataFrame(items, columns=["item", "value"])))
    return section


# ---------------------------------------------------------------------- 2.-5. measurements
def _empty(section: Section, what: str) -> Section:
    section.notes.append(f"no {what} to show: {BENCH_HINT}")
    return section


def speedup_section(frame: pd.DataFrame, device: str) -> Section:
    section = Section("2. Speed-up over the vendor matmul")
    if not len(frame):
        return _empty(section, "measurements")
    section.notes.append("speed-up = vendor median / kernel median, measured interleaved in the same run; "
                         "the band spans the speed-ups at the ends of both IQRs; dashed: the arithmetic "
                         "ceiling (nmp/R)^L.")
    fig = plots.speedup_figure(frame, device)
    if fig is None:
        section.notes.append("only level-0 (vendor) plans were measured: nothing to plot.")
    else:
        section.figures.append(Figure("speedup.png", "Speed-up against size", plots.png(fig)))
        cut = plots.bands_cut(frame)
        if cut:
            section.notes.append(f"{cut} measurement(s) have an IQR band reaching past the plot: they are "
                                 "ringed and drawn without a band (noisy; the Timings table below gives their IQRs).")
    section.tables.append(Table("Timings", _measurements(frame, [
        "threads", "run", "kernel_median_ms", "kernel_iqr_ms", "vendor_median_ms",
        "vendor_iqr_ms", "speedup", "ceiling"])))
    return section


def gflops_section(frame: pd.DataFrame, device: str, peak: float | None) -> Section:
    section = Section("3. Effective GFLOP/s")
    if not len(frame):
        return _empty(section, "measurements")
    section.notes.append("GFLOP/s = 2MKN / median time, for the kernels and the vendor matmul measured beside them.")
    section.notes.append(f"measured peak of the vendor matmul on this machine: {peak:.1f} GFLOP/s" if peak else
                         "no measured peak for this device and machine: run `fmmforge devices --measure`")
    fig = plots.gflops_figure(frame, device, peak)
    if fig is not None:
        section.figures.append(Figure("gflops.png", "GFLOP/s against size", plots.png(fig)))
    section.tables.append(Table("Rates", _measurements(frame, ["kernel_gflop_per_s", "vendor_gflop_per_s"])))
    return section


def error_section(frame: pd.DataFrame) -> Section:
    section = Section("4. Error against levels")
    rows = frame[frame["max_error"].notna()] if len(frame) else frame
    if not len(rows):
        return _empty(section, "error measurements")
    section.notes.append("max |C - C_ref| against a float64 product of the same inputs (uniform in [-1, 1]); "
                         "bound: the stability bound each kernel is checked against (docs/background.md §5).")
    fig = plots.error_figure(rows)
    if fig is not None:
        section.figures.append(Figure("error.png", "Error against levels", plots.png(fig)))
    section.tables.append(Table("Errors", _measurements(rows, ["dtype", "max_error", "error_bound"])))
    return section


def memory_section(frame: pd.DataFrame) -> Section:
    section = Section("5. Memory")
    if not len(frame):
        return _empty(section, "measurements")
    if frame["peak_extra_mib"].isna().all():
        section.notes.append("peak extra memory was not measured: run `fmmforge bench --memory`")
    fig = plots.memory_figure(frame)
    if fig is None:
        section.notes.append("no workspace or peak-memory figures in these records")
    else:
        section.figures.append(Figure("memory.png", "Memory against the size of C", plots.png(fig)))
    section.tables.append(Table("Memory", _measurements(frame, ["c_mib", "workspace_mib", "peak_extra_mib"])))
    return section


# ---------------------------------------------------------------------- 6.-7. models
def cost_model_section(frame: pd.DataFrame, model: models.CostModel | None) -> Section:
    section = Section("6. The cost model")
    if model is None:
        section.notes.append("no cost model fitted for this device yet: run `fmmforge calibrate`")
        return section
    if not len(frame):
        return _empty(section, "measurements to compare the cost model with")
    rows = _measurements(frame, ["kernel_median_ms", "predicted_ms"])
    rows["error_pct"] = (rows["predicted_ms"] - rows["kernel_median_ms"]) / rows["kernel_median_ms"] * 100
    errors = rows["error_pct"].abs()
    section.notes.append(f"cost model {model.name}: median |error| {errors.median():.1f} %, "
                         f"max |error| {errors.max():.1f} % over {len(rows)} measurements")
    fig = plots.cost_model_figure(frame, model.name)
    if fig is not None:
        section.figures.append(Figure("cost-model.png", "Predicted against measured", plots.png(fig)))
    section.tables.append(Table("Predicted against measured", rows))
    return section


def tuned_section(choices: pd.DataFrame | None) -> Section:
    section = Section("7. The tuned choice per shape class")
    if choices is None:
        section.notes.append("no tuned choices for this device yet: run `fmmforge tune`")
    elif not len(choices):
        section.notes.append("`fmmforge tune` made no choice for this device")
    else:
        if "plan" in choices and (choices["plan"] == models.VENDOR_CHOICE).any():
            section.notes.append("the vendor matmul: `fmmforge tune` measured kernels for the class and chose none "
                                 "(none beat the vendor matmul by enough), so fmmforge.matmul calls the vendor "
                                 "matmul there; speed-up 1.000 is the vendor against itself.")
        section.tables.append(Table("Tuned choices", choices.reset_index(drop=True)))
    return section


# ---------------------------------------------------------------------- 8. discovery
def discovery_table(store: Store) -> pd.DataFrame:
    """Every stored algorithm against the best known rank of its format, with its provenance."""
    from fmmforge.core.known_ranks import best_known, known_ranks

    rows = []
    for algo in store.all():
        fmt = tuple(int(x) for x in algo.format.strip("<>").split(","))
        known = known_ranks(fmt)  # type: ignore[arg-type]
        best = best_known(fmt, algo.field)  # type: ignore[arg-type]
        rows.append({
            "name": algo.label, "format": algo.format, "field": algo.field, "rank": algo.rank,
            "best_known": best, "gap": None if best is None else algo.rank - best,
            "naive": known.naive if known else fmt[0] * fmt[1] * fmt[2],
            "before_alphatensor": known.before_alphatensor if known else None,
            "alphatensor": (known.alphatensor_z2 if algo.field == "Z2" else known.alphatensor_z) if known else None,
            "found_by": algo.provenance.engine or algo.provenance.source, "stored_at": algo.created_at,
        })
    frame = pd.DataFrame(rows, columns=["name", "format", "field", "rank", "best_known", "gap", "naive",
                                        "before_alphatensor", "alphatensor", "found_by", "stored_at"])
    for column in ("best_known", "gap", "before_alphatensor", "alphatensor"):
        frame[column] = frame[column].astype("Int64")
    return frame.sort_values(["format", "field", "rank"]).reset_index(drop=True)


def discovery_section(store: Store) -> Section:
    section = Section("8. Discovery")
    table = discovery_table(store)
    if not len(table):
        section.notes.append("no algorithms in the store yet: run `fmmforge search` or `fmmforge import FILE`")
        return section
    at_best = int((table["gap"] <= 0).sum())
    section.notes.append(f"stored algorithms: {len(table)}; {at_best} at (or below) the best known rank of their "
                         "format and field (best known ranks: docs/background.md §2). gap = rank - best known.")
    section.tables.append(Table("Stored algorithms against the best known ranks", table))
    return section
