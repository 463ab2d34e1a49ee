"""The records of the store as one pandas table, grouped into runs, and the selectors that pick rows.

One row per measurement (a :class:`fmmforge.codegen.records.Record`), with the units in the
column names: times in ms, rates in GFLOP/s, memory in MiB.

Runs. A *run* is one fmmforge command that recorded measurements (``bench``, ``score --reward
latency``, ``calibrate``, ``tune``...): the command line opens it (fmmforge.core.store.measurement_run)
and every record written while it is open carries its id, with the command's name. Records from
before runs were kept (or written from Python outside any run) carry none; for them a run is
recovered from what they do carry: in the order they were written (by id), a new one starts when
the device, the machine or the fmmforge version changes, when more than :data:`RUN_GAP_S` seconds
pass between two records, or when a plan is measured again at a size it already has in the
current one. Runs are numbered 1, 2, ... by their first record, oldest first: the number
``run:N`` names and ``fmmforge report --runs`` lists.

Selectors (``--compare A B``, ``--select``): ``KEY:VALUE`` items joined by ``+`` (all must
hold): ``run:N`` (``run:last``, ``run:last-1``), ``device:cpu``, ``version:0.1.0``,
``machine:TEXT`` (a part of the machine key), ``dtype:float32``, ``since:DATE`` and
``until:DATE`` (ISO dates or times, UTC). Example: ``device:cpu+version:0.1.0``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from math import prod
from typing import Any, Callable, Iterable

import pandas as pd

from fmmforge.codegen.records import FINGERPRINT_LABEL, Record, fingerprint_names, one_fingerprint, query_records
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store

RUN_GAP_S = 30 * 60
MIB = 2**20
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}

# Column order of the table (and of records.csv).
COLUMNS = (
    "record_id", "run", "command", "created_at", "fmmforge_version", "device", "machine", "algorithm", "levels",
    "backend", "variant", "dtype", "threads", "m", "k", "n", "size", "kernel_median_ms", "kernel_iqr_ms",
    "vendor_median_ms", "vendor_iqr_ms", "speedup", "ceiling", "kernel_gflop_per_s", "vendor_gflop_per_s",
    "max_error", "error_bound", "c_mib", "workspace_mib", "peak_extra_mib",
)


def parse_time(text: str, what: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise); one clear error otherwise."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FmmforgeError(f"cannot read {what} {text!r}; write an ISO date such as 2026-12-01 "
                            "or 2026-12-01T14:30") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _created(record: Record) -> datetime | None:
    try:
        return parse_time(record.created_at, "created_at")
    except FmmforgeError:
        return None


def assign_runs(records: list[Record]) -> list[int]:
    """The run number of each record (records in id order); see the module docstring."""
    numbers: dict[tuple[str, int], int] = {}
    runs: list[int] = []
    legacy = 0
    key: tuple[str, str, str] | None = None
    seen: set[tuple[Any, ...]] = set()
    last: datetime | None = None
    for r in records:
        if r.run is not None:
            key = None  # an unrecorded record after a recorded run starts a run of its own
            runs.append(numbers.setdefault(("run", r.run), len(numbers) + 1))
            continue
        when = _created(r)
        measured = (r.plan_key, r.m, r.k, r.n, r.dtype)
        gap = when is not None and last is not None and (when - last).total_seconds() > RUN_GAP_S
        if (r.device, r.machine, r.fmmforge_version) != key or measured in seen or gap:
            legacy += 1
            seen = set()
            key = (r.device, r.machine, r.fmmforge_version)
        seen.add(measured)
        last = when or last
        runs.append(numbers.setdefault(("legacy", legacy), len(numbers) + 1))
    return runs


def _ceiling(plan: dict[str, Any], levels: int, cache: dict[str, float | None]) -> float | None:
    """(n·m·p/R)^L of the plan's schemes, resolved by name; None when the plan does not name one
    scheme per level or a scheme is no longer known."""
    from fmmforge.core import catalogue

    names = plan.get("algorithms")
    if not isinstance(names, list) or len(names) != levels or not all(isinstance(n, str) for n in names):
        return None
    total = 1.0
    for name in names:
        if name not in cache:
            try:
                d = catalogue.resolve(name)
                cache[name] = prod(d.format) / d.rank if d.format else None
            except FmmforgeError:
                cache[name] = None
        if cache[name] is None:
            return None
        total *= cache[name]  # type: ignore[operator]
    return total


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


def _plan(record: Record) -> dict[str, Any]:
    try:
        plan = json.loads(record.plan)
    except ValueError:
        return {}
    return plan if isinstance(plan, dict) else {}


NO_COMMAND = "-"  # the command of a record from before runs were kept


def _named(record: Record, plan: dict[str, Any], names: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The record's algorithm and plan with a ``fp:`` label (a scheme recorded by fingerprint only)
    replaced by the name ``names`` knows it by."""
    fp = one_fingerprint(record)
    if not record.algorithm.startswith(FINGERPRINT_LABEL) or fp not in names:
        return record.algorithm, plan
    return names[fp], {**plan, "algorithms": [names[fp]] * record.levels}


def record_rows(records: list[Record], commands: dict[int, tuple[str, str]] | None = None,
                names: dict[str, str] | None = None) -> pd.DataFrame:
    """The table of ``records`` (in id order), one row per measurement; ``commands`` is the store's
    runs (id -> (command, started at), fmmforge.core.store.Store.runs), ``names`` the names of
    schemes recorded by fingerprint only (fmmforge.codegen.records.fingerprint_names)."""
    runs = assign_runs(records)
    commands, names = commands or {}, names or {}
    cache: dict[str, float | None] = {}
    rows = []
    for r, run in zip(records, runs):
        algorithm, plan = _named(r, _plan(r), names)
        flops = 2.0 * r.m * r.k * r.n
        rows.append({
            "record_id": r.id, "run": run,
            "command": commands.get(r.run, (NO_COMMAND,))[0] if r.run is not None else NO_COMMAND, "created_at": r.created_at, "fmmforge_version": r.fmmforge_version,
            "device": r.device, "machine": r.machine, "algorithm": algorithm, "levels": r.levels,
            "backend": r.backend, "variant": plan.get("variant", "lowmem"), "dtype": r.dtype,
            "threads": r.threads, "m": r.m, "k": r.k, "n": r.n, "size": f"{r.m}x{r.k}x{r.n}",
            "kernel_median_ms": r.median_s * 1e3, "kernel_iqr_ms": r.iqr_s * 1e3,
            "vendor_median_ms": r.baseline_median_s * 1e3, "vendor_iqr_ms": r.baseline_iqr_s * 1e3,
            "speedup": r.speedup, "ceiling": _ceiling(plan, r.levels, cache),
            "kernel_gflop_per_s": flops / r.median_s / 1e9 if r.median_s > 0 else None,
            "vendor_gflop_per_s": flops / r.baseline_median_s / 1e9 if r.baseline_median_s > 0 else None,
            "max_error": r.max_error, "error_bound": r.error_bound,
            "c_mib": r.m * r.n * ITEMSIZE.get(r.dtype, 4) / MIB,
            "workspace_mib": _mib(r.workspace_bytes), "peak_extra_mib": _mib(r.peak_extra_bytes),
        })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("record_id", "run", "levels", "m", "k", "n"):
        frame[column] = frame[column].astype("int64")
    frame["threads"] = frame["threads"].astype("Int64")
    return frame


def load_records(store: Store) -> pd.DataFrame:
    """Every record in ``store``, one row per measurement (an empty table for an empty store)."""
    records = query_records(store)
    return record_rows(records, store.runs(), fingerprint_names(records, store))


# ---------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Selector:
    """A parsed selector: ``text`` as given, ``keep`` the row filter."""

    text: str
    keep: Callable[[pd.DataFrame], pd.Series]


SELECTOR_KEYS = ("run", "device", "version", "machine", "dtype", "since", "until")
SELECTOR_HELP = ("run:N (or run:last, run:last-1), device:cpu, version:0.1.0, machine:TEXT, dtype:float32, "
                 "since:DATE, until:DATE; join several with +")


def _run_number(value: str, frame: pd.DataFrame) -> int:
    last = int(frame["run"].max()) if len(frame) else 0
    m = re.fullmatch(r"last(?:-(\d+))?", value)
    if m:
        return last - int(m.group(1) or 0)
    if value.isdigit():
        return int(value)
    raise FmmforgeError(f"cannot read run {value!r}; write run:N (a number from `fmmforge report --runs`), "
                        "run:last or run:last-1")


def _times(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="ISO8601")


def _one(key: str, value: str, frame: pd.DataFrame) -> pd.Series:
    if key == "run":
        return frame["run"] == _run_number(value, frame)
    if key == "device":
        return frame["device"] == ("cuda:0" if value == "cuda" else value)
    if key == "version":
        return frame["fmmforge_version"] == value
    if key == "machine":
        return frame["machine"].str.contains(value, regex=False)
    if key == "dtype":
        return frame["dtype"] == value
    when = pd.Timestamp(parse_time(value, key))
    return _times(frame) >= when if key == "since" else _times(frame) <= when


def parse_selector(text: str) -> Selector:
    """``KEY:VALUE[+KEY:VALUE...]`` (see the module docstring); one clear error for anything else."""
    items = [item.strip() for item in text.split("+")]
    pairs = []
    for item in items:
        key, sep, value = item.partition(":")
        key = key.strip().lower()
        if not sep or not value.strip() or key not in SELECTOR_KEYS:
            raise FmmforgeError(f"cannot read selector {item!r} in {text!r}; use {SELECTOR_HELP}")
        pairs.append((key, value.strip()))
    for key, value in pairs:  # check dates and run numbers now, not on the first matching row
        if key in ("since", "until"):
            parse_time(value, key)
        if key == "run":
            _run_number(value, pd.DataFrame({"run": [1]}))

    def keep(frame: pd.DataFrame) -> pd.Series:
        mask = pd.Series(True, index=frame.index)
        for key, value in pairs:
            mask &= _one(key, value, frame)
        return mask

    return Selector(text, keep)


def select(frame: pd.DataFrame, selector: Selector | str) -> pd.DataFrame:
    """The rows of ``frame`` that ``selector`` keeps."""
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    return frame[sel.keep(frame)] if len(frame) else frame


def run_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its number, the command, its first record (started) and last one, how many
    records, the devices, machines and fmmforge versions."""
    columns = ["run", "command", "started", "last", "records", "devices", "machine", "fmmforge_version"]
    if not len(frame):
        return pd.DataFrame(columns=columns)
    grouped = frame.groupby("run", sort=True)

    def joined(column: str) -> list[str]:
        return [", ".join(distinct(g, column)) for _, g in grouped]

    return pd.DataFrame({
        "run": list(grouped.groups), "command": grouped["command"].first().tolist(),
        "started": grouped["created_at"].min().tolist(), "last": grouped["created_at"].max().tolist(),
        "records": grouped.size().tolist(), "devices": joined("device"), "machine": joined("machine"),
        "fmmforge_version": joined("fmmforge_version"),
    }, columns=columns)


def distinct(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of ``column``, in the order they first appear."""
    return [str(v) for v in dict.fromkeys(frame[column].tolist())]


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """A label per row naming its line in the plots: algorithm and levels, plus whatever else
    (dtype, backend, variant, device) differs between the rows."""
    extra = [c for c in ("dtype", "backend", "variant", "device") if frame[c].nunique() > 1]

    def label(row: pd.Series) -> str:
        parts = [f"{row['algorithm']} L{row['levels']}", *(str(row[c]) for c in extra)]
        return " ".join(parts)

    return frame.apply(label, axis=1) if len(frame) else pd.Series([], dtype=str)


def latest(frame: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """The latest row (highest record id) for each combination of ``keys``."""
    if not len(frame):
        return frame
    return frame.sort_values("record_id").groupby(list(keys), sort=False).tail(1)
