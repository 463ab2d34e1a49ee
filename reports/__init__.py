"""fmmforge.reports: benchmark reports from the records and algorithms in the store.

:func:`build_report` makes a :class:`~fmmforge.reports.sections.Report` in memory (eight
sections: the device, speed-up, GFLOP/s, error, memory, cost model, tuned choices, discovery);
:func:`write_report` writes it to a directory: ``index.html`` (self-contained), ``report.md``
with its PNG plots beside it, and ``records.csv`` (one row per measurement, units in the
column names). :func:`fmmforge.reports.compare.compare` puts two selections side by side.

This package returns tables and writes files (through fmmforge.core.atomic); printing is the
command's (fmmforge.core.app.report_commands).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store
from fmmforge.reports import models
from fmmforge.reports.data import distinct, load_records, parse_time
from fmmforge.reports.sections import (
    Report, cost_model_section, device_section, discovery_section, error_section, gflops_section,
    memory_section, speedup_section, tuned_section,
)

__all__ = ["Report", "build_report", "choose_records", "write_report", "report_files"]


def choose_records(frame: pd.DataFrame, device: str | None = None, algos: list[str] | None = None,
                   since: str | None = None) -> tuple[pd.DataFrame, str]:
    """The rows of one device (``device``, or the only one recorded), of ``algos`` and from ``since``.

    Returns the rows and the device. An empty store gives no rows (the report says what is
    missing); a device, algorithm or date that matches none of the records that exist is one
    FmmforgeError naming what there is.
    """
    devices = distinct(frame, "device")
    if device is not None:
        device = "cuda:0" if device.strip() == "cuda" else device.strip()
        if devices and device not in devices:
            raise FmmforgeError(f"no records for device {device} in the store (it has records for "
                                f"{', '.join(devices)}); pass --device {devices[0]}")
    elif len(devices) > 1:
        raise FmmforgeError(f"the store has records for several devices ({', '.join(devices)}); "
                            "pick one with --device")
    device = device or (devices[0] if devices else "cpu")
    rows = frame[frame["device"] == device] if len(frame) else frame
    if algos:
        have = distinct(rows, "algorithm")
        missing = [a for a in algos if a not in have]
        if missing and len(rows):
            raise FmmforgeError(f"no records of {', '.join(missing)} on {device} (recorded: {', '.join(have)}); "
                                "check --algos or run `fmmforge bench` for them")
        rows = rows[rows["algorithm"].isin(algos)]
    if since is not None:
        when = pd.Timestamp(parse_time(since, "--since"))
        times = pd.to_datetime(rows["created_at"], utc=True, errors="coerce", format="ISO8601")
        kept = rows[times >= when]
        if len(rows) and not len(kept):
            raise FmmforgeError(f"no records on {device} since {since} (the latest is from "
                                f"{rows['created_at'].max()}); give an earlier --since")
        rows = kept
    return rows.reset_index(drop=True), device


def _machine(rows: pd.DataFrame) -> str:
    return str(rows["machine"].iloc[-1]) if len(rows) else ""


def _peak(device: str, rows: pd.DataFrame) -> float | None:
    """The cached measured peak, when the records were measured on this machine."""
    from fmmforge.hardware.devices import cached_peak

    from fmmforge.reports.sections import this_machine

    here, _ = this_machine(device)
    if not len(rows) or here is None or _machine(rows) != here:
        return None
    dtypes = distinct(rows, "dtype")
    return cached_peak(device, dtypes[0]) if len(dtypes) == 1 else None


def build_report(store: Store, *, device: str | None = None, algos: list[str] | None = None,
                 since: str | None = None, cost_model: models.CostModel | None = None,
                 tuned: pd.DataFrame | None = None) -> Report:
    """The whole report in memory. ``cost_model`` and ``tuned`` default to what
    fmmforge.reports.models finds for the device (nothing, until `calibrate` and `tune` exist)."""
    rows, device = choose_records(load_records(store), device, algos, since)
    machine = _machine(rows)
    if cost_model is None:
        cost_model = models.fitted_cost_model(store, device, machine)
    if tuned is None:
        tuned = models.tuned_choices(store, device, machine, rows)
    if cost_model is not None and len(rows):
        rows = rows.assign(predicted_ms=[cost_model.predict_ms(r) for r in rows.to_dict("records")])
    sections = [
        device_section(rows, device),
        speedup_section(rows, device),
        gflops_section(rows, device, _peak(device, rows)),
        error_section(rows),
        memory_section(rows),
        cost_model_section(rows, cost_model),
        tuned_section(tuned),
        discovery_section(store),
    ]
    what = f"{len(rows)} measurements" if len(rows) else "no measurements"
    subtitle = f"{what} on {device}" + (f" ({machine.split('|')[0]})" if machine else "") + f"; store {store.path}"
    return Report("fmmforge benchmark report", subtitle, sections, rows)


def report_files(report: Report) -> dict[str, bytes]:
    """Every file of the report directory, by name, in memory."""
    from fmmforge.reports.render import to_html, to_markdown

    files: dict[str, bytes] = {}
    for section in report.sections:
        for fig in section.figures:
            files[fig.name] = fig.png
    files["records.csv"] = report.records.to_csv(index=False).encode("utf-8")
    files["report.md"] = to_markdown(report).encode("utf-8")
    files["index.html"] = to_html(report).encode("utf-8")  # last: its presence means the rest is there
    return files


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Each file written whole (atomically) into ``out_dir``, created if needed."""
    from fmmforge.core.atomic import writable_target, write_bytes
    from fmmforge.core.paths import make_directory

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FmmforgeError(f"-o {out} is an existing file, not a directory; give a directory (new or existing)")
    make_directory(out)
    for name in files:  # refuse before writing anything when one target is a directory, a FIFO...
        writable_target(out / name)
    for name, data in files.items():
        write_bytes(out / name, data)


def write_report(store: Store, out_dir: Path | str, **options: object) -> Path:
    """Build the report (options as :func:`build_report`) and write it to ``out_dir``; returns
    the path of its index.html. Everything is built in memory before the first file is written."""
    report = build_report(store, **options)  # type: ignore[arg-type]
    write_files(Path(out_dir), report_files(report))
    return Path(out_dir) / "index.html"
