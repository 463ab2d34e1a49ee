"""Benchmark records in the store: the ``records`` table, which this module owns (:data:`TABLES`).

One row per measurement: device (and the machine it was on), algorithm and fingerprint(s), the
plan, size M×K×N, dtype, median and IQR of the kernel and of the vendor baseline measured in the
same run, speed-up, max error against float64 and its bound, fmmforge version, and the emitter
revision of the kernel (codegen.generate.EMITTER_REVISION; NULL in rows from before the column).
A kernel's time describes the code its emitter wrote: the consumers that reuse a measurement
(the bench cache, the tuner, the cost model's fit) take only the current revision's records
(:func:`current_records`); reports show every record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from fmmforge.codegen.generate import EMITTER_REVISION
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
))


def add_record(record: Record, store: Store | None = None) -> int:
    store = store if store is not None else Store()
    row = asdict(record)
    row.pop("id")
    if not row["created_at"]:
        row["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with store.writing(TABLES) as conn:
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
