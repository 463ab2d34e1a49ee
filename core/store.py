"""The algorithm store: one SQLite file at $FMMFORGE_HOME/store.sqlite.

Every insert is verified exactly first and de-duplicated by fingerprint; provenance (source,
engine, seed, parameters, time, fmmforge version) is kept. Several processes may write at
once: WAL journaling, a busy timeout and short ``BEGIN IMMEDIATE`` transactions make the
writers queue instead of failing or losing rows. Later issues add their tables (benchmark
records) through :data:`MIGRATIONS`.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.core.version import __version__

STORE_FILE = "store.sqlite"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*(:[A-Za-z0-9_.,+-]+)?$")

# Each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE algorithms (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        format TEXT NOT NULL,
        rank INTEGER NOT NULL,
        field TEXT NOT NULL,
        nnz_u INTEGER NOT NULL, nnz_v INTEGER NOT NULL, nnz_w INTEGER NOT NULL,
        additions INTEGER NOT NULL,
        stability REAL,
        data TEXT NOT NULL,
        source TEXT NOT NULL,
        engine TEXT,
        seed INTEGER,
        params TEXT,
        created_at TEXT NOT NULL,
        fmmforge_version TEXT NOT NULL
    );
    CREATE INDEX algorithms_format ON algorithms(format, field, rank);
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL REFERENCES algorithms(fingerprint),
        created_at TEXT NOT NULL
    );
    """,
    # benchmark measurements (fmmforge.codegen.records): one row per kernel measured
    """
    CREATE TABLE records (
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
    CREATE INDEX records_lookup ON records(plan_key, device, machine, m, k, n, dtype);
    """,
]


def default_home() -> Path:
    """$FMMFORGE_HOME, else $XDG_DATA_HOME/fmmforge, else ~/.local/share/fmmforge."""
    env = os.environ.get("FMMFORGE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "fmmforge"


@dataclass(frozen=True)
class Provenance:
    source: str
    engine: str | None = None
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddResult:
    id: int
    fingerprint: str
    inserted: bool  # False: the same scheme (by fingerprint) was already stored
    name: str | None


@dataclass(frozen=True)
class StoredAlgorithm:
    id: int
    fingerprint: str
    names: tuple[str, ...]
    format: str
    rank: int
    field: str
    nnz: tuple[int, int, int]
    additions: int
    stability: float | None
    provenance: Provenance
    created_at: str
    fmmforge_version: str
    data: str

    @property
    def label(self) -> str:
        return self.names[0] if self.names else f"store:{self.id}"

    @cached_property
    def decomposition(self) -> Decomposition:
        """Re-verified on load: a hand-edited or corrupted row never passes as valid."""
        from fmmforge.core.formats import loads_json

        try:
            d = loads_json(self.data)
            return d.require_valid()
        except InvalidDecompositionError as exc:
            raise FmmforgeError(f"stored algorithm {self.label} is corrupted: {exc}") from None


class Store:
    """Algorithms on disk. Reading a store that does not exist yet reads as empty."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / STORE_FILE

    # ------------------------------------------------------------ connection
    def _connect(self, write: bool) -> sqlite3.Connection | None:
        if not write and not self.path.exists():
            return None
        if write:
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FmmforgeError(
                    f"cannot create the store directory {self.home} ({exc.strerror}); "
                    "set FMMFORGE_HOME to a writable directory"
                ) from None
            if not os.access(self.home, os.W_OK):
                raise FmmforgeError(
                    f"the store directory {self.home} is not writable; set FMMFORGE_HOME to a writable directory"
                )
        try:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
            if write:
                self._migrate(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            raise FmmforgeError(
                f"cannot use the store {self.path} ({exc}); set FMMFORGE_HOME to another directory"
            ) from None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another writer may have won
            for step in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ writing
    def add(
        self,
        d: Decomposition,
        provenance: Provenance,
        name: str | None = None,
    ) -> AddResult:
        """Verify, then insert (or find the same scheme already stored) and attach ``name``."""
        from fmmforge.core.catalogue import is_reserved
        from fmmforge.core.formats import dumps_json

        result = d.verify()
        if not result.valid:
            raise InvalidDecompositionError(f"refusing to store an invalid scheme: {result.first_failure}")
        if name is not None:
            if not NAME_PATTERN.match(name):
                raise FmmforgeError(
                    f"name {name!r} is not usable; start with a letter and use letters, digits, _ . + -"
                )
            if is_reserved(name):
                raise FmmforgeError(f"name {name!r} belongs to the built-in catalogue; choose another name")
        summary = d.summary()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        row = (
            d.fingerprint, summary["format"], d.rank, d.field, *d.nnz, d.naive_additions,
            summary["stability"], dumps_json(d), provenance.source, provenance.engine, provenance.seed,
            json.dumps(provenance.params, sort_keys=True), now, __version__,
        )
        conn = self._connect(write=True)
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO algorithms (fingerprint, format, rank, field, nnz_u, nnz_v, nnz_w,"
                    " additions, stability, data, source, engine, seed, params, created_at, fmmforge_version)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                inserted = cur.rowcount == 1
                algo_id = conn.execute(
                    "SELECT id FROM algorithms WHERE fingerprint = ?", (d.fingerprint,)
                ).fetchone()[0]
                if name is not None:
                    owner = conn.execute("SELECT fingerprint FROM names WHERE name = ?", (name,)).fetchone()
                    if owner is not None and owner[0] != d.fingerprint:
                        raise FmmforgeError(
                            f"name {name!r} is already used by another stored algorithm; choose another name"
                        )
                    if owner is None:
                        conn.execute(
                            "INSERT INTO names (name, fingerprint, created_at) VALUES (?,?,?)",
                            (name, d.fingerprint, now),
                        )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise FmmforgeError(
                f"cannot write the store {self.path} ({exc}); set FMMFORGE_HOME to a writable directory"
            ) from None
        finally:
            conn.close()
        return AddResult(int(algo_id), d.fingerprint, inserted, name)

    # ------------------------------------------------------------ reading
    def _rows(self, where: str = "", args: tuple = ()) -> list[StoredAlgorithm]:
        conn = self._connect(write=False)
        if conn is None:
            return []
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                return []
            names: dict[str, list[str]] = {}
            for nm, fp in conn.execute("SELECT name, fingerprint FROM names ORDER BY created_at, name"):
                names.setdefault(fp, []).append(nm)
            rows = conn.execute(
                "SELECT id, fingerprint, format, rank, field, nnz_u, nnz_v, nnz_w, additions, stability, data,"
                " source, engine, seed, params, created_at, fmmforge_version FROM algorithms "
                + where + " ORDER BY id",
                args,
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise FmmforgeError(f"cannot read the store {self.path} ({exc}); set FMMFORGE_HOME to another directory") from None
        finally:
            conn.close()
        return [
            StoredAlgorithm(
                id=r[0], fingerprint=r[1], names=tuple(names.get(r[1], ())), format=r[2], rank=r[3],
                field=r[4], nnz=(r[5], r[6], r[7]), additions=r[8], stability=r[9], data=r[10],
                provenance=Provenance(r[11], r[12], r[13], json.loads(r[14] or "{}")),
                created_at=r[15], fmmforge_version=r[16],
            )
            for r in rows
        ]

    def all(self) -> list[StoredAlgorithm]:
        return self._rows()

    def __iter__(self) -> Iterator[StoredAlgorithm]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self.all())

    def find(self, name: str) -> StoredAlgorithm | None:
        """By name, by ``store:ID``, or by a fingerprint (or a unique prefix of 8+ characters)."""
        if name.startswith("store:"):
            try:
                rows = self._rows("WHERE id = ?", (int(name[6:]),))
            except ValueError:
                return None
            return rows[0] if rows else None
        conn = self._connect(write=False)
        if conn is None:
            return None
        try:
            hit = conn.execute("SELECT fingerprint FROM names WHERE name = ?", (name,)).fetchone()
        except sqlite3.DatabaseError:
            hit = None
        finally:
            conn.close()
        if hit is not None:
            rows = self._rows("WHERE fingerprint = ?", (hit[0],))
        elif re.fullmatch(r"[0-9a-f]{8,24}", name):
            rows = self._rows("WHERE fingerprint LIKE ?", (name + "%",))
            if len(rows) > 1:
                raise FmmforgeError(f"fingerprint prefix {name!r} is ambiguous; give more characters")
        else:
            rows = []
        return rows[0] if rows else None

    def best(self, format: str, field: str) -> StoredAlgorithm | None:
        rows = self._rows("WHERE format = ? AND field = ?", (format, field))
        return min(rows, key=lambda r: (r.rank, r.id)) if rows else None


