"""Benchmark records in the store: the ``records`` table, which this module owns (:data:`TABLES`).

One row per measurement: device (and the machine it was on), algorithm and fingerprint(s), the
plan, size M×K×N, dtype, median and IQR of the kernel and of the vendor baseline measured in the
same run, speed-up, max error against float64 and its bound, fmmforge version, and the emitter
revision of the kernel (codegen.generate.EMITTER_REVISION; NULL in rows from before the column),
and the run it was recorded in: the command invocation open when it was written
(fmmforge.core.store.measurement_run, which every command line opens; NULL outside one and in
rows from before the column).
A kernel's time describes the code its emitter wrote: the consumers that reuse a measurement
(the bench cache, the tuner, the cost model's fit) take only the current revision's records
(:func:`current_records`); reports show every record.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from fmmforge.codegen.generate import EMITTER_REVISION
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.names import ALPHATENSOR_PREFIX
from fmmforge.core.store import OwnedTables, Store
from fmmforge.core.version import __version__


@dataclass(frozen=True)
class Record:
    device: str
    machine: str
    algorithm: str
    fingerprint: str
    plan: str  # JSON of Plan.as_dict()
    plan_key: str
    backend: str
    levels: int
    m: int
    k: int
    n: int
    dtype: str
    threads: int | None
    median_s: float
    iqr_s: float
    baseline_median_s: float
    baseline_iqr_s: float
    speedup: float
    max_error: float | None
    error_bound: float | None
    peak_extra_bytes: int | None = None  # measured peak resident memory of one call beyond the inputs
    workspace_bytes: int | None = None  # bytes held by the kernel's workspaces (exact)
    created_at: str = ""
    fmmforge_version: str = __version__
    emitter: int | None = EMITTER_REVISION  # the emitter revision of the kernel measured
    run: int | None = None  # the run (store.measurement_run) it was recorded in; NULL: none, or before runs
    id: int | None = None

    @property
    def gflops(self) -> float:
        return 2.0 * self.m * self.k * self.n / self.median_s / 1e9


_COLUMNS = [f.name for f in fields(Record) if f.name != "id"]

# "IF NOT EXISTS": stores from before this module owned the table already have it (store step 2).
TABLES = OwnedTables("codegen.records", (
    """
        CREATE TABLE IF NOT EXISTS records (
            id INTEGER PRIMARY KEY,
            device TEXT NOT NULL,
            machine TEXT NOT NULL,
            algorithm TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            plan TEXT NOT NULL,
            plan_key TEXT NOT NULL,
            backend TEXT NOT NULL,
            levels INTEGER NOT NULL,
            m INTEGER NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL,
            dtype TEXT NOT NULL,
            threads INTEGER,
            median_s REAL NOT NULL,
            iqr_s REAL NOT NULL,
            baseline_median_s REAL NOT NULL,
            baseline_iqr_s REAL NOT NULL,
            speedup REAL NOT NULL,
            max_error REAL,
            error_bound REAL,
            peak_extra_bytes INTEGER,
            workspace_bytes INTEGER,
            created_at TEXT NOT NULL,
            fmmforge_version TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS records_lookup ON records(plan_key, device, machine, m, k, n, dtype);
        """,
    # version 2: the emitter revision of the kernel measured (NULL: taken before the column)
    "ALTER TABLE records ADD COLUMN emitter INTEGER",
    # version 3: the run (the store's runs table: one command invocation) it was recorded in
    "ALTER TABLE records ADD COLUMN run INTEGER",
))


def add_record(record: Record, store: Store | None = None) -> int:
    store = store if store is not None else Store()
    row = asdict(record)
    row.pop("id")
    if not row["created_at"]:
        row["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with store.writing(TABLES) as conn:
        if row["run"] is None:
            row["run"] = store.run_id(conn)
        cur = conn.execute(
            f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            [row[c] for c in _COLUMNS],
        )
        return int(cur.lastrowid)


def query_records(store: Store | None = None, **where: Any) -> list[Record]:
    """Records matching column=value filters (e.g. plan_key=..., device="cpu", m=4096), oldest first."""
    store = store if store is not None else Store()
    unknown = set(where) - set(_COLUMNS) - {"id"}
    if unknown:
        raise ValueError(f"unknown record columns {sorted(unknown)}")
    clause = " AND ".join(f"{k} = ?" for k in where)
    with store.reading(TABLES) as conn:
        if conn is None:
            return []
        rows = conn.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM records" + (f" WHERE {clause}" if clause else "") + " ORDER BY id",
            list(where.values()),
        ).fetchall()
    return [Record(**dict(zip(_COLUMNS, r[1:])), id=r[0]) for r in rows]


def current_records(store: Store | None = None, **where: Any) -> list[Record]:
    """:func:`query_records` of the kernels this fmmforge emits (the current emitter revision)."""
    return query_records(store, **where, emitter=EMITTER_REVISION)


# ---------------------------------------------------------------------- names of the schemes measured
FINGERPRINT_LABEL = "fp:"  # an algorithm known by no name: fp: and the first 12 hex digits of its fingerprint


@functools.lru_cache(maxsize=None)
def _classical_names() -> dict[str, str]:
    """fingerprint -> name of the classical built-ins (strassen, laderman...), loaded once."""
    from fmmforge.core.catalogue import builtin_entries

    names: dict[str, str] = {}
    for entry in builtin_entries():
        if entry.source != "built-in":
            break  # DeepMind's follow, too many to load for a name: see _format_names
        names.setdefault(entry.load().fingerprint, entry.name)
    return names


@functools.lru_cache(maxsize=None)
def _format_names(fmt: tuple[int, int, int]) -> dict[str, str]:
    """fingerprint -> name of the catalogue entries of format ``fmt``: naive, AlphaTensor's (Z, mod 2)."""
    from fmmforge.core.catalogue import resolve

    names: dict[str, str] = {}
    for name in (f"naive:{','.join(map(str, fmt))}", *(f"{p}:{','.join(map(str, fmt))}" for p in ALPHATENSOR_PREFIX)):
        try:
            names.setdefault(resolve(name).fingerprint, name)
        except FmmforgeError:
            pass  # no such entry for this format
    return names


def stored_names(store: Store | None = None) -> dict[str, str]:
    """fingerprint -> label (first name, else store:ID) of every algorithm in the store."""
    store = store if store is not None else Store()
    return {algo.fingerprint: algo.label for algo in store.all()}


def scheme_name(d: Decomposition, store: Store | None = None) -> str:
    """The name ``d`` is known by: a catalogue name (strassen, naive:n,m,p, alphatensor:n,m,p...),
    else its store name (or store:ID), else ``fp:`` and the start of its fingerprint."""
    fp = d.fingerprint
    name = _classical_names().get(fp) or (_format_names(tuple(d.format)).get(fp) if d.format else None)
    return name or (store if store is not None else Store()).label_of(fp) or f"{FINGERPRINT_LABEL}{fp[:12]}"


def one_fingerprint(record: Record) -> str | None:
    """The fingerprint of the one scheme a record's plan uses at every level; None for a mixed plan."""
    parts = set(record.fingerprint.split("/"))
    return parts.pop() if len(parts) == 1 else None


def fingerprint_names(records: list[Record], store: Store | None = None) -> dict[str, str]:
    """fingerprint -> name for the schemes of ``records`` labelled only by fingerprint (``fp:...``,
    from before records carried names): the name another record of the same scheme has, a
    classical catalogue name, or its store name."""
    known = {fp: r.algorithm for r in records if not r.algorithm.startswith(FINGERPRINT_LABEL)
             and (fp := one_fingerprint(r)) is not None}
    if not any(r.algorithm.startswith(FINGERPRINT_LABEL) for r in records):
        return known
    return {**stored_names(store), **_classical_names(), **known}
