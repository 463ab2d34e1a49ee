"""Benchmark records in the store (table ``records``, added by a migration in core/store.py).

One row per measurement: device (and the machine it was on), algorithm and fingerprint(s), the
plan, size M×K×N, dtype, median and IQR of the kernel and of the vendor baseline measured in the
same run, speed-up, max error against float64 and its bound, fmmforge version.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store
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
    id: int | None = None

    @property
    def gflops(self) -> float:
        return 2.0 * self.m * self.k * self.n / self.median_s / 1e9


_COLUMNS = [f.name for f in fields(Record) if f.name != "id"]


def add_record(record: Record, store: Store | None = None) -> int:
    store = store if store is not None else Store()
    row = asdict(record)
    row.pop("id")
    if not row["created_at"]:
        row["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    conn = store._connect(write=True)
    assert conn is not None
    try:
        cur = conn.execute(
            f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            [row[c] for c in _COLUMNS],
        )
        return int(cur.lastrowid)
    except sqlite3.DatabaseError as exc:
        raise FmmforgeError(f"cannot write a record to {store.path} ({exc}); set FMMFORGE_HOME to a writable directory") from None
    finally:
        conn.close()


def query_records(store: Store | None = None, **where: Any) -> list[Record]:
    """Records matching column=value filters (e.g. plan_key=..., device="cpu", m=4096), oldest first."""
    store = store if store is not None else Store()
    conn = store._connect(write=False)
    if conn is None:
        return []
    unknown = set(where) - set(_COLUMNS) - {"id"}
    if unknown:
        raise ValueError(f"unknown record columns {sorted(unknown)}")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone() is None:
            return []  # a store written before the records migration
        clause = " AND ".join(f"{k} = ?" for k in where)
        rows = conn.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM records" + (f" WHERE {clause}" if clause else "") + " ORDER BY id",
            list(where.values()),
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise FmmforgeError(f"cannot read records from {store.path} ({exc})") from None
    finally:
        conn.close()
    return [Record(**dict(zip(_COLUMNS, r[1:])), id=r[0]) for r in rows]
