"""The algorithm store: one SQLite file at $FMMFORGE_HOME/store.sqlite.

Every insert is verified exactly first and de-duplicated by fingerprint; provenance (source,
engine, seed, parameters, time, fmmforge version) is kept. Rows read back are verified
too: each row keeps the sha256 of its checked columns from when it last verified, and only a
row whose checksum no longer matches is verified again; a row that fails is skipped with one
warning line (``fmmforge store check`` lists such rows, ``--repair`` removes them). Several
processes may write at once: WAL journaling, a busy timeout and short ``BEGIN IMMEDIATE`` transactions make the
writers queue instead of failing or losing rows. The store's own tables grow through
:data:`MIGRATIONS`; other floors keep theirs here through :class:`OwnedTables` (benchmark records:
fmmforge.codegen.records).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import sqlite3
import time

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError, print_warning
from fmmforge.core.formats.json import dumps_json, loads_json
from fmmforge.core.names import NAME_PATTERN, is_reserved
from fmmforge.core.paths import check_home, default_home
from fmmforge.core.version import __version__

STORE_FILE = "store.sqlite"

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
    # step 2 created the benchmark records table; that table now belongs to fmmforge.codegen.records
    # (an OwnedTables schema, created there): the step stays, empty, so version numbers keep meaning
    "",
    # the cached verdict of each row: sha256 of its checked columns, recorded when it verified
    """
    ALTER TABLE algorithms ADD COLUMN verified_sha256 TEXT;
    """,
    # the tables other floors keep here (OwnedTables), and the schema version of each owner's
    """
    CREATE TABLE IF NOT EXISTS table_owners (owner TEXT PRIMARY KEY, version INTEGER NOT NULL);
    """,
    # runs: one row per command invocation that recorded measurements (see measurement_run)
    """
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        started_at TEXT NOT NULL,
        fmmforge_version TEXT NOT NULL
    );
    """,
]


@dataclass
class OpenRun:
    """A run being recorded: the command that opened it, when, and its id in each store that got
    a measurement (the row is made with the run's first measurement there, so a command that
    measured nothing leaves no run behind)."""

    command: str
    started_at: str
    ids: dict[str, int] = field(default_factory=dict)


_OPEN_RUN: contextvars.ContextVar[OpenRun | None] = contextvars.ContextVar("fmmforge_open_run", default=None)


@contextlib.contextmanager
def measurement_run(command: str) -> Iterator[OpenRun]:
    """Everything recorded inside belongs to one run named ``command`` (e.g. "bench"). A run opened
    inside another one is the outer one (``tune`` calling the measuring code stays one run)."""
    outer = _OPEN_RUN.get()
    if outer is not None:
        yield outer
        return
    run = OpenRun(command, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    token = _OPEN_RUN.set(run)
    try:
        yield run
    finally:
        _OPEN_RUN.reset(token)


@dataclass(frozen=True)
class OwnedTables:
    """Tables a subsystem keeps in the store, and how they grew: ``migrations[i]`` takes the owner's
    schema from version i to i + 1 (SQL statements separated by ``;``).

    The store runs them on first use (:meth:`Store.writing`, :meth:`Store.reading`) and keeps each
    owner's version in ``table_owners``; a store written by a newer fmmforge is refused. The owner
    defines and documents its tables; the store only runs the migrations, so a subsystem never
    reaches into the store's own connection or schema.
    """

    owner: str
    migrations: tuple[str, ...]


# A row's checksum covers everything `list` shows about it and the scheme itself.
CHECKED_COLUMNS = ("fingerprint", "format", "rank", "field", "nnz_u", "nnz_v", "nnz_w", "additions", "stability", "data")
PROVENANCE_COLUMNS = ("source", "engine", "seed", "params", "created_at", "fmmforge_version")
CHECKSUM_SCHEME = "fmmforge-row-v1"  # change it to make every row verify again
_UNCHANGED = " AND ".join(f"{column} IS ?" for column in CHECKED_COLUMNS)
HEX_PREFIX = re.compile(r"[0-9a-f]{1,24}")
MIN_PREFIX = 8


def row_checksum(checked: Sequence[Any]) -> str:
    """sha256 of a row's CHECKED_COLUMNS values (their types included)."""
    text = repr((CHECKSUM_SCHEME, *checked))
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


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
    replaced: bool = False  # True: it took the place of a stored row that no longer verified


@dataclass(frozen=True)
class BadRow:
    """A stored row that does not read back as a valid scheme."""

    id: int
    label: str
    reason: str
    checked: tuple[Any, ...] = field(repr=False, compare=False, default=())


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
        try:
            d = loads_json(self.data)
            return d.require_valid()
        except InvalidDecompositionError as exc:
            raise FmmforgeError(f"stored algorithm {self.label} is corrupted: {exc}") from None


def _read_provenance(values: Sequence[Any]) -> Provenance:
    """The provenance columns as a Provenance; ValueError (the reason) when they are unreadable."""
    source, engine, seed, params = values[:4]
    if not isinstance(source, str) or not isinstance(engine, (str, type(None))) \
            or not isinstance(seed, (int, type(None))):
        raise ValueError("its provenance (source, engine, seed) is unreadable")
    try:
        parsed = json.loads(params) if params is not None else {}
    except (TypeError, ValueError, RecursionError):
        raise ValueError("its provenance params are not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("its provenance params are not a JSON object")
    return Provenance(source, engine, seed, parsed)


def _verify_columns(checked: Sequence[Any]) -> Decomposition | str:
    """The row's scheme, verified and matching its summary columns; else the reason it is bad."""
    data = checked[-1]
    if not isinstance(data, str):
        return "its data is not text"
    try:
        d = loads_json(data, source="its data")
    except (FmmforgeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        return f"its data is unreadable ({exc})"
    result = d.verify()
    if not result.valid:
        return f"its scheme is invalid: {result.first_failure}"
    summary = d.summary()
    expected = (d.fingerprint, summary["format"], d.rank, d.field, *d.nnz, d.naive_additions, summary["stability"])
    for column, have, want in zip(CHECKED_COLUMNS, checked, expected):
        if have != want:
            return f"its {column} column says {have!r}, but its data gives {want!r}"
    return d


def _row_label(algo_id: int, names: Sequence[str]) -> str:
    return f"{names[0]} (store:{algo_id})" if names else f"store:{algo_id}"


def _check_row(raw: Sequence[Any], names: tuple[str, ...], trust: bool) -> tuple[StoredAlgorithm | BadRow, bool]:
    """A raw row (id, CHECKED_COLUMNS, PROVENANCE_COLUMNS, checksum) as a StoredAlgorithm or a BadRow.

    With ``trust``, a row whose checksum matches is not verified again. The flag returned says
    the row verified now and its checksum should be recorded.
    """
    algo_id, checked = raw[0], tuple(raw[1:11])
    provenance_values, checksum = raw[11:17], raw[17]
    try:
        provenance = _read_provenance(provenance_values)
    except ValueError as exc:
        return BadRow(algo_id, _row_label(algo_id, names), str(exc), checked), False
    digest = row_checksum(checked)
    verified: Decomposition | None = None
    if not (trust and checksum == digest):
        outcome = _verify_columns(checked)
        if isinstance(outcome, str):
            return BadRow(algo_id, _row_label(algo_id, names), outcome, checked), False
        verified = outcome
    fp, fmt, rank, fld, nnz_u, nnz_v, nnz_w, additions, stability, data = checked
    algo = StoredAlgorithm(
        id=algo_id, fingerprint=fp, names=names, format=fmt, rank=rank, field=fld,
        nnz=(nnz_u, nnz_v, nnz_w), additions=additions, stability=stability, provenance=provenance,
        created_at=str(provenance_values[4]), fmmforge_version=str(provenance_values[5]), data=data,
    )
    if verified is not None:
        algo.__dict__["decomposition"] = verified  # the cached_property: no second verification
    return algo, verified is not None and checksum != digest


class Store:
    """Algorithms on disk. Reading a store that does not exist yet reads as empty.

    ``warn`` receives one line per bad row met while reading (default: printed on stderr).
    """

    def __init__(self, home: Path | str | None = None, warn: Callable[[str], None] = print_warning) -> None:
        self.home = check_home(Path(home)) if home is not None else default_home()
        self.path = self.home / STORE_FILE
        self._warn_line = warn
        self._warned: set[int] = set()

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
            self._refuse_newer_schema(conn)
            if write:
                self._migrate(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            raise FmmforgeError(
                f"cannot use the store {self.path} ({exc}); set FMMFORGE_HOME to another directory"
            ) from None

    def _refuse_newer_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            conn.close()
            raise FmmforgeError(
                f"the store {self.path} has schema version {version}, newer than fmmforge {__version__} "
                f"knows (up to {len(MIGRATIONS)}); upgrade fmmforge, or set FMMFORGE_HOME to another directory"
            )

    @staticmethod
    def _use_wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
        """Switch a new store to WAL journaling. The switch needs the database to itself and SQLite
        does not wait for it as busy_timeout waits for a transaction: a second process creating the
        store at the same moment got "database is locked" at once (tests/test_store.py's two
        writers, 2 runs in 5 on 2026-12-03). So a locked switch is retried for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._use_wal(conn)
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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction: committed whole or rolled back."""
        conn = self._connect(write=True)
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
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

    # ------------------------------------------------------------ runs
    def run_id(self, conn: sqlite3.Connection) -> int | None:
        """The id of the open run (:func:`measurement_run`) in this store, its row made now inside the
        caller's write transaction if it has none yet; None outside a run."""
        run = _OPEN_RUN.get()
        if run is None:
            return None
        known = run.ids.get(str(self.path))
        if known is not None and conn.execute("SELECT 1 FROM runs WHERE id = ? AND command = ? AND started_at = ?",
                                              (known, run.command, run.started_at)).fetchone():
            return known
        cur = conn.execute("INSERT INTO runs (command, started_at, fmmforge_version) VALUES (?, ?, ?)",
                           (run.command, run.started_at, __version__))
        run.ids[str(self.path)] = int(cur.lastrowid)  # type: ignore[arg-type]
        return run.ids[str(self.path)]

    def runs(self) -> dict[int, tuple[str, str]]:
        """Every recorded run: id -> (command, started at); empty for a store from before runs."""
        conn = self._connect(write=False)
        if conn is None:
            return {}
        try:
            return {int(i): (str(c), str(t)) for i, c, t in conn.execute("SELECT id, command, started_at FROM runs")}
        except sqlite3.DatabaseError:
            return {}
        finally:
            conn.close()

    # ------------------------------------------------------------ tables of other floors
    def _owner_version(self, conn: sqlite3.Connection, tables: OwnedTables) -> int:
        row = conn.execute("SELECT version FROM table_owners WHERE owner = ?", (tables.owner,)).fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(tables.migrations):
            raise FmmforgeError(
                f"the store {self.path} holds {tables.owner} tables of version {version}, newer than fmmforge "
                f"{__version__} knows (up to {len(tables.migrations)}); upgrade fmmforge, or set FMMFORGE_HOME "
                "to another directory"
            )
        return version

    def _ensure(self, conn: sqlite3.Connection, tables: OwnedTables) -> None:
        """Run the owner's migrations that this store has not had yet, inside the caller's transaction."""
        for step in range(self._owner_version(conn, tables), len(tables.migrations)):
            for statement in tables.migrations[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO table_owners (owner, version) VALUES (?, ?) "
                         "ON CONFLICT(owner) DO UPDATE SET version = excluded.version", (tables.owner, step + 1))

    @contextlib.contextmanager
    def writing(self, tables: OwnedTables) -> Iterator[sqlite3.Connection]:
        """One write transaction on ``tables`` (created or upgraded first): committed whole or not at all."""
        with self._transaction() as conn:
            self._ensure(conn, tables)
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                raise FmmforgeError(f"cannot write {tables.owner} to the store {self.path} ({exc}); "
                                    "set FMMFORGE_HOME to a writable directory") from None

    @contextlib.contextmanager
    def reading(self, tables: OwnedTables) -> Iterator[sqlite3.Connection | None]:
        """A connection for reading ``tables``; None when the store or the owner's tables do not exist
        yet (nothing was written), or were written by an older fmmforge and the store is read-only."""
        conn = self._connect(write=False)
        if conn is None:
            yield None
            return
        try:
            has_owners = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'table_owners'").fetchone()
            current = has_owners is not None and self._owner_version(conn, tables) == len(tables.migrations)
            if not current:
                conn.close()
                try:
                    with self.writing(tables):
                        pass
                except FmmforgeError:
                    yield None  # a read-only store without these tables: nothing of them to read
                    return
                conn = self._connect(write=False)
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                raise FmmforgeError(f"cannot read {tables.owner} from the store {self.path} ({exc})") from None
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _select(version: int) -> str:
        """The raw-row query of _check_row; stores older than the checksum column read it as NULL."""
        checksum = "verified_sha256" if version >= 3 else "NULL"
        return f"SELECT id, {', '.join(CHECKED_COLUMNS + PROVENANCE_COLUMNS)}, {checksum} FROM algorithms"

    # ------------------------------------------------------------ writing
    def add(
        self,
        d: Decomposition,
        provenance: Provenance,
        name: str | None = None,
    ) -> AddResult:
        """Verify, then insert (or find the same scheme already stored) and attach ``name``.

        A stored row with the same fingerprint that no longer verifies is replaced (same id).
        """
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
        checked = (d.fingerprint, summary["format"], d.rank, d.field, *d.nnz, d.naive_additions,
                   summary["stability"], dumps_json(d))
        row = (*checked, provenance.source, provenance.engine, provenance.seed,
               json.dumps(provenance.params, sort_keys=True), now, __version__, row_checksum(checked))
        columns = ", ".join(CHECKED_COLUMNS + PROVENANCE_COLUMNS) + ", verified_sha256"
        with self._transaction() as conn:
            existing = conn.execute(self._select(len(MIGRATIONS)) + " WHERE fingerprint = ?",
                                    (d.fingerprint,)).fetchone()
            replaced = existing is not None and isinstance(_check_row(existing, (), trust=True)[0], BadRow)
            if existing is None:
                conn.execute(f"INSERT INTO algorithms ({columns}) VALUES ({', '.join('?' * len(row))})", row)
            elif replaced:
                assignments = ", ".join(f"{c} = ?" for c in columns.split(", "))
                conn.execute(f"UPDATE algorithms SET {assignments} WHERE id = ?", (*row, existing[0]))
            algo_id = conn.execute("SELECT id FROM algorithms WHERE fingerprint = ?", (d.fingerprint,)).fetchone()[0]
            if name is not None:
                self._attach_name(conn, name, d.fingerprint, now)
        return AddResult(int(algo_id), d.fingerprint, existing is None or replaced, name, replaced)

    @staticmethod
    def _attach_name(conn: sqlite3.Connection, name: str, fingerprint: str, now: str) -> None:
        owner = conn.execute("SELECT fingerprint FROM names WHERE name = ?", (name,)).fetchone()
        if owner is not None and owner[0] != fingerprint:
            raise FmmforgeError(f"name {name!r} is already used by another stored algorithm; choose another name")
        if owner is None:
            conn.execute("INSERT INTO names (name, fingerprint, created_at) VALUES (?,?,?)", (name, fingerprint, now))

    def _record_verdicts(self, raws: list[Sequence[Any]]) -> None:
        """Store the checksum of rows that verified now, so the next read need not verify them.

        Best effort: a store this process cannot write (or that is busy) just verifies again next time.
        """
        try:
            conn = self._connect(write=True)
        except FmmforgeError:
            return
        assert conn is not None
        try:
            conn.execute("PRAGMA busy_timeout = 2000")
            conn.execute("BEGIN IMMEDIATE")
            for raw in raws:
                checked = tuple(raw[1:11])
                conn.execute(f"UPDATE algorithms SET verified_sha256 = ? WHERE id = ? AND {_UNCHANGED}",
                             (row_checksum(checked), raw[0], *checked))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    # ------------------------------------------------------------ reading
    def _read(self, where: str = "", args: tuple = (), trust: bool = True) -> tuple[list[StoredAlgorithm], list[BadRow]]:
        """Rows that read back as valid schemes, and those that do not."""
        conn = self._connect(write=False)
        if conn is None:
            return [], []
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < 1:
                return [], []
            names: dict[Any, list[str]] = {}
            for nm, fp in conn.execute("SELECT name, fingerprint FROM names ORDER BY created_at, name"):
                names.setdefault(fp, []).append(nm)
            raws = conn.execute(self._select(version) + " " + where + " ORDER BY id", args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise FmmforgeError(f"cannot read the store {self.path} ({exc}); set FMMFORGE_HOME to another directory") from None
        finally:
            conn.close()
        good: list[StoredAlgorithm] = []
        bad: list[BadRow] = []
        fresh = []
        for raw in raws:
            outcome, record = _check_row(raw, tuple(names.get(raw[1], ())), trust)
            if isinstance(outcome, BadRow):
                bad.append(outcome)
            else:
                good.append(outcome)
            if record:
                fresh.append(raw)
        if fresh:
            self._record_verdicts(fresh)
        return good, bad

    def _rows(self, where: str = "", args: tuple = ()) -> list[StoredAlgorithm]:
        """The valid rows; each bad one is skipped with one warning line."""
        good, bad = self._read(where, args)
        self._warn(bad)
        return good

    def _warn(self, bad: list[BadRow]) -> None:
        for row in bad:
            if row.id not in self._warned:
                self._warned.add(row.id)
                self._warn_line(f"skipping stored algorithm {row.label}: {row.reason}; "
                                "run `fmmforge store check`")

    def all(self) -> list[StoredAlgorithm]:
        return self._rows()

    def __iter__(self) -> Iterator[StoredAlgorithm]:
        return iter(self.all())

    def __len__(self) -> int:
        """The rows stored, counted by SQLite without reading them; a row that would not read back
        as a valid scheme counts too (iterating skips it with a warning, `fmmforge store check` finds it)."""
        counted = self._query("SELECT COUNT(*) FROM algorithms")
        return int(counted[0][0]) if counted else 0

    def _query(self, sql: str, args: tuple = ()) -> list[Any]:
        """The rows of one read-only query on the algorithms' tables; none without a store yet."""
        conn = self._connect(write=False)
        if conn is None:
            return []
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
                return []
            return conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise FmmforgeError(f"cannot read the store {self.path} ({exc}); set FMMFORGE_HOME to another directory") from None
        finally:
            conn.close()

    def names(self) -> list[str]:
        """Every name given to a stored algorithm (for suggestions; not checked)."""
        conn = self._connect(write=False)
        if conn is None:
            return []
        try:
            return [str(r[0]) for r in conn.execute("SELECT name FROM names ORDER BY name")]
        except sqlite3.DatabaseError:
            return []
        finally:
            conn.close()

    def find(self, name: str) -> StoredAlgorithm | None:
        """By name, by ``store:ID``, or by a fingerprint (or a unique prefix of 8+ characters).

        A match that does not read back as a valid scheme raises FmmforgeError saying how to repair it.
        """
        if name.startswith("store:"):
            if not name[6:].isdigit():
                return None
            return self._only(*self._read("WHERE id = ?", (int(name[6:]),)), name)
        found = self._only(*self._read("WHERE fingerprint IN (SELECT fingerprint FROM names WHERE name = ?)",
                                       (name,)), name)
        if found is None and name in self.names():
            raise FmmforgeError(
                f"stored algorithm {name!r} names a row that is missing or corrupted; "
                "run `fmmforge store check --repair`, then import it again"
            )
        if found is None and HEX_PREFIX.fullmatch(name) and len(name) >= MIN_PREFIX:
            found = self._only(*self._read("WHERE fingerprint LIKE ?", (name + "%",)), name)
        return found

    @staticmethod
    def _only(good: list[StoredAlgorithm], bad: list[BadRow], name: str) -> StoredAlgorithm | None:
        if len(good) + len(bad) > 1:
            raise FmmforgeError(f"fingerprint prefix {name!r} is ambiguous; give more characters")
        if bad:
            raise FmmforgeError(
                f"stored algorithm {bad[0].label} is unusable: {bad[0].reason}; "
                "run `fmmforge store check --repair`, then import it again"
            )
        return good[0] if good else None

    def label_of(self, fingerprint: str) -> str | None:
        """The label (first name, else store:ID) of the stored algorithm with this exact
        fingerprint, reading only its rows; None when the store has none."""
        rows = self._rows("WHERE fingerprint = ?", (fingerprint,))
        return min(rows, key=lambda r: r.id).label if rows else None

    def best(self, format: str, field: str) -> StoredAlgorithm | None:
        rows = self._rows("WHERE format = ? AND field = ?", (format, field))
        return min(rows, key=lambda r: (r.rank, r.id)) if rows else None

    def best_ranks(self) -> dict[tuple[str, str], StoredAlgorithm]:
        """The best valid row of every (format, field) in the store, reading only the rows of each
        group's least rank (the index on format, field, rank); a group whose least-rank rows all
        fail their check falls back to :meth:`best` on that group alone."""
        rows = self._rows("WHERE (format, field, rank) IN "
                          "(SELECT format, field, MIN(rank) FROM algorithms GROUP BY format, field)")
        best: dict[tuple[str, str], StoredAlgorithm] = {}
        for row in rows:
            best.setdefault((row.format, row.field), row)
        for fmt, field in self._query("SELECT DISTINCT format, field FROM algorithms"):
            if (fmt, field) not in best:
                found = self.best(fmt, field)
                if found is not None:
                    best[(fmt, field)] = found
        return best

    # ------------------------------------------------------------ checking
    def check(self) -> tuple[list[StoredAlgorithm], list[BadRow]]:
        """Verify every row again, cached verdicts or not: (valid rows, bad rows)."""
        return self._read(trust=False)

    def repair(self) -> list[BadRow]:
        """Remove the rows that do not verify (and names left pointing at nothing); returns them.

        A row changed since it was checked is left alone. Importing the scheme again stores it anew.
        """
        _, bad = self.check()
        if not bad:
            return []
        removed = []
        with self._transaction() as conn:
            for row in bad:
                cur = conn.execute(f"DELETE FROM algorithms WHERE id = ? AND {_UNCHANGED}", (row.id, *row.checked))
                if cur.rowcount:
                    removed.append(row)
            conn.execute("DELETE FROM names WHERE fingerprint NOT IN (SELECT fingerprint FROM algorithms)")
        return removed
