"""Hostile and odd inputs: every one ends in a verdict that is exactly right, or one clear line
and exit code 2 (never a crash, never a false "valid"). All malformed inputs are made here."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error

from fmmforge.core import catalogue, tensor
from fmmforge.core.builtins import builtin
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats import encode, read_file, write_file
from fmmforge.core.formats.fastmm import dumps_fastmm
from fmmforge.core.formats.json import dumps_json
from fmmforge.core.formats.npz import to_deepmind
from fmmforge.core.store import Store


def strassen_doc() -> dict:
    return json.loads(dumps_json(builtin("strassen")))


def with_extra_terms(doc: dict, terms: list[tuple[object, object, object]]) -> dict:
    """Strassen plus terms that touch only (A11, B11, C11): u, v, w entries given per term."""
    for u, v, w in terms:
        for name, value in zip("UVW", (u, v, w)):
            for i, row in enumerate(doc[name]):
                row.append(value if i == 0 else 0)
    doc["rank"] += len(terms)
    return doc


def write_json(tmp_path: Path, doc: dict, name: str = "x.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def fastmm_with_first_entry(token: str) -> str:
    lines = dumps_fastmm(builtin("strassen")).splitlines()
    lines[1] = " ".join([token] + lines[1].split()[1:])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- false valids
def test_most_negative_int64_is_refused_not_rounded(tmp_path: Path, cli) -> None:
    # exact sum at (A11,B11,C11): 1 + (-2^63)·1·1 + (2^63+... ) is 4, not 1: float64 rounding hid it
    m = -(2**63)
    doc = with_extra_terms(strassen_doc(), [(m, 1, 1), (m + 3, 1, -1)])
    path = write_json(tmp_path, doc)
    for command in ("verify", "import"):
        code, out, err = cli(command, path)
        assert code == 2 and "valid" not in out
        one_error(err, "U[0][7]", "2^62")
    assert list(Store().all()) == []


def test_large_entries_that_cancel_verify_exactly_and_read_back_from_the_store(tmp_path: Path, cli) -> None:
    big = 2**62 - 1
    doc = with_extra_terms(strassen_doc(), [(big, big, f"1/{2**61}"), (big, big, f"-1/{2**61}")])
    path = write_json(tmp_path, doc)
    assert cli("verify", path)[0] == 0
    code, out, _ = cli("import", path, "--name", "bigcancel")
    assert code == 0 and "added" in out
    back = catalogue.resolve("bigcancel")
    assert back.rank == 9 and back.verify().valid
    assert back == read_file(path)[0][1]
    # one term off by one unit: the exact check sees it although the numbers are huge
    doc["U"][0][8] = big - 1
    code, out, _ = cli("verify", write_json(tmp_path, doc, "off.json"))
    assert code == 1 and "INVALID" in out and "(A11, B11, C11)" in out


SIGNED = {
    "strassen": lambda: builtin("strassen"),
    "laderman": lambda: builtin("laderman"),
    "strassen-2x2x3": lambda: catalogue.resolve("strassen-2x2x3"),
    "alphatensor:3,4,5": lambda: catalogue.resolve("alphatensor:3,4,5"),
}


@pytest.mark.parametrize("name", list(SIGNED))
@pytest.mark.parametrize("dtype", [np.uint64, np.uint8])
def test_signed_schemes_saved_unsigned_are_never_valid(name: str, dtype: type, tmp_path: Path, cli) -> None:
    d = SIGNED[name]()
    key = "{},{},{}".format(*d.format)
    (u, _), (v, _), (w, _) = to_deepmind(d)
    path = tmp_path / "unsigned.npz"
    np.savez(path, **{f"{key}.u": u.astype(dtype), f"{key}.v": v.astype(dtype), f"{key}.w": w.astype(dtype)})
    code, out, err = cli("verify", path)
    if dtype is np.uint64:  # -1 became 2^64-1: not an entry fmmforge can hold
        assert code == 2
        one_error(err, "2^62", "unsigned")
    else:  # -1 became 255, read as 255: a readable, wrong scheme
        assert code == 1 and "INVALID" in out


# ---------------------------------------------------------------------- crashes on bad input
def test_five_thousand_digit_integer_in_json(tmp_path: Path, cli) -> None:
    text = dumps_json(builtin("strassen")).replace("[1,", "[" + "7" * 5000 + ",", 1)
    (tmp_path / "digits.json").write_text(text)
    code, _out, err = cli("verify", tmp_path / "digits.json")
    assert code == 2
    one_error(err, "5000 digits")


@pytest.mark.parametrize("entry", [f"1/{2**70}", f"{2**70}/3", str(2**62), f"1/{2**62}"])
def test_entries_beyond_the_int64_design_are_refused(entry: str, tmp_path: Path, cli) -> None:
    doc = strassen_doc()
    doc["U"][0][0] = entry
    code, _out, err = cli("verify", write_json(tmp_path, doc))
    assert code == 2
    one_error(err, "U[0][0]", "2^62")
    (tmp_path / "f").write_text(fastmm_with_first_entry(entry))
    code, _out, err = cli("verify", tmp_path / "f")
    assert code == 2
    one_error(err, "f:2:", "2^62")


def test_denominators_whose_common_multiple_overflows(tmp_path: Path, cli) -> None:
    primes = [1_000_003, 1_000_033, 1_000_037, 1_000_039]  # each small, their product > 2^62
    doc = strassen_doc()
    for j, q in enumerate(primes):
        doc["U"][1][j] = f"1/{q}"
    code, _out, err = cli("verify", write_json(tmp_path, doc))
    assert code == 2
    one_error(err, "common denominator")


def test_deeply_nested_json(tmp_path: Path, cli) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _out, err = cli("verify", tmp_path / "deep.json")
    assert code == 2
    one_error(err, "nested too deeply")
    doc = strassen_doc()
    text = json.dumps(doc).replace('"U": [', '"U": [' + "[" * 100_000 + "]" * 100_000 + ",", 1)
    (tmp_path / "deep2.json").write_text(text)
    assert cli("verify", tmp_path / "deep2.json")[0] == 2


def _strassen_npy() -> bytes:
    with zipfile.ZipFile(io.BytesIO(encode(builtin("strassen"), "npz"))) as z:
        return z.read("2,2,2.npy")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_npz_member_that_is_not_npy(tmp_path: Path, cli) -> None:
    path = _zip(tmp_path / "x.npz", {"2,2,2.npy": _strassen_npy(), "readme.txt": b"hello"})
    code, _out, err = cli("verify", path)
    assert code == 2
    one_error(err, "readme.txt", "not an .npy")


def test_encrypted_npz_member_is_one_line(tmp_path: Path, cli) -> None:
    """Found by the fuzzer: a flipped 'encrypted' flag bit made zipfile raise RuntimeError (exit 70)."""
    path = _zip(tmp_path / "x.npz", {"2,2,2.npy": _strassen_npy()})
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        data[at + flag_offset] |= 0x1
    path.write_bytes(bytes(data))
    code, _out, err = cli("verify", path)
    assert code == 2
    one_error(err, "encrypted")


@pytest.mark.parametrize("damage", [
    lambda raw: raw[:20] + b"(((" + raw[23:],  # the header dict no longer parses (TokenError)
    lambda raw: raw[:10] + b"\x00" * 30 + raw[40:],
    lambda raw: raw[:6] + b"\x09\x00" + raw[8:],  # format version 9.0
    lambda raw: raw[:40],  # truncated header
    lambda raw: raw[:-30],  # data shorter than the header says
    lambda raw: raw.replace(b"(3, 4, 7)", b"(3, -4, 7)"),
    lambda raw: raw.replace(b"'<i8'", b"'<c8'"),
    lambda raw: raw.replace(b"'<i8'", b"'|V8'"),
    lambda raw: raw.replace(b"'<i8'", b"'<M8'"),
], ids=["tokens", "zeros", "version", "truncated", "short-data", "negative-shape", "complex", "void", "datetime"])
def test_damaged_npy_headers(damage, tmp_path: Path, cli) -> None:
    path = _zip(tmp_path / "x.npz", {"2,2,2.npy": damage(_strassen_npy())})
    code, _out, err = cli("verify", path)
    assert code == 2
    one_error(err, "x.npz")


def test_npz_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path: Path, cli) -> None:
    raw = _strassen_npy().replace(b"(3, 4, 7)", b"(3, 400000000000, 7)")
    code, _out, err = cli("verify", _zip(tmp_path / "x.npz", {"2,2,2.npy": raw}))
    assert code == 2
    one_error(err, "FMMFORGE_MAX_ENTRIES")


def test_wider_than_float64_is_refused(tmp_path: Path, cli) -> None:
    (u, _), (v, _), (w, _) = to_deepmind(builtin("strassen"))
    stacked = np.stack([u, v, w]).astype(np.longdouble)
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("long double is float64 on this platform")
    stacked[0, 0, 0] += np.longdouble(2.0) ** -60  # 1 + 2^-60: float64 would round it to 1
    np.savez(tmp_path / "ld.npz", **{"2,2,2": stacked})
    code, _out, err = cli("verify", tmp_path / "ld.npz")
    assert code == 2
    one_error(err, "float64")


# ---------------------------------------------------------------------- size limits
def test_huge_claimed_format_does_not_allocate(tmp_path: Path, cli) -> None:
    doc = strassen_doc()
    doc.update(format=[100, 100, 100], rank=1, U=[[0]] * 10_000, V=[[0]] * 10_000, W=[[0]] * 10_000)
    code, out, _err = cli("verify", write_json(tmp_path, doc))
    assert code == 1 and "rank 1 is below 10000" in out


def test_huge_claimed_format_in_catalogue_json_is_refused_before_allocating(tmp_path: Path, cli, monkeypatch) -> None:
    # rank 0 means no product list to size the format by: the format itself must be checked first
    # (at <100000,100000,100000> the reader was killed for memory before this check)
    monkeypatch.setenv("FMMFORGE_MAX_ENTRIES", "1000000")
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"n": [3000, 3000, 3000], "m": 0, "u": [], "v": [], "w": []}))
    for command in ("verify", "import"):
        code, out, err = cli(command, path)
        assert code == 2 and out == ""
        one_error(err, "<3000,3000,3000>", "FMMFORGE_MAX_ENTRIES")


def test_huge_formula_indices_are_refused(tmp_path: Path, cli) -> None:
    path = tmp_path / "huge.txt"
    path.write_text("M1 = A1_1·B1_1\nC100000_100000 = M1\n")
    code, out, err = cli("verify", path)
    assert code == 2 and out == ""
    one_error(err, "FMMFORGE_MAX_ENTRIES")


def test_formula_lines_are_never_evaluated(tmp_path: Path, cli) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.txt"
    path.write_text(f"M1 = (A11 + __import__('pathlib').Path('{marker}').touch())·B11\nC11 = M1\n")
    code, out, err = cli("import", path)
    assert code == 2 and not marker.exists() and list(Store().all()) == []
    one_error(err, "evil.txt:1", "cannot read")


@pytest.mark.parametrize("nest", ["(" * 5000 + "A11" + ")" * 5000, "-" * 5000 + "A11"])
def test_deeply_nested_formula_is_one_line(nest: str, tmp_path: Path, cli) -> None:
    path = tmp_path / "deep.txt"
    path.write_text(f"M1 = {nest}·B11\nC11 = M1\n")
    code, out, err = cli("verify", path)
    assert code == 2 and out == ""
    one_error(err, "deep.txt:1", "nested too deeply")


def test_show_naive_of_a_huge_format_is_refused(cli) -> None:
    code, _out, err = cli("show", "naive:100,100,100")
    assert code == 2
    one_error(err, "FMMFORGE_MAX_ENTRIES")
    assert cli("show", "naive:30,30,30")[0] == 2


@pytest.mark.parametrize("var, low, high, name", [
    ("FMMFORGE_MAX_ENTRIES", "20", "100", "strassen"),  # 84 factor entries
    ("FMMFORGE_MAX_WORK", "1000", "1000000", "laderman"),  # 9·9·9·23 multiply-adds
])
def test_limits_are_settings(var: str, low: str, high: str, name: str, tmp_path: Path, cli, monkeypatch) -> None:
    path = tmp_path / "s.json"
    write_file(builtin(name), path)
    for value, code_wanted in ((low, 2), (high, 0), ("lots", 2)):
        monkeypatch.setenv(var, value)
        code, _out, err = cli("verify", path)
        assert code == code_wanted
        if code == 2:
            one_error(err, var)


@pytest.mark.parametrize("name", ["naive:10,10,10", "strassen*naive:5,5,5"])
def test_large_schemes_verify_without_the_dense_tensor(name: str, tmp_path: Path, cli, monkeypatch) -> None:
    d = catalogue.resolve(name)
    path = tmp_path / "big.json"
    write_file(d, path)

    def refuse(*_args: object) -> None:
        raise AssertionError("the dense matmul tensor was built")

    monkeypatch.setattr(tensor, "matmul_tensor", refuse)
    code, out, _ = cli("verify", path)
    assert code == 0 and f"rank {d.rank}" in out
    U, V, W = (x.copy() for x in d.numerators())
    W[57, 400] += 1
    broken = Decomposition.unchecked(U, V, W, d.format)
    result = broken.verify()
    assert not result.valid and result.entry is not None
    a, b, c = result.entry
    assert c == 57 and U[a, 400] * V[b, 400] != 0


# ---------------------------------------------------------------------- silent nonsense
def test_export_refuses_unknown_endings(tmp_path: Path, cli) -> None:
    code, _out, err = cli("export", "strassen", "-o", tmp_path / "x.csv")
    assert code == 2
    one_error(err, ".csv", "json", "npz", "fastmm", "--format")
    assert list(tmp_path.iterdir()) == []
    assert cli("export", "strassen", "-o", tmp_path / "x.csv", "--format", "fastmm")[0] == 0
    assert read_file(tmp_path / "x.csv", "fastmm")[0][1] == builtin("strassen")


def test_mod2_scheme_keeps_its_field_through_npz(tmp_path: Path, cli) -> None:
    path = tmp_path / "z2.npz"
    assert cli("export", "alphatensor-mod2:3,3,3", "-o", path)[0] == 0
    code, out, _ = cli("verify", path)
    assert code == 0 and "over Z2" in out
    [(_label, d)] = read_file(path)
    assert d.field == "Z2" and d == catalogue.resolve("alphatensor-mod2:3,3,3")
    code, out, _ = cli("verify", path, "--field", "Z")  # the caller may still insist
    assert code == 1 and "holds modulo 2" in out
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["3,3,3.field.npy", "3,3,3.npy"]
    bad = _zip(tmp_path / "bad.npz", {"2,2,2.npy": _strassen_npy(), "2,2,2.field.npy": _npy(np.array("F3"))})
    code, _out, err = cli("verify", bad)
    assert code == 2
    one_error(err, "field")


def _npy(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr)
    return buffer.getvalue()


# ---------------------------------------------------------------------- small ones
def test_tiny_decimal_is_called_inexact_not_large(tmp_path: Path, cli) -> None:
    (tmp_path / "f").write_text(fastmm_with_first_entry("1e-300"))
    code, _out, err = cli("verify", tmp_path / "f")
    assert code == 2
    line = one_error(err, "not an exact small rational")
    assert "too large" not in line
    doc = strassen_doc()
    doc["U"][0][0] = "1e-30"
    code, _out, err = cli("verify", write_json(tmp_path, doc))
    assert code == 2 and "too large" not in one_error(err, "not an exact small rational")


@pytest.mark.parametrize("given", ["JSON", "Json", "FASTMM", "fast-matmul", "Fast-Matmul", "NPZ"])
def test_format_names_are_case_insensitive_with_the_generators_alias(given: str, tmp_path: Path, cli) -> None:
    path = tmp_path / "algo"
    assert cli("export", "strassen", "-o", path, "--format", given)[0] == 0
    code, out, _ = cli("verify", path, "--format", given)
    assert code == 0 and "valid" in out
    code, _out, err = cli("verify", path, "--format", "csv")
    assert code == 2
    one_error(err, "fastmm")


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize("fmt", ["json", "fastmm", "npz"])
def test_dash_reads_standard_input(fmt: str, cli, monkeypatch) -> None:
    data = encode(builtin("strassen-winograd"), fmt)
    _stdin(monkeypatch, data)
    code, out, _ = cli("verify", "-")  # format guessed from the content
    assert code == 0 and "valid" in out and "<2,2,2>" in out
    _stdin(monkeypatch, data)
    assert cli("verify", "-", "--format", fmt)[0] == 0
    _stdin(monkeypatch, data)
    code, out, _ = cli("import", "-", "--name", "from-stdin")
    assert code == 0 and "added" in out
    assert catalogue.resolve("from-stdin") == builtin("strassen-winograd")


def test_dash_writes_standard_output(tmp_path: Path, cli, monkeypatch) -> None:
    code, out, _ = cli("export", "strassen", "-o", "-", "--format", "json")
    assert code == 0 and json.loads(out)["rank"] == 7
    assert not Path("-").exists()
    code, out, _ = cli("export", "strassen", "-o", "-", "--format", "fast-matmul")
    assert code == 0 and out == dumps_fastmm(builtin("strassen"))
    code, out, _ = cli("export", "strassen", "-o", "-")  # no --format: json, exact and self-describing
    assert code == 0 and json.loads(out)["rank"] == 7
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, _out, err = cli("export", "strassen", "-o", "-", "--format", "npz")
    assert code == 2
    one_error(err, "terminal")


def test_npz_to_standard_output_is_the_npz(capsysbinary) -> None:
    from fmmforge.core.app.cli import main

    assert main(["export", "laderman", "-o", "-", "--format", "npz"]) == 0
    data = capsysbinary.readouterr().out
    assert data[:2] == b"PK" and data == encode(builtin("laderman"), "npz")


def test_readers_raise_fmmforge_errors_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_text(fastmm_with_first_entry("9" * 5000))
    with pytest.raises(FmmforgeError, match="too long"):
        read_file(tmp_path / "f")
    (tmp_path / "g").write_text(fastmm_with_first_entry("1e999999999"))
    with pytest.raises(FmmforgeError, match="exponent"):
        read_file(tmp_path / "g")


def test_huge_kronecker_products_are_refused_before_allocating(cli, monkeypatch):
    import fmmforge.core.transforms as transforms

    monkeypatch.setattr(transforms, "_scaled", lambda f: pytest.fail("allocated before the size check"))
    code, _, err = cli("show", "naive:10,10,10*naive:10,10,10")
    assert code == 2 and "FMMFORGE_MAX_ENTRIES" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["search", "2x2x2", "--rank", "6"], ["--rank 6", "at least 7", "Hopcroft & Kerr 1971", "Winograd 1971", "--rank 7"]),
    (["search", "2x2x2", "--rank", "6", "--field", "Z", "--via-z2"], ["over Z has at least 7", "Winograd 1971"]),
    (["search", "2x3x3", "--rank", "14"], ["at least 15", "Hopcroft & Kerr 1971"]),
    (["search", "3x3x3", "--rank", "18", "--field", "Z"], ["at least 19", "Bläser 2003"]),
    (["search", "2x3x4", "--rank", "11"], ["at least 12", "flattening"]),
    (["search", "3*3*3"], ["'3*3*3'", "Kronecker product", "3x3x3"]),
    (["search", "2x2x2", "--rank", "7", "--device", "tpu-v9"], ["no chip spec for device 'tpu-v9'", "tpu-v4"]),
    (["score", "strassen", "--device", "tpu-v9", "--reward", "tpu-cost"], ["no chip spec for device 'tpu-v9'"]),
    (["score", "strassen", "--device", "cuda:7", "--reward", "latency"], ["cuda:7 is not present"]),
    (["score", "strassen", "--device", "missing/chip.toml", "--reward", "tpu-cost"], ["missing/chip.toml", "does not exist"]),
    (["score", "strassen", "--size", "8*8*8"], ["--size '8*8*8'", "8x8x8"]),
    (["show", "naive:2*2*2"], []),
])
def test_impossible_or_misread_requests_are_one_line_before_any_work(args, words, cli, monkeypatch):
    from fmmforge.core.search import walker

    monkeypatch.setattr(walker.Walker, "advance", lambda self, n: pytest.fail("walked before refusing"))
    code, _, err = cli(*args, "--workers", "1") if args[0] == "search" else cli(*args)
    assert code == 2, err
    one_error(err, *words)
    assert Store().all() == []


def test_a_rank_at_the_bound_is_searched_and_kronecker_names_still_read(cli):
    code, out, err = cli("search", "2x2x2", "--rank", "7", "--flips", "2M", "--workers", "1", "--seed", "1")
    assert code == 0 and "7 (reached)" in out, err
    assert catalogue.resolve("strassen*strassen").format == (4, 4, 4)
    assert catalogue.resolve("naive:2x2x2*strassen").format == (4, 4, 4)
