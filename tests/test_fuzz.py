"""Seeded fuzzing of the three readers through `fmmforge verify`.

Each case mutates a good file (byte flips, truncation, numbers replaced by huge or odd ones,
deep nesting, npz dtype/shape/key changes) and runs `verify` in-process. Asserted for every
case: the exit code is 0, 1 or 2; exit 2 prints exactly one "error: " line; and a verdict
(valid/invalid) agrees with an independent exact check written here: the file parsed by this
module's own small readers and T<n,m,p> rebuilt entry by entry with Python Fractions.

FMMFORGE_FUZZ_CASES (default 300) sets the number of cases; FMMFORGE_FUZZ_SEED the seed.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import zipfile
from fractions import Fraction
from itertools import product
from pathlib import Path

import numpy as np

from fmmforge.core import catalogue
from fmmforge.core.formats import encode

CASES = int(os.environ.get("FMMFORGE_FUZZ_CASES", "300"))
SEED = int(os.environ.get("FMMFORGE_FUZZ_SEED", "20240611"))
BASES = ("strassen", "strassen-winograd", "strassen-2x2x3", "alphatensor:2,2,3", "alphatensor-mod2:2,2,2")
ODD_NUMBERS = (
    "-9223372036854775808", "9223372036854775807", str(2**62), str(2**62 - 1), str(-(2**62) + 1),
    "9" * 5000, "1/" + str(2**70), str(2**70) + "/3", "1e-300", "1e300", "1e999999999", "0.1", "0.5", "-0.125",
    ".5", "5.", "1/0", "0/5", "-1/-1", "3/6", "nan", "inf", "-0", "+1", "1_0", "0x10", "1e2", "2", "-1", "0",
    "1", "true", "null", '"1/2"', '"1/3"', "\u0661", "1/" + "3" * 30,
)
NPZ_DTYPES = ("uint8", "uint64", "int8", "int16", ">i8", "float16", "float32", ">f8", "bool", "complex64", "U3", "longdouble")


# ---------------------------------------------------------------------- mutations
def mutate(data: bytes, fmt: str, rng: random.Random) -> bytes:
    kinds = ["flip", "truncate", "token", "token", "token", "nest", "splice"]
    if fmt == "npz":
        kinds += ["dtype", "dtype", "dtype", "shape", "rename", "raw-flip", "raw-flip", "field"]
    kind = rng.choice(kinds)
    if fmt == "npz" and kind in ("token", "nest"):
        kind = "raw-flip"
    return MUTATORS[kind](data, rng)


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


_NUMBER = re.compile(rb"-?\d+(?:/\d+)?")


def _token(data: bytes, rng: random.Random) -> bytes:
    spots = list(_NUMBER.finditer(data))
    out = data
    for match in sorted(rng.sample(spots, min(len(spots), rng.randint(1, 3))), key=lambda m: -m.start()):
        out = out[: match.start()] + rng.choice(ODD_NUMBERS).encode() + out[match.end():]
    return out


def _nest(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([50, 5000, 100_000])
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"[" * depth + b"0" + b"]" * depth + data[at:]


def _splice(data: bytes, rng: random.Random) -> bytes:
    a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    return data[:a] + data[b:] if rng.random() < 0.5 else data[:b] + data[a:b] + data[b:]


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _save(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _dtype(data: bytes, rng: random.Random) -> bytes:
    arrays = _arrays(data)
    key = rng.choice(sorted(arrays))
    with np.errstate(all="ignore"):
        try:
            arrays[key] = arrays[key].astype(rng.choice(NPZ_DTYPES))
        except ValueError:  # the field marker's text has no numeric dtype
            arrays[key] = arrays[key].astype("U1")
    return _save(arrays)


def _shape(data: bytes, rng: random.Random) -> bytes:
    arrays = _arrays(data)
    key = rng.choice(sorted(arrays))
    arr = arrays[key]
    choice = rng.randrange(3)
    if choice == 0 and arr.ndim >= 2:
        arrays[key] = arr[..., : max(0, arr.shape[-1] - 1)]
    elif choice == 1:
        arrays[key] = arr.reshape(-1)
    else:
        arrays[key] = np.concatenate([arr, arr], axis=-1) if arr.ndim else arr
    return _save(arrays)


def _rename(data: bytes, rng: random.Random) -> bytes:
    arrays = _arrays(data)
    key = rng.choice(sorted(arrays))
    arrays[rng.choice(["2,2,2", "3,3,3", "2,2,3.u", "x", "0,2,2", key + ".w", "2,2,2.field"])] = arrays.pop(key)
    return _save(arrays)


def _raw_flip(data: bytes, rng: random.Random) -> bytes:
    """Flip bytes of an uncompressed copy, so that headers and data (not only CRCs) get hit."""
    raw = _save(_arrays(data))
    return _flip(raw, rng)


def _field(data: bytes, rng: random.Random) -> bytes:
    arrays = _arrays(data)
    base = sorted(arrays)[0].split(".")[0]
    arrays[f"{base}.field"] = np.array(rng.choice(["Z", "Z2", "Z3", "z2", ""]))
    return _save(arrays)


MUTATORS = {
    "flip": _flip, "truncate": _truncate, "token": _token, "nest": _nest, "splice": _splice,
    "dtype": _dtype, "shape": _shape, "rename": _rename, "raw-flip": _raw_flip, "field": _field,
}


# ---------------------------------------------------------------------- the independent check
class Unreadable(Exception):
    """This module's reader cannot read the file either."""


def _entry(x: object) -> Fraction:
    if isinstance(x, bool) or x is None:
        raise Unreadable(x)
    if isinstance(x, (int, float)):
        return Fraction(x)
    if isinstance(x, str):
        text = x.strip()
        if "/" in text:
            num, den = text.split("/")
            return Fraction(int(num), int(den))
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            raise Unreadable(x)
        return Fraction(text)
    raise Unreadable(x)


def _dims(rows: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (n, m, p) with n·m, m·p, n·p equal to the three row counts."""
    a, b, c = rows
    found = [(n, m, p) for n in range(1, a + 1) if a % n == 0 for m in [a // n]
             if m and b % m == 0 for p in [b // m] if n * p == c]
    if len(found) != 1:
        raise Unreadable(rows)
    return found[0]


def parse_independently(data: bytes, fmt: str) -> list[tuple[tuple[int, int, int], list, list, list, str]]:
    """[(format, U rows, V rows, W rows (C row-major), field)] as Fractions, read from scratch."""
    if fmt == "json":
        doc = json.loads(data.decode("utf-8-sig"))
        n, m, p = doc["format"]
        U, V, W = ([[_entry(x) for x in row] for row in doc[k]] for k in "UVW")
        return [((n, m, p), U, V, W, doc.get("field", "Z"))]
    if fmt == "fastmm":
        text = data.decode("utf-8-sig")
        header = re.match(r"\s*(#[^\n]*)", text)  # fmmforge's header comes first
        field = "Z2" if header and re.match(r"#\s*fmmforge\b.*\bfield=Z2\b", header.group(1)) else "Z"
        blocks: list[list[list[Fraction]]] = [[]]
        for line in text.splitlines():
            if line.strip().startswith("#"):
                if blocks[-1]:
                    blocks.append([])
            elif line.strip():
                blocks[-1].append([_entry(t) for t in line.split()])
        blocks = [b for b in blocks if b]
        if len(blocks) != 3:
            raise Unreadable(len(blocks))
        fmt3 = _dims(tuple(len(b) for b in blocks))  # type: ignore[arg-type]
        return [(fmt3, blocks[0], blocks[1], blocks[2], field)]
    arrays = _arrays(data)
    out = []
    for key in sorted({k.split(".")[0] for k in arrays}):
        n, m, p = (int(x) for x in key.split(","))
        if key in arrays:
            u, v, w = arrays[key]
        else:
            u, v, w = (arrays[f"{key}.{c}"] for c in "uvw")
        marker = arrays.get(f"{key}.field", np.array("Z"))
        field = str(marker.reshape(-1)[0]) if marker.size == 1 else "?"
        U, V, Wt = ([[Fraction(x) for x in row] for row in a.tolist()] for a in (u, v, w))
        W = [Wt[k * n + i] for i in range(n) for k in range(p)]  # npz w indexes C transposed
        out.append(((n, m, p), U, V, W, field))
    return out


def exactly_valid(fmt3: tuple[int, int, int], U: list, V: list, W: list, field: str) -> bool:
    n, m, p = fmt3
    rank = len(U[0]) if U else 0
    for i, j, j2, k, i2, k2 in product(range(n), range(m), range(m), range(p), range(n), range(p)):
        u, v, w = U[i * m + j], V[j2 * p + k], W[i2 * p + k2]
        total = sum((u[r] * v[r] * w[r] for r in range(rank)), Fraction(0))
        want = int(i == i2 and j == j2 and k == k2)
        if field == "Z2":
            if total.denominator % 2 == 0 or (total.numerator - want) % 2:
                return False
        elif total != want:
            return False
    return True


# ---------------------------------------------------------------------- the test
def _check_case(cli, path: Path, data: bytes, fmt: str, what: str) -> str:
    path.write_bytes(data)
    code, out, err = cli("verify", path, "--format", fmt)
    assert code in (0, 1, 2), f"{what}: exit {code}: {err}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {err!r}"
        return "refused"
    verdicts = re.findall(r"^(valid|INVALID) ", out, flags=re.M)
    assert verdicts and (code == 0) == all(v == "valid" for v in verdicts), f"{what}: {out}"
    try:
        schemes = parse_independently(data, fmt)
    except Exception as exc:  # noqa: BLE001 - the reference reader failing is itself a finding
        raise AssertionError(f"{what}: fmmforge gave a verdict on a file the reference cannot read: {exc!r}")
    field_given = re.findall(r" over (Z2|Z)\b", out)
    assert len(schemes) == len(verdicts) == len(field_given), what
    for (fmt3, U, V, W, field), verdict, used in zip(schemes, verdicts, field_given):
        assert used == field, f"{what}: read as {used}, the file says {field}"
        assert exactly_valid(fmt3, U, V, W, field) == (verdict == "valid"), f"{what}: {out}"
    return verdicts[0]


def test_fuzzed_files_get_a_right_verdict_or_one_error_line(tmp_path: Path, cli) -> None:
    rng = random.Random(SEED)
    originals = {(name, fmt): encode(catalogue.resolve(name), fmt)
                 for name in BASES for fmt in ("json", "fastmm", "npz")}
    seen: dict[str, int] = {}
    for case in range(CASES):
        (name, fmt), data = rng.choice(sorted(originals.items()))
        mutated = mutate(data, fmt, rng)
        outcome = _check_case(cli, tmp_path / f"case.{fmt}", mutated, fmt, f"case {case} ({name} as {fmt})")
        seen[outcome] = seen.get(outcome, 0) + 1
    print(f"fuzz: {CASES} cases, seed {SEED}: {dict(sorted(seen.items()))}")  # shown with pytest -s
    # the mutator must reach all three outcomes, or it tests too little
    assert set(seen) == {"valid", "INVALID", "refused"}, seen


def test_unmutated_files_are_valid(tmp_path: Path, cli) -> None:
    for name in BASES:
        for fmt in ("json", "fastmm", "npz"):
            data = encode(catalogue.resolve(name), fmt)
            assert _check_case(cli, tmp_path / f"ok.{fmt}", data, fmt, f"{name} as {fmt}") == "valid"
