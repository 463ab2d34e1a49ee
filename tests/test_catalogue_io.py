"""The public catalogue's JSON, formula lines, content sniffing, `import DIR` and `ranks` (issue 32).

Every scheme here is built by the tests themselves (no third-party files checked in)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error

from fmmforge.core import alphatensor, transforms
from fmmforge.core.builtins import builtin, naive
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats import encode, read_data, read_file, sniff_format
from fmmforge.core.formats.catalogue_json import dumps_catalogue, loads_catalogue
from fmmforge.core.formats.formula_lines import loads_formulas
from fmmforge.core.store import Provenance, Store

# Strassen by hand, in the catalogue's own convention: u over A row-major, v over B row-major,
# w over C TRANSPOSED (index j·n + i for C[i][j]: c11, c21, c12, c22).
STRASSEN_U = [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]]
STRASSEN_V = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
# c11 = m1 + m4 - m5 + m7, c12 = m3 + m5, c21 = m2 + m4, c22 = m1 - m2 + m3 + m6
STRASSEN_W_T = [[1, 0, 0, 1], [0, 1, 0, -1], [0, 0, 1, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]


def strassen_catalogue(**extra: object) -> dict:
    return {"n": [2, 2, 2], "m": 7, "z2": False, "u": STRASSEN_U, "v": STRASSEN_V, "w": STRASSEN_W_T, **extra}


def read_text(text: str, fmt: str | None = None) -> Decomposition:
    [(_label, d)] = read_data(text.encode(), fmt, source="t", label="t")
    return d


# ---------------------------------------------------------------------- catalogue JSON
def test_hand_written_strassen_reads_with_c_transposed() -> None:
    d = read_text(json.dumps(strassen_catalogue()))
    assert d.verify().valid and d.format == (2, 2, 2) and d.field == "Z"
    assert d == builtin("strassen")
    # c12 = m3 + m5 is row 1 of fmmforge's W (C row-major), position 2 of the catalogue's w lists
    assert [int(x) for x in d.numerators()[2][1]] == [0, 0, 1, 0, 1, 0, 0]


def test_reading_w_without_transposing_is_caught() -> None:
    # the same lists with w taken as C row-major would swap c12 and c21: no longer Strassen
    swapped = [[row[0], row[2], row[1], row[3]] for row in STRASSEN_W_T]
    d = read_text(json.dumps(strassen_catalogue(w=swapped)))
    assert not d.verify().valid


def test_rectangular_round_trip_keeps_the_transposition() -> None:
    d = alphatensor.load((3, 4, 5))
    text = dumps_catalogue(d)
    doc = json.loads(text)
    assert doc["n"] == [3, 4, 5] and doc["m"] == d.rank and doc["z2"] is False
    W = d.numerators()[2]
    assert doc["w"][0][1 * 3 + 2] == int(W[2 * 5 + 1, 0])  # C[2][1] (0-based) at j·n + i
    back = loads_catalogue(text)
    assert back == d and back.verify().valid


@pytest.mark.parametrize("d", [
    pytest.param(builtin("laderman"), id="integer"),
    pytest.param(alphatensor.load((3, 3, 3), "Z2"), id="mod-2"),
    pytest.param(alphatensor.load((3, 4, 11)), id="rational"),
])
def test_round_trips(d: Decomposition, tmp_path: Path) -> None:
    path = tmp_path / "scheme.json"
    path.write_bytes(encode(d, "catalogue"))
    doc = json.loads(path.read_text())
    assert doc["z2"] is (d.field == "Z2")
    [(_label, back)] = read_file(path)  # recognised from its keys
    assert back == d and back.field == d.field and back.verify().valid
    assert [list(x.ravel()) for x in back.factors()] == [list(x.ravel()) for x in d.factors()]
    if not d.is_integral():
        assert any(isinstance(x, str) and "/" in x for row in doc["u"] + doc["v"] + doc["w"] for x in row)


def test_written_formula_lines_are_the_scheme() -> None:
    doc = json.loads(dumps_catalogue(builtin("strassen")))
    assert doc["multiplications"][0] == "m1 = (a11 + a22) * (b11 + b22)"
    assert "c11 = m1 + m4 - m5 + m7" in doc["elements"]
    assert loads_formulas("\n".join(doc["multiplications"] + doc["elements"])) == builtin("strassen")


def test_rational_strings() -> None:
    d = Decomposition.create(np.array([[Fraction(1, 2)]], dtype=object), np.array([[2]]), np.array([[1]]), (1, 1, 1))
    doc = {"n": [1, 1, 1], "m": 1, "u": [["1/2"]], "v": [[2]], "w": [["1"]]}
    assert read_text(json.dumps(doc)) == d


# ---------------------------------------------------------------------- formula lines
SHOW_STRASSEN = """M1 = (A11 + A22)·(B11 + B22)
M2 = (A21 + A22)·B11
M3 = A11·(B12 - B22)
M4 = A22·(-B11 + B21)
M5 = (A11 + A12)·B22
M6 = (-A11 + A21)·(B11 + B12)
M7 = (A12 - A22)·(B21 + B22)
C11 = M1 + M4 - M5 + M7
C12 = M3 + M5
C21 = M2 + M4
C22 = M1 - M2 + M3 + M6
"""


def test_show_notation_and_catalogue_notation(cli) -> None:
    code, out, _ = cli("show", "strassen")
    shown = "\n".join(line for line in out.splitlines() if line[:1] in "MC")
    assert read_text(shown) == builtin("strassen")
    assert read_text(SHOW_STRASSEN) == builtin("strassen")
    lower = SHOW_STRASSEN.lower().replace("·", " * ")
    assert read_text(lower) == builtin("strassen")


def test_rational_coefficients_are_exact() -> None:
    # <1,1,1> as (A11/2)·(2·B11) and 1/2·A11 written three ways
    for product in ("(A11/2)·(2*B11)", "(1/2*A11)*(2 B11)", "((1/2)·A11)·(B11 + B11)", "(0.5a11) * (2*b11)"):
        d = read_text(f"M1 = {product}\nC11 = M1")
        assert d.verify().valid and d.U[0, 0] == Fraction(1, 2), product


def test_shape_is_inferred_from_the_indices() -> None:
    d = read_text("\n".join(f"M{k + 1} = A1{k + 1}·B{k + 1}1" for k in range(3)) + "\nC11 = M1 + M2 + M3")
    assert d.format == (1, 3, 1) and d.verify().valid


def test_code_in_formulas_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"M1 = (__import__('os').system('touch {marker}'))·(B11)\nC11 = M1"
    with pytest.raises(FmmforgeError, match="cannot read"):
        read_text(text)
    assert not marker.exists()


@pytest.mark.parametrize("text, words", [
    ("M1 = (A11 + B11)·(B11)\nC11 = M1", "A entries"),
    ("M1 = A11·B11 + A11·B11\nC11 = M1", "sum of products"),
    ("M1 = A11·B11·B11\nC11 = M1", "more than two"),
    ("M1 = A11·B11\nC11 = M2", "M2 is used"),
    ("M2 = A11·B11\nC11 = M2", "M1 has no line"),
    ("M1 = (A11·B11\nC11 = M1", "parenthesis"),
    ("M1 = A11/0·B11\nC11 = M1", "division by zero"),
    ("M1 = A111·B11\nC11 = M1", "ambiguous"),
    ("M1 = A11·B11\nC11 = M1\nC11 = M1", "defined twice"),
    ("M1 = 99999999999999999999999*A11·B11\nC11 = M1", "too large"),
    ("M1 = A11·B11\nC11 = " + "4611686018427387903*" * 20 + "M1", r"beyond 2\^256"),
])
def test_malformed_formulas_are_one_line(text: str, words: str) -> None:
    with pytest.raises(FmmforgeError, match=words) as info:
        read_text(text)
    assert "\n" not in str(info.value) and "t:" in str(info.value)


# ---------------------------------------------------------------------- sniffing
def test_content_sniffing(tmp_path: Path) -> None:
    d = builtin("strassen")
    names = {"json": "a.json", "catalogue": "b.json", "fastmm": "c.txt", "formulas": "d.txt", "npz": "e.bin"}
    for fmt, name in names.items():
        path = tmp_path / name
        path.write_bytes(encode(d, fmt))
        expected = "json" if fmt == "catalogue" else fmt  # both JSON: told apart by their keys when read
        assert sniff_format(path.read_bytes()) == expected
        [(_label, back)] = read_file(path)
        assert back == d, fmt
    # a catalogue file under a misleading name is still read by its content
    (tmp_path / "f.npz").write_bytes(encode(d, "catalogue"))
    assert read_file(tmp_path / "f.npz")[0][1] == d


def test_verify_and_import_sniff_the_content(tmp_path: Path, cli) -> None:
    path = tmp_path / "scheme"  # no ending: was read as fastmm
    path.write_text(json.dumps(strassen_catalogue()))
    code, out, _ = cli("verify", path)
    assert code == 0 and "valid" in out
    code, out, _ = cli("import", path)
    assert code == 0 and "added" in out


# ---------------------------------------------------------------------- hostile input through the CLI
@pytest.mark.parametrize("content, words", [
    ('{"n": [2, 2, 2], "u": [], "v": []}', "missing"),
    ('{"n": [2, 2], "m": 1, "u": [], "v": [], "w": []}', "three positive"),
    ('{"n": [2, 2, 2], "m": 7, "z2": "yes", "u": [], "v": [], "w": []}', "z2"),
    ('{"n": [2, 2, 2], "m": 2, "u": [[1, 0, 0, 1]], "v": [[1, 0, 0, 1]], "w": [[1, 0, 0, 1]]}', "rank"),
    ('{"n": [2, 2, 2], "m": 1, "u": [[1, 0, 0]], "v": [[1, 0, 0, 1]], "w": [[1, 0, 0, 1]]}', "u[0]"),
    ('{"n": [1, 1, 1], "m": 1, "u": [["x"]], "v": [[1]], "w": [[1]]}', "u[0][0]"),
    ('{"n": [1, 1, 1], "m": 1, "u": [["1/0"]], "v": [[1]], "w": [[1]]}', "zero"),
])
def test_malformed_catalogue_json_is_one_line_exit_2(content: str, words: str, tmp_path: Path, cli) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    for command in ("verify", "import"):
        code, out, err = cli(command, path)
        assert code == 2 and out == ""
        one_error(err, words)
    assert Store().all() == []


def test_readable_but_invalid_exits_1(tmp_path: Path, cli) -> None:
    doc = strassen_catalogue()
    doc["w"] = [row[:] for row in STRASSEN_W_T]
    doc["w"][0][0] = 0  # m1 no longer feeds c11
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    code, out, _ = cli("verify", path)
    assert code == 1 and "INVALID" in out and "C11" in out
    code, _out, err = cli("import", path)  # readable but invalid: exit 1, one line, nothing stored
    assert code == 1 and Store().all() == []
    one_error(err, "not a valid scheme", "nothing imported")


# ---------------------------------------------------------------------- import DIR
def test_import_a_folder(tmp_path: Path, cli) -> None:
    folder = tmp_path / "catalogue"
    (folder / "sub").mkdir(parents=True)
    (folder / "strassen.json").write_text(json.dumps(strassen_catalogue()))
    (folder / "sub" / "laderman.txt").write_bytes(encode(builtin("laderman"), "formulas"))
    (folder / "naive.fastmm").write_bytes(encode(naive(2, 2, 3), "fastmm"))
    (folder / "again.json").write_bytes(encode(builtin("strassen"), "json"))  # the same scheme, fmmforge's json
    bad = strassen_catalogue()
    bad["u"] = [row[:] for row in STRASSEN_U]
    bad["u"][2] = [0, 1, 0, 0]  # m3 = a12·(b12 - b22)
    (folder / "bad.json").write_text(json.dumps(bad))
    (folder / "README.md").write_text("# some notes\nnot a scheme\n")
    (folder / ".hidden").write_text("ignored")
    code, out, _ = cli("import", folder)
    assert code == 1
    assert "6 files: 3 imported, 1 already known, 1 invalid, 1 unsupported" in out
    assert "INVALID      bad.json" in out and "tensor entry" in out
    assert "unsupported" in out and "README.md" in out
    stored = Store().all()
    assert sorted((a.format, a.rank) for a in stored) == [("<2,2,2>", 7), ("<2,2,3>", 12), ("<3,3,3>", 23)]
    code, out, _ = cli("import", folder)  # again: everything already known
    assert "0 imported, 4 already known" in out


def test_import_an_empty_folder_is_one_line(tmp_path: Path, cli) -> None:
    code, out, err = cli("import", tmp_path)
    assert code == 2
    one_error(err, "no files")


# ---------------------------------------------------------------------- ranks
def _ranks_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0].startswith("<"):
            rows[cells[0]] = cells[1:]
    return rows


def test_ranks_beside_the_best_known(cli) -> None:
    store = Store()
    store.add(builtin("strassen"), Provenance(source="test"))
    store.add(naive(2, 2, 3), Provenance(source="test"))
    store.add(transforms.transpose(naive(2, 3, 2)), Provenance(source="test"))  # <2,3,2>: counts for <2,2,3>
    store.add(alphatensor.load((4, 4, 4), "Z2"), Provenance(source="test"))
    code, out, _ = cli("ranks")
    assert code == 0
    rows = _ranks_rows(out)
    # format: naive, store Z, known Z, store Z2, known Z2, open
    assert rows["<2,2,2>"] == ["8", "7", "7", "7", "7", "-"]  # an integer scheme holds mod 2 too
    assert rows["<2,2,3>"] == ["12", "12", "11", "12", "11", "Z Z2"]
    assert rows["<4,4,4>"] == ["64", "-", "49", "47", "47", "Z"]
    assert rows["<2,3,6>"] == ["36", "-", "-", "-", "-", "-"]  # not in the table: no claim
    assert rows["<6,6,6>"][1:5] == ["-", "153", "-", "153"]
    assert len(rows) == 35  # every n <= m <= p from 2 to 6


def test_best_ranks_skips_a_damaged_best_row(cli) -> None:
    store = Store()
    store.add(naive(2, 2, 2), Provenance(source="test"))
    res = store.add(builtin("strassen"), Provenance(source="test"))
    import sqlite3

    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE algorithms SET rank = 6 WHERE id = ?", (res.id,))
    best = Store(warn=lambda _line: None).best_ranks()
    assert best[("<2,2,2>", "Z")].rank == 8


def test_verify_speed_script_runs_small() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "verify_speed.py"
    spec = importlib.util.spec_from_file_location("bench_verify_speed", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    rows = module.main(["--scheme", "strassen*naive:1,1,2", "--scheme", "alphatensor:3,4,11", "--repeat", "1"])
    assert {(r["scheme"], r["format"]) for r in rows} == {
        (s, f) for s in ("strassen*naive:1,1,2", "alphatensor:3,4,11") for f in ("json", "npz", "fastmm", "catalogue", "formulas")
    }
    assert all(r["valid"] for r in rows if "error" not in r)
    assert all(r["shape"] == "<2,2,4>" and r["rank"] == 14 for r in rows if r["scheme"] == "strassen*naive:1,1,2")


# ---------------------------------------------------------------------- search --start FILE
def test_search_starts_from_a_file(tmp_path: Path, cli) -> None:
    path = tmp_path / "start.json"
    path.write_text(json.dumps(strassen_catalogue()))
    code, out, err = cli("search", "2x2x2", "--start", path, "--rank", "7", "--workers", "1", "--flips", "1000")
    assert code == 0, err
    assert "(rank 7)" in out and "7 (reached)" in out
    code, out, err = cli("search", "3x3x3", "--start", path, "--workers", "1", "--flips", "1000")
    assert code == 2
    one_error(err, "is for <2,2,2>, not <3,3,3>")


def test_search_from_an_invalid_file_exits_1(tmp_path: Path, cli) -> None:
    doc = strassen_catalogue()
    doc["v"] = [row[:] for row in STRASSEN_V]
    doc["v"][0] = [1, 0, 0, 0]
    path = tmp_path / "start.txt"
    path.write_text(json.dumps(doc))
    code, out, _ = cli("search", "2x2x2", "--start", path, "--workers", "1", "--flips", "1000")
    assert code == 1 and "INVALID" in out and Store().all() == []
