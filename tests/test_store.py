"""The SQLite store: verified inserts, de-duplication, provenance, names, concurrency."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fmmforge.core import transforms
from fmmforge.core.builtins import builtin
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.core.store import Provenance, Store

STRASSEN = builtin("strassen")


def sandwiched(k: int) -> Decomposition:
    """A family of distinct valid <2,2,2;7> schemes."""
    return transforms.sandwich(STRASSEN, [[1, k], [0, 1]], [[1, 0], [k % 3, 1]], [[1, 0], [0, 1]])


def test_insert_is_verified_and_deduplicated(_isolated_store):
    store = Store()
    assert store.all() == [] and not store.path.exists()  # reading never creates the store
    first = store.add(STRASSEN, Provenance("test", engine="flip", seed=7, params={"budget": "5s"}))
    again = store.add(transforms.flip_signs(STRASSEN, [-1] * 7, [1] * 7), Provenance("test"))
    assert first.inserted and not again.inserted and again.id == first.id
    (row,) = store.all()
    assert row.provenance == Provenance("test", "flip", 7, {"budget": "5s"})
    assert row.rank == 7 and row.format == "<2,2,2>" and row.field == "Z" and row.stability == 12
    assert row.decomposition == STRASSEN and row.created_at and row.fmmforge_version


def test_invalid_scheme_is_never_stored():
    U, V, W = (np.array(x) for x in STRASSEN.numerators())
    W[0, 0] = 0
    bad = Decomposition.unchecked(U, V, W, (2, 2, 2))
    store = Store()
    with pytest.raises(InvalidDecompositionError):
        store.add(bad, Provenance("test"))
    assert store.all() == []


def test_names_resolve_everywhere():
    store = Store()
    store.add(sandwiched(2), Provenance("test"), name="my-strassen")
    assert resolve("my-strassen") == sandwiched(2)
    assert resolve("store:1") == sandwiched(2)
    assert resolve(sandwiched(2).fingerprint[:10]) == sandwiched(2)
    with pytest.raises(FmmforgeError, match="already used"):
        store.add(sandwiched(3), Provenance("test"), name="my-strassen")
    with pytest.raises(FmmforgeError, match="built-in catalogue"):
        store.add(sandwiched(3), Provenance("test"), name="laderman")
    with pytest.raises(FmmforgeError, match="not usable"):
        store.add(sandwiched(3), Provenance("test"), name="bad name!")
    assert len(store) == 1  # the failed inserts left nothing behind


def test_unwritable_store_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FMMFORGE_HOME", str(blocker / "home"))
    with pytest.raises(FmmforgeError, match="FMMFORGE_HOME"):
        Store().add(STRASSEN, Provenance("test"))


def test_corrupt_store_file_is_a_clear_error(_isolated_store):
    _isolated_store.mkdir(parents=True)
    (_isolated_store / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FmmforgeError, match="cannot"):
        Store().add(STRASSEN, Provenance("test"))


WRITER = textwrap.dedent(
    """
    import sys
    from fmmforge.core import transforms
    from fmmforge.core.builtins import builtin
    from fmmforge.core.store import Provenance, Store
    s = builtin("strassen")
    store = Store()
    for k in range(int(sys.argv[1]), int(sys.argv[2])):
        d = transforms.sandwich(s, [[1, k], [0, 1]], [[1, 0], [k % 3, 1]], [[1, 0], [0, 1]])
        store.add(d, Provenance("writer", seed=k))
    """
)


@pytest.mark.slow
def test_two_concurrent_writers_lose_nothing(_isolated_store):
    env = dict(os.environ, FMMFORGE_HOME=str(_isolated_store))
    # overlapping ranges: both processes insert k = 20..39
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(a), str(b)], env=env, stderr=subprocess.PIPE)
        for a, b in ((0, 40), (20, 60))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    expected = {sandwiched(k).fingerprint for k in range(60)}
    rows = Store().all()
    assert {r.fingerprint for r in rows} == expected
    assert len(rows) == len(expected)
    with sqlite3.connect(Store().path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_tables_of_other_floors_are_created_by_their_owner_and_versioned(tmp_path):
    import sqlite3

    from fmmforge.core.errors import FmmforgeError
    from fmmforge.core.store import OwnedTables

    store = Store(tmp_path / "home")
    v1 = OwnedTables("test.notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",))
    with store.reading(v1) as conn:
        assert conn is None  # no store yet: nothing to read
    with store.writing(v1) as conn:
        conn.execute("INSERT INTO notes (text) VALUES ('one')")
    v2 = OwnedTables("test.notes", (*v1.migrations, "ALTER TABLE notes ADD COLUMN stars INTEGER"))
    with store.reading(v2) as conn:  # reading upgrades the owner's tables first
        assert conn.execute("SELECT text, stars FROM notes").fetchall() == [("one", None)]
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("SELECT version FROM table_owners WHERE owner = 'test.notes'").fetchone() == (2,)
    with pytest.raises(FmmforgeError, match="newer than fmmforge"):
        with store.reading(v1):  # this fmmforge knows version 1 only
            pass
    with pytest.raises(FmmforgeError, match="cannot write test.notes"):
        with store.writing(v2) as conn:
            conn.execute("INSERT INTO no_such_table VALUES (1)")


def test_records_written_before_codegen_owned_their_table_still_read(tmp_path):
    """Stores of schema 3 got the records table from the store's own step 2; they keep their rows."""
    import sqlite3

    from fmmforge.codegen.records import TABLES, query_records
    from fmmforge.core.store import MIGRATIONS

    home = tmp_path / "home"
    home.mkdir()
    ddl = TABLES.migrations[0]
    with sqlite3.connect(home / "store.sqlite") as raw:
        for statement in (MIGRATIONS[0] + ";" + ddl + ";" + MIGRATIONS[2]).split(";"):
            if statement.strip():
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 3")
        raw.execute("INSERT INTO records (device, machine, algorithm, fingerprint, plan, plan_key, backend, levels, "
                    "m, k, n, dtype, threads, median_s, iqr_s, baseline_median_s, baseline_iqr_s, speedup, "
                    "created_at, fmmforge_version) VALUES ('cpu', 'm', 'strassen', 'f', '{}', 'k', 'torch', 1, "
                    "8, 8, 8, 'float32', 1, 1.0, 0.1, 1.1, 0.1, 1.1, '2026-01-01', '0.1.0')")
    rows = query_records(Store(home))
    assert [(r.algorithm, r.speedup) for r in rows] == [("strassen", 1.1)]


def test_len_counts_the_rows_without_reading_them(monkeypatch):
    """len(store) is one COUNT query: no row is decoded or verified (it read every row before)."""
    from fmmforge.core import store as store_module

    store = Store()
    assert len(store) == 0  # no store file yet
    for k in (2, 3, 4):
        store.add(sandwiched(k), Provenance("test"))
    read = []
    real = store_module._check_row
    monkeypatch.setattr(store_module, "_check_row", lambda *a: read.append(a) or real(*a))
    assert len(Store()) == 3
    assert read == []
    assert len(Store().all()) == 3 and len(read) == 3  # the counting hook sees what a read decodes
