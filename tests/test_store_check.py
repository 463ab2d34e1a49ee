"""Rows read back from the store are verified (verdicts cached by checksum); bad rows are
reported, skipped, listed by `fmmforge store check` and removed by `--repair`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fmmforge.core.builtins import builtin
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats.json import dumps_json
from fmmforge.core.paths import default_home
from fmmforge.core.store import MIGRATIONS, Provenance, Store, row_checksum

STRASSEN = builtin("strassen")
LADERMAN = builtin("laderman")


def broken_strassen_json() -> str:
    """Readable JSON of a <2,2,2;7> scheme that is wrong in one entry."""
    U, V, W = (np.array(x) for x in STRASSEN.numerators())
    W[0, 0] = 0
    return dumps_json(Decomposition.unchecked(U, V, W, (2, 2, 2)))


def sql(statement: str, *args: object) -> list[tuple]:
    with sqlite3.connect(Store().path) as conn:
        rows = conn.execute(statement, args).fetchall()
    conn.close()
    return rows


def stored_file(tmp_path: Path) -> Path:
    """Strassen in fmmforge's json format, to import."""
    path = tmp_path / "strassen.json"
    path.write_text(dumps_json(STRASSEN))
    return path


def warning_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


@pytest.mark.parametrize("column,value,reason", [
    ("data", "{not json", "its data is unreadable"),
    ("data", b"\x00\x01", "its data is not text"),
    ("data", "BROKEN", "its scheme is invalid"),
    ("rank", 5, "its rank column says 5, but its data gives 7"),
    ("fingerprint", "0" * 24, "its fingerprint column says"),
    ("params", "{oops", "its provenance params are not JSON"),
    ("params", "[1, 2]", "its provenance params are not a JSON object"),
])
def test_a_bad_row_is_skipped_with_one_warning_and_listed_by_store_check(cli, column, value, reason):
    store = Store()
    store.add(STRASSEN, Provenance("test"), name="mine")
    store.add(LADERMAN, Provenance("test"))
    if column == "data" and value == "BROKEN":
        value = broken_strassen_json()
    sql(f"UPDATE algorithms SET {column} = ? WHERE id = 1", value)
    label = "store:1" if column == "fingerprint" else "mine (store:1)"  # names point at fingerprints
    code, out, err = cli("list", "--shape", "2,2,2")
    assert code == 0 and "mine" not in out and "strassen-winograd" in out
    (line,) = warning_lines(err)
    assert label in line and reason in line and "fmmforge store check" in line
    assert [r.label for r in Store().all()] == ["store:2"]
    code, out, _ = cli("store", "check")
    assert code == 1 and f"BAD  {label}: {reason}" in out and "1 healthy, 1 bad" in out
    for name in ("mine", "store:1"):
        code, _, err = cli("show", name)
        assert code == 2 and "store check --repair" in err and len(err.strip().splitlines()) == 1


def test_repair_removes_bad_rows_and_reimport_stores_them_again(cli, tmp_path):
    Store().add(STRASSEN, Provenance("test"), name="mine")
    Store().add(LADERMAN, Provenance("test"), name="lad")
    sql("UPDATE algorithms SET data = ? WHERE id = 1", broken_strassen_json())
    code, out, _ = cli("store", "check", "--repair")
    assert code == 0 and "removed mine (store:1)" in out and "removed 1 bad rows" in out
    assert sql("SELECT name FROM names") == [("lad",)]  # the removed row's name went with it
    code, out, err = cli("store", "check")
    assert code == 0 and "1 stored algorithms checked" in out and "all healthy" in out and err == ""
    code, out, _ = cli("import", stored_file(tmp_path), "--name", "mine")
    assert code == 0 and "added: mine" in out
    assert {r.label for r in Store().all()} == {"mine", "lad"}


def test_reimporting_a_scheme_whose_row_is_bad_replaces_the_row(cli, tmp_path):
    path = stored_file(tmp_path)
    assert cli("import", path, "--name", "mine")[0] == 0
    sql("UPDATE algorithms SET data = ? WHERE id = 1", broken_strassen_json())
    code, out, _ = cli("import", path)
    assert code == 0 and "added" in out and "already stored" not in out
    (row,) = Store().all()
    assert row.id == 1 and row.names == ("mine",) and row.decomposition == STRASSEN
    code, out, _ = cli("import", path)
    assert code == 0 and "already stored" in out
    assert cli("store", "check")[0] == 0


def test_verdicts_are_cached_by_checksum(monkeypatch):
    store = Store()
    store.add(STRASSEN, Provenance("test"))
    calls = []
    real_verify = Decomposition.verify
    monkeypatch.setattr(Decomposition, "verify", lambda self: calls.append(1) or real_verify(self))
    assert len(Store().all()) == 1 and calls == []  # the verdict recorded at insert is trusted
    sql("UPDATE algorithms SET verified_sha256 = 'stale'")
    assert len(Store().all()) == 1 and len(calls) == 1  # verified again, and the verdict recorded
    ((checksum, *checked),) = sql("SELECT verified_sha256, fingerprint, format, rank, field, nnz_u, nnz_v,"
                                  " nnz_w, additions, stability, data FROM algorithms")
    assert checksum == row_checksum(checked)
    assert len(Store().all()) == 1 and len(calls) == 1
    _, bad = Store().check()  # `store check` verifies every row whatever the cache says
    assert bad == [] and len(calls) == 2


def test_a_store_from_before_the_checksum_column_is_read_and_upgraded():
    Store().add(STRASSEN, Provenance("test"))
    sql("ALTER TABLE algorithms DROP COLUMN verified_sha256")
    sql("PRAGMA user_version = 2")
    (row,) = Store().all()
    assert row.decomposition == STRASSEN
    assert sql("PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert sql("SELECT verified_sha256 IS NOT NULL FROM algorithms") == [(1,)]


def test_a_store_with_a_newer_schema_is_refused(cli, tmp_path):
    Store().add(STRASSEN, Provenance("test"))
    sql("PRAGMA user_version = 99")
    for command in (["list"], ["import", stored_file(tmp_path)], ["store", "check"], ["show", "store:1"]):
        code, _, err = cli(*command)
        assert code == 2, command
        (line,) = err.strip().splitlines()
        assert "schema version 99" in line and "upgrade fmmforge" in line and "FMMFORGE_HOME" in line
    with pytest.raises(FmmforgeError, match="newer than"):
        Store().add(LADERMAN, Provenance("test"))
    assert sql("PRAGMA user_version") == [(99,)] and len(sql("SELECT id FROM algorithms")) == 1


@pytest.mark.parametrize("where", ["home", "parent"])
def test_a_home_that_is_not_a_directory_is_refused_by_every_command_using_it(cli, tmp_path, monkeypatch, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker if where == "home" else blocker / "home"
    monkeypatch.setenv("FMMFORGE_HOME", str(home))
    with pytest.raises(FmmforgeError, match="FMMFORGE_HOME"):
        default_home()
    for command in (["list"], ["store", "check"], ["import", stored_file(tmp_path)],
                    ["search", "2x2x2", "--budget", "1s", "--workers", "1"],
                    ["codegen", "strassen", "--backend", "numpy"], ["devices"]):
        code, _, err = cli(*command)
        assert code == 2, (command, err)
        (line,) = err.strip().splitlines()
        assert line.startswith("error: the fmmforge home") and "set FMMFORGE_HOME to a directory" in line
    assert blocker.read_text() == ""


def test_store_check_on_an_empty_store_is_healthy(cli):
    code, out, _ = cli("store", "check")
    assert code == 0 and "0 stored algorithms checked" in out and not Store().path.exists()
