"""Import and export of decompositions: fmmforge JSON, DeepMind-style npz, fast-matmul text.

Three formats, one convention inside fmmforge (see tensor.py): U indexes the entries of A
(n×m, row-major), V those of B (m×p, row-major), W those of C (n×p, row-major, *not*
transposed); column r of each factor is product r.

``json``
    fmmforge's own versioned schema (:data:`JSON_SCHEMA`, :data:`JSON_VERSION`). Exact:
    integers, or strings such as ``"1/2"`` for the rare non-integer entries, so nothing is
    ever rounded. It also carries the field (Z or Z2), a name and provenance.
``npz``
    DeepMind's AlphaTensor layout: one key ``"n,m,p"`` per scheme, holding a stacked
    ``(3, n*n, R)`` array for cubic formats or (in DeepMind's own files) a *pickled* object
    array ``(u, v, w)`` otherwise. Pickles can run arbitrary code when loaded, so they are
    refused unless the caller says the file is trusted (``allow_pickle=True``); fmmforge
    itself writes non-cubic schemes in a pickle-free layout of three keys
    ``"n,m,p.u"``, ``"n,m,p.v"``, ``"n,m,p.w"``. In every npz layout w indexes C
    *transposed* (p×n, row-major), as in DeepMind's files; readers and writers convert.
``fastmm``
    The coefficient files of Benson & Ballard's fast-matmul code generator: three blocks of
    rows (U, V, W; one row per matrix entry in row-major order, one column per product)
    separated by lines starting with ``#``. The shape is not stored; it is inferred from
    the block row counts. Their generator reads entries with ``float()``, so entries that are
    dyadic rationals are written as exact decimals (``0.5``, ``-0.125``) and only other
    rationals as ``a/b``.

Readers return *unchecked* decompositions (the ``verify`` command reports rather than
raises); every problem with a file is a one-line :class:`FmmforgeError` naming the file.
Writers never leave a half-written file: they write a temporary file in the target
directory and ``os.replace`` it into place.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tokenize
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from fmmforge.core.atomic import write_bytes
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import (
    MAX_FLOAT_DENOMINATOR, MAX_TOKEN_CHARS, check_entries, check_small, exact_token,
    max_entries,
)
from fmmforge.core.tensor import Format, check_format

FORMATS = ("json", "npz", "fastmm")
FORMAT_ALIASES = {"fast-matmul": "fastmm", "fast_matmul": "fastmm"}
# File name endings each format is written under (fastmm files usually have none).
SUFFIXES = {".json": "json", ".npz": "npz", ".fastmm": "fastmm", ".txt": "fastmm", "": "fastmm"}
# Bytes a file may hold per allowed factor entry: json and fastmm spend a few per entry; an
# npz (8 bytes per entry uncompressed) often holds many schemes, each checked on its own.
_BYTES_PER_ENTRY = {"json": 16, "fastmm": 16, "npz": 64}
_FILE_SLACK = 1 << 20
_NPZ_MAX_MEMBERS = 4096
# Errors numpy's .npy header parser and zipfile raise on damaged bytes.
_DAMAGED = (
    ValueError, SyntaxError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
    EOFError, OSError, NotImplementedError, zipfile.BadZipFile, zlib.error, tokenize.TokenError,
)
JSON_SCHEMA = "fmmforge.decomposition"
JSON_VERSION = 1
JSON_CONVENTION = (
    "U rows: entries of A (n x m, row-major); V rows: entries of B (m x p, row-major); "
    "W rows: entries of C (n x p, row-major, not transposed); column r: product r"
)
_JSON_RESERVED = ("schema", "version", "format", "field", "rank", "convention", "U", "V", "W")

Factors = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Raw factor arrays (u, v, w) as stored in an npz file (w indexes C transposed)."""

_NPZ_KEY = re.compile(r"^(\d{1,9}),(\d{1,9}),(\d{1,9})(?:\.(u|v|w|field))?$")
_INT_TOKEN = re.compile(r"^[+-]?[0-9]{1,18}$")
_FMMFORGE_HEADER = re.compile(r"^#\s*fmmforge\s+<(\d{1,9}),(\d{1,9}),(\d{1,9});(\d{1,12})>(.*)$")
_NOT_NUMBERS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_PARAMETER_NAMES = {"eps", "epsilon", "lambda", "alpha", "beta", "delta", "phi", "theta"}


# ====================================================================== common helpers
def format_name(fmt: str) -> str:
    """The canonical name of a file format (case-insensitive; ``fast-matmul`` means fastmm)."""
    name = fmt.strip().lower()
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise FmmforgeError(
            f"unknown file format {fmt!r}; use one of {', '.join(FORMATS)} (or fast-matmul for fastmm)"
        )
    return name


def guess_format(path: str | os.PathLike[str]) -> str:
    """``.json`` → json, ``.npz`` → npz, anything else → fastmm (its files have no suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".npz":
        return "npz"
    return "fastmm"


def guess_write_format(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for when writing; refuses endings that name no format."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise FmmforgeError(
            f"cannot tell the format of {path} from its ending {suffix!r}; name it .json, .npz, "
            ".fastmm, .txt or with no ending (fastmm), or give --format json|npz|fastmm"
        )
    return SUFFIXES[suffix]


def sniff_format(data: bytes) -> str:
    """The format of file content: a zip is npz, a JSON object is json, anything else fastmm."""
    if data[:2] == b"PK":
        return "npz"
    return "json" if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "fastmm"


def _check_fmt_name(fmt: str | None, path: str | os.PathLike[str]) -> str:
    return guess_format(path) if fmt is None else format_name(fmt)


def max_file_bytes() -> int:
    """The largest file read: a few bytes per factor entry that FMMFORGE_MAX_ENTRIES allows."""
    return max(_BYTES_PER_ENTRY.values()) * max_entries() + _FILE_SLACK


def _check_size(size: int, source: str, kind: str) -> None:
    check_entries(size, f"reading {source} as {kind}", unit="bytes", per_entry=_BYTES_PER_ENTRY[kind],
                  slack=_FILE_SLACK)


def read_limited(fh: Any, source: str) -> bytes:
    """All bytes of an open binary stream, refused (without reading it all) above the limit."""
    limit = max_file_bytes()
    try:
        data = fh.read(limit + 1)
    except OSError as exc:
        raise FmmforgeError(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > limit:
        _check_size(len(data), source, "npz")
    return data


def _matmul_format(d: Decomposition, what: str) -> Format:
    if d.format is None:
        raise FmmforgeError(
            f"only matrix-multiplication decompositions can be written as {what}; "
            f"{d.target.describe()} is a general tensor"
        )
    return d.format


def build_decomposition(u: Any, v: Any, w: Any, fmt: Format, field: str) -> Decomposition:
    """An unchecked decomposition of ``<fmt>`` from factor arrays in fmmforge's convention."""
    return Decomposition.unchecked(*(np.asarray(x) for x in (u, v, w)), fmt, field=field)


def _c_transposed(w: Any, rows: int, cols: int) -> np.ndarray:
    """Re-index the rows of a factor from a rows×cols matrix (row-major) to its transpose."""
    arr = np.asarray(w)
    rank = arr.shape[1]
    return arr.reshape(rows, cols, rank).transpose(1, 0, 2).reshape(rows * cols, rank)


def from_deepmind(u: Any, v: Any, w_t: Any, fmt: Format, field: str = "Z") -> Decomposition:
    """Unchecked decomposition from DeepMind-oriented factors (w indexes C^T, p×n row-major)."""
    n, _m, p = fmt
    return build_decomposition(u, v, _c_transposed(w_t, p, n), fmt, field)


def to_deepmind(d: Decomposition) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """(numerators, denominator) of u, v and w with w re-indexed to C^T (DeepMind's layout)."""
    n, _m, p = _matmul_format(d, "npz")
    (u, v, w), (du, dv, dw) = d.numerators(), d.denominators()
    return (u, du), (v, dv), (_c_transposed(w, n, p), dw)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FmmforgeError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise FmmforgeError(f"{path} is a directory; give the path of a decomposition file")
    try:
        with path.open("rb") as fh:
            return read_limited(fh, str(path))
    except OSError as exc:
        raise FmmforgeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode_text(data: bytes, fmt: str, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        hint = " (it looks like an npz archive: use --format npz)" if data[:2] == b"PK" else ""
        raise FmmforgeError(
            f"{source} is not a UTF-8 text file, so it cannot be a {fmt} file{hint}"
        ) from None


# ====================================================================== public entry points
def read_file(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    shape: tuple[int, int, int] | None = None,
    field: str | None = None,
    allow_pickle: bool = False,
) -> list[tuple[str, Decomposition]]:
    """Read every decomposition in a file as ``(label, unchecked decomposition)`` pairs.

    ``fmt`` defaults to :func:`guess_format`. ``shape`` checks (json, fastmm) or selects
    (npz) the format n,m,p; ``field`` None means what the file says (json, fastmm header,
    npz field marker) else Z. ``allow_pickle`` must stay False unless the npz file is
    trusted. The label is the npz key, or the file stem for the single-scheme formats.
    """
    p = Path(path)
    kind = _check_fmt_name(fmt, p)
    if field is not None:
        check_field(field)
    if shape is not None:
        shape = check_format(tuple(shape))
    return read_data(_read_bytes(p), kind, source=str(p), label=p.stem, shape=shape, field=field,
                     allow_pickle=allow_pickle)


def read_data(
    data: bytes,
    fmt: str | None,
    *,
    source: str,
    label: str,
    shape: tuple[int, int, int] | None = None,
    field: str | None = None,
    allow_pickle: bool = False,
) -> list[tuple[str, Decomposition]]:
    """:func:`read_file` for bytes already read (standard input); ``fmt`` None: from the content."""
    kind = sniff_format(data) if fmt is None else format_name(fmt)
    _check_size(len(data), source, kind)
    if field is not None:
        check_field(field)
    if shape is not None:
        shape = check_format(tuple(shape))
    if kind == "json":
        d, _meta = parse_json_document(_decode_text(data, "json", source), source=source, shape=shape, field=field)
        return [(label, d)]
    if kind == "fastmm":
        return [(label, loads_fastmm(_decode_text(data, "fastmm", source), source=source, shape=shape, field=field))]
    out = []
    for key, (factors, file_field) in _parse_npz(data, source, allow_pickle, shape).items():
        try:
            out.append((key, from_deepmind(*factors, _key_format(key), field or file_field or "Z")))
        except FmmforgeError as exc:
            raise FmmforgeError(f"{source}: key {key!r}: {exc}") from None
    return out


def encode(d: Decomposition, fmt: str, **meta: Any) -> bytes:
    """The bytes of ``d`` in file format ``fmt`` (see :func:`write_file` for ``meta``)."""
    kind = format_name(fmt)
    if kind == "json":
        return dumps_json(d, **meta).encode("utf-8")
    if kind == "fastmm":
        return dumps_fastmm(d, name=meta.get("name")).encode("utf-8")
    return npz_bytes(npz_arrays([d]))


def write_file(
    d: Decomposition, path: str | os.PathLike[str], fmt: str | None = None, **meta: Any
) -> None:
    """Write one decomposition atomically; ``fmt`` defaults to :func:`guess_write_format`.

    ``meta`` (name, provenance, ...) goes into json documents; fastmm keeps only the name,
    in its header comment; npz keeps neither (but keeps a Z2 field, as a marker array).
    """
    kind = guess_write_format(path) if fmt is None else format_name(fmt)
    write_bytes(path, encode(d, kind, **meta))


# ====================================================================== json
def _entry_json(f: Fraction) -> int | str:
    return f.numerator if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _factor_rows(num: np.ndarray, den: int) -> list[list[int | str]]:
    if den == 1:
        return num.tolist()
    return [[_entry_json(Fraction(x, den)) for x in row] for row in num.tolist()]


def json_document(d: Decomposition, **meta: Any) -> dict[str, Any]:
    """The JSON-ready dict of the fmmforge schema for ``d`` (see :func:`dumps_json`)."""
    fmt = _matmul_format(d, "json")
    clash = sorted(set(meta) & set(_JSON_RESERVED))
    if clash:
        raise FmmforgeError(f"metadata keys {', '.join(clash)} are reserved by the json schema")
    doc: dict[str, Any] = {
        "schema": JSON_SCHEMA,
        "version": JSON_VERSION,
        "format": list(fmt),
        "field": d.field,
        "rank": d.rank,
        "convention": JSON_CONVENTION,
    }
    for key in ("name", "provenance"):
        if meta.get(key) is not None:
            doc[key] = meta[key]
    doc["fingerprint"] = d.fingerprint
    for key, value in meta.items():
        if key not in doc and key != "fingerprint" and value is not None:
            doc[key] = value
    for name, num, den in zip("UVW", d.numerators(), d.denominators()):
        doc[name] = _factor_rows(num, den)
    return doc


def dumps_json(d: Decomposition, **meta: Any) -> str:
    """Serialise ``d`` in the fmmforge json schema, one factor row per line (diff-friendly).

    ``meta`` adds optional keys: ``name`` (str), ``provenance`` (dict), or any other
    JSON-serialisable value under a key the schema does not reserve.
    """
    doc = json_document(d, **meta)
    parts = []
    for key, value in doc.items():
        if key in ("U", "V", "W"):
            rows = [json.dumps(row, separators=(",", ":")) for row in value]
            text = "[\n    " + ",\n    ".join(rows) + "\n  ]" if rows else "[]"
        else:
            try:
                text = json.dumps(value, ensure_ascii=False, sort_keys=isinstance(value, dict))
            except (TypeError, ValueError) as exc:
                raise FmmforgeError(f"metadata {key!r} cannot be written as JSON: {exc}") from None
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def loads_json(
    text: str, *, source: str = "JSON text", shape: tuple[int, int, int] | None = None,
    field: str | None = None,
) -> Decomposition:
    """Parse a json document into an unchecked decomposition (metadata dropped)."""
    return parse_json_document(text, source=source, shape=shape, field=field)[0]


def parse_json_document(
    text: str, *, source: str = "JSON text", shape: tuple[int, int, int] | None = None,
    field: str | None = None,
) -> tuple[Decomposition, dict[str, Any]]:
    """Parse a json document into (unchecked decomposition, metadata such as name/provenance)."""
    doc = _json_loads(text, source)
    if not isinstance(doc, dict):
        raise FmmforgeError(f"{source}: expected a JSON object with schema {JSON_SCHEMA!r}")
    schema = doc.get("schema")
    if schema != JSON_SCHEMA:
        raise FmmforgeError(
            f"{source}: schema is {schema!r}, not {JSON_SCHEMA!r}; "
            "this is not an fmmforge decomposition file"
        )
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FmmforgeError(f"{source}: unknown schema version {version!r}; expected {JSON_VERSION}")
    if version > JSON_VERSION:
        raise FmmforgeError(
            f"{source} uses schema version {version}, written by a newer fmmforge "
            f"(this one reads version {JSON_VERSION}); upgrade fmmforge to read it"
        )
    fmt = _json_format(doc.get("format"), source)
    if shape is not None and tuple(shape) != fmt:
        raise FmmforgeError(
            f"{source} holds a <{','.join(map(str, fmt))}> scheme, not the requested "
            f"<{','.join(map(str, shape))}>; drop --shape or pass the right one"
        )
    file_field = doc.get("field", "Z")
    if file_field not in ("Z", "Z2"):
        raise FmmforgeError(f"{source}: field {file_field!r} is unknown; use \"Z\" or \"Z2\"")
    n, m, p = fmt
    factors = [
        _json_factor(doc.get(name), name, rows, source)
        for name, rows in (("U", n * m), ("V", m * p), ("W", n * p))
    ]
    ranks = {len(f[0]) if f else 0 for f in factors}
    widths = [len(f[0]) if f else 0 for f in factors]
    if len(ranks) != 1:
        raise FmmforgeError(
            f"{source}: U, V, W have {', '.join(map(str, widths))} columns; "
            "they need one column per product each"
        )
    rank = widths[0]
    declared = doc.get("rank", rank)
    if declared != rank:
        raise FmmforgeError(f"{source}: \"rank\" says {declared!r} but the factors have {rank} columns")
    arrays = [_json_array(f, rank) for f in factors]
    try:
        d = build_decomposition(*arrays, fmt, field or file_field)
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}: {exc}") from None
    meta = {k: v for k, v in doc.items() if k not in _JSON_RESERVED}
    return d, meta


def _json_number(source: str) -> Any:
    """json's parse_int/parse_float hook: refuses numbers too long for any entry (Python's
    int() would raise on thousands of digits, Fraction would build huge exponents)."""

    def parse(token: str) -> int | float:
        if len(token) > MAX_TOKEN_CHARS:
            raise FmmforgeError(
                f"{source}: number {token[:20]}... has {len(token)} digits, far beyond the 2^62 "
                "limit of entries; fix the file"
            )
        return float(token) if any(c in token for c in ".eE") else int(token)

    return parse


def _json_loads(text: str, source: str) -> Any:
    number = _json_number(source)
    try:
        return json.loads(text, parse_int=number, parse_float=number)
    except json.JSONDecodeError as exc:
        raise FmmforgeError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix the file or give its real format with --format"
        ) from None
    except RecursionError:
        raise FmmforgeError(f"{source}: JSON nested too deeply to be a decomposition file; fix the file") from None


def _json_array(rows: list[list[Fraction | int]], rank: int) -> np.ndarray:
    """int64 when every entry is a machine integer (the common case, fast), else Fractions."""
    if all(type(x) is int and -(2**62) < x < 2**62 for row in rows for x in row):
        return np.array(rows, dtype=np.int64).reshape(len(rows), rank)
    return np.array(rows, dtype=object).reshape(len(rows), rank)


def _json_format(value: Any, source: str) -> Format:
    if (
        not isinstance(value, list) or len(value) != 3
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in value)
    ):
        raise FmmforgeError(f"{source}: \"format\" must be three positive integers [n, m, p], got {value!r}")
    return (value[0], value[1], value[2])


def _json_factor(value: Any, name: str, rows: int, source: str) -> list[list[Fraction | int]]:
    if not isinstance(value, list):
        raise FmmforgeError(f"{source}: \"{name}\" is missing or not a list of rows")
    if len(value) != rows:
        raise FmmforgeError(
            f"{source}: \"{name}\" has {len(value)} rows but the format needs {rows} "
            "(one per matrix entry)"
        )
    out: list[list[Fraction | int]] = []
    width = None
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise FmmforgeError(f"{source}: {name}[{i}] is not a list of entries")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise FmmforgeError(
                f"{source}: {name}[{i}] has {len(row)} entries but {name}[0] has {width}; "
                "every row needs one entry per product"
            )
        if i == 0:
            check_entries(rows * width, f"{source}: factor {name}")
        out.append([_json_entry(x, f"{name}[{i}][{j}]", source) for j, x in enumerate(row)])
    return out


def _json_entry(x: Any, where: str, source: str) -> Fraction | int:
    try:
        if isinstance(x, int) and not isinstance(x, bool):
            return int(check_small(Fraction(x), x))
        if isinstance(x, str):
            exact = exact_token(x)
            if exact is not None:
                return exact
        elif isinstance(x, float) and math.isfinite(x):
            exact = Fraction(x)
            if exact.limit_denominator(MAX_FLOAT_DENOMINATOR) == exact:
                return check_small(exact, repr(x))
            raise FmmforgeError(f"{x!r} is not exact; write it as a string like \"1/3\"")
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}: {where}: {exc}") from None
    raise FmmforgeError(
        f"{source}: {where} = {_json_short(x)} is not a number; "
        "entries must be integers or strings like \"1/2\""
    )


def _json_short(x: Any) -> str:
    """A JSON value for a message: lists and objects by kind, long strings cut."""
    if isinstance(x, list):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    text = json.dumps(x)
    return text if len(text) <= 40 else text[:40] + "..."


# ====================================================================== fastmm
def _decimal_or_ratio(f: Fraction) -> str:
    """Exact text readable by both fmmforge and Benson & Ballard's float()-based reader."""
    if f.denominator == 1:
        return str(f.numerator)
    den = f.denominator
    if den & (den - 1) == 0:  # a power of two: the decimal expansion is finite
        k = den.bit_length() - 1
        digits = abs(f.numerator) * 5**k  # == |f| * 10^k
        whole, frac = divmod(digits, 10**k)
        text = f"{whole}.{frac:0{k}d}".rstrip("0")
        return ("-" if f.numerator < 0 else "") + text
    return f"{f.numerator}/{f.denominator}"


def dumps_fastmm(d: Decomposition, *, name: str | None = None) -> str:
    """Text of Benson & Ballard's coefficient-file format, with an fmmforge header comment.

    The header ``# fmmforge <n,m,p;R> field=F ...`` is a comment to their tools; fmmforge
    uses it to restore the field (Z2 schemes) and to cross-check the inferred shape.
    """
    n, m, p = _matmul_format(d, "fastmm")
    header = f"# fmmforge <{n},{m},{p};{d.rank}> field={d.field} fingerprint={d.fingerprint}"
    if name:
        header += " name=" + " ".join(str(name).split())
    lines = [header]
    for i, (num, den) in enumerate(zip(d.numerators(), d.denominators())):
        if i:
            lines.append("#")
        for row in num.tolist():
            if den == 1:
                lines.append(" ".join(map(str, row)))
            else:
                lines.append(" ".join(_decimal_or_ratio(Fraction(x, den)) for x in row))
    return "\n".join(lines) + "\n"


def loads_fastmm(
    text: str, *, source: str = "fastmm text", shape: tuple[int, int, int] | None = None,
    field: str | None = None,
) -> Decomposition:
    """Parse fast-matmul coefficient text into an unchecked decomposition.

    Blocks are separated by lines starting with ``#`` (a '#' line before any rows, such as a
    leading comment, opens nothing); blank lines are ignored. Errors give ``source:line``.
    """
    blocks: list[list[tuple[int, list[str]]]] = [[]]
    header: tuple[Format, int, str | None] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            match = _FMMFORGE_HEADER.match(stripped)
            if not match and header is None and not any(blocks) and re.match(r"#\s*fmmforge\b", stripped):
                raise FmmforgeError(
                    f"{source}:{lineno}: damaged fmmforge header (expected '# fmmforge <n,m,p;R> field=Z'); "
                    "fix the line or delete it"
                )
            if match and header is None and not any(blocks):
                fields = re.search(r"\bfield=(Z2|Z)\b", match.group(5))
                header = (
                    (int(match.group(1)), int(match.group(2)), int(match.group(3))),
                    int(match.group(4)),
                    fields.group(1) if fields else None,
                )
            if blocks[-1]:
                blocks.append([])
            continue
        if not stripped:
            continue
        blocks[-1].append((lineno, stripped.split()))
    if not blocks[-1]:
        blocks.pop()
    if len(blocks) != 3 and "substitution information" in text.lower():
        raise FmmforgeError(
            f"{source}: this is a fast-matmul file after subexpression elimination (extra substitution "
            "blocks), not a plain decomposition; give the original file it was made from"
        )
    if len(blocks) != 3:
        raise FmmforgeError(
            f"{source}: found {len(blocks)} block(s) of coefficients, expected 3 "
            "(U for A, V for B, W for C) separated by lines starting with '#'"
        )
    rank = len(blocks[0][0][1])
    for block in blocks:
        for lineno, tokens in block:
            if len(tokens) != rank:
                raise FmmforgeError(
                    f"{source}:{lineno}: row has {len(tokens)} entries but the first row has "
                    f"{rank}; every row needs one entry per product"
                )
    counts = tuple(len(b) for b in blocks)
    check_entries(sum(counts) * rank, f"{source}: the factors")
    fmt = _fastmm_shape(counts, shape, header[0] if header else None, source)
    if header is not None and header[1] != rank:
        raise FmmforgeError(f"{source}: the header says rank {header[1]} but rows have {rank} entries")
    factors = [_fastmm_block(block, source) for block in blocks]
    use_field = field or (header[2] if header and header[2] else "Z")
    try:
        return build_decomposition(*factors, fmt, use_field)
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}: {exc}") from None


def _fastmm_shape(
    counts: tuple[int, ...], shape: Format | None, declared: Format | None, source: str
) -> Format:
    """(M, K, N) from the row counts (MK, KN, MN) of the blocks, checked against hints."""
    mk, kn, mn = counts
    if shape is not None:
        n, m, p = shape
        if (n * m, m * p, n * p) != counts:
            raise FmmforgeError(
                f"{source}: blocks have {mk}, {kn}, {mn} rows but <{n},{m},{p}> needs "
                f"{n * m}, {m * p}, {n * p} (entries of A, B, C); check --shape"
            )
        return shape
    fmt = _infer_shape(mk, kn, mn)
    if fmt is None:
        raise FmmforgeError(
            f"{source}: no matrix format fits blocks of {mk}, {kn}, {mn} rows "
            "(entries of A, B, C); check the file or pass --shape n,m,p"
        )
    if declared is not None and declared != fmt:
        raise FmmforgeError(
            f"{source}: the header says <{','.join(map(str, declared))}> but the blocks fit "
            f"<{','.join(map(str, fmt))}>; fix the header or the rows"
        )
    return fmt


def _infer_shape(mk: int, kn: int, mn: int) -> Format | None:
    """The unique (M, K, N) with M·K = mk, K·N = kn, M·N = mn, if integral."""
    squares = (mk * mn, mk * kn, kn * mn)  # M²·KN, K²·MN, N²·MK
    dims = []
    for sq, div in zip(squares, (kn, mn, mk)):
        if div == 0 or sq % div:
            return None
        root = math.isqrt(sq // div)
        if root * root != sq // div or root < 1:
            return None
        dims.append(root)
    M, K, N = dims
    if (M * K, K * N, M * N) != (mk, kn, mn):
        return None
    return (M, K, N)


def _fastmm_block(block: list[tuple[int, list[str]]], source: str) -> np.ndarray:
    """Rows of tokens → int64 array when every entry is an integer, else Fraction objects."""
    ints = True
    for _lineno, tokens in block:
        if not all(_INT_TOKEN.match(t) for t in tokens):
            ints = False
            break
    if ints:  # at most 18 digits each: int64 holds them
        return np.array([[int(t) for t in tokens] for _l, tokens in block], dtype=np.int64)
    rows = []
    for lineno, tokens in block:
        rows.append([_fastmm_entry(t, source, lineno) for t in tokens])
    return np.array(rows, dtype=object).reshape(len(rows), len(rows[0]) if rows else 0)


def _looks_symbolic(token: str) -> bool:
    """An expression in a parameter (``x``, ``-1/x``, ``2*x^2``, ``eps``) rather than a word."""
    if token.lower() in _NOT_NUMBERS or not re.fullmatch(r"[A-Za-z0-9_.+\-*/^()]+", token):
        return False
    names = re.findall(r"[A-Za-z_]+", token)
    return bool(names) and all(len(n) <= 2 or n.lower() in _PARAMETER_NAMES for n in names)


def _fastmm_entry(token: str, source: str, lineno: int) -> Fraction:
    try:
        exact = exact_token(token)
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}:{lineno}: {exc}") from None
    if exact is not None:
        return exact
    if _looks_symbolic(token):
        raise FmmforgeError(
            f"{source}:{lineno}: entry {_cut(token)!r} is symbolic (a parameter, as in approximate "
            "algorithms); approximate algorithms with a parameter are unsupported, give exact numbers"
        )
    raise FmmforgeError(
        f"{source}:{lineno}: entry {_cut(token)!r} is not a number; "
        "entries must be integers or rationals like 1/2, -0.5 or .125"
    )


# ====================================================================== npz
def _key_format(key: str) -> Format:
    match = _NPZ_KEY.match(key)
    assert match is not None
    return check_format(tuple(int(x) for x in match.group(1, 2, 3)))


def _fmt_key(fmt: Format) -> str:
    return ",".join(map(str, fmt))


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def _parse_npz(
    data: bytes, source: str, allow_pickle: bool, shape: Format | None
) -> dict[str, tuple[Factors, str | None]]:
    """Every scheme of an npz archive's bytes: its raw factors and the field its marker names."""
    if data[:2] != b"PK":
        raise FmmforgeError(
            f"{source} is not an npz archive (a zip of .npy arrays); "
            "give the real format with --format json or --format fastmm"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _DAMAGED as exc:
        raise FmmforgeError(f"{source} is a damaged npz archive ({_cut(str(exc))}); re-export or re-download it") from None
    with archive:
        groups = _npz_groups(archive, source)
        if shape is not None:
            wanted = _fmt_key(shape)
            if wanted not in groups:
                listed = ", ".join(sorted(groups, key=lambda k: tuple(map(int, k.split(",")))))
                if len(listed) > 200:
                    listed = listed[:200] + "..."
                raise FmmforgeError(f"{source} has no scheme for <{wanted}>; it holds {listed}")
            groups = {wanted: groups[wanted]}
        out: dict[str, tuple[Factors, str | None]] = {}
        for base, entry in groups.items():
            fmt = _key_format(base)
            read = lambda part: _npy_member(archive, entry[part], source, allow_pickle)  # noqa: E731
            if "uvw" in entry:
                factors = _split_deepmind(read("uvw"), base, source)
            else:
                missing = [f"{base}.{c}" for c in "uvw" if c not in entry]
                if missing:
                    raise FmmforgeError(f"{source}: key {missing[0]!r} is missing; u, v and w are all needed")
                factors = tuple(_numeric_2d(read(c), f"key {base}.{c!r}", source) for c in "uvw")  # type: ignore[assignment]
            _check_npz_shapes(factors, fmt, base, source)
            out[base] = (factors, _npz_field(read("field"), base, source) if "field" in entry else None)
    return out


def _npz_groups(archive: zipfile.ZipFile, source: str) -> dict[str, dict[str, zipfile.ZipInfo]]:
    """Members by scheme: ``{"2,2,2": {"uvw": info}}`` or ``{"2,2,3": {"u": ..., "v": ..., "w": ...}}``."""
    infos = archive.infolist()
    if len(infos) > _NPZ_MAX_MEMBERS:
        raise FmmforgeError(f"{source} has {len(infos)} members, more than any decomposition archive; check the file")
    groups: dict[str, dict[str, zipfile.ZipInfo]] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise FmmforgeError(
                f"{source}: member {_cut(name)!r} is not an .npy array; this is not an npz of "
                "decomposition factors"
            )
        match = _NPZ_KEY.match(name[:-4])
        if not match:
            raise FmmforgeError(
                f"{source}: key {_cut(name[:-4])!r} is not a matrix format 'n,m,p' (or "
                "'n,m,p.u/.v/.w/.field'); this is not a decomposition archive"
            )
        base = ",".join(match.group(1, 2, 3))
        part = match.group(4) or "uvw"
        entry = groups.setdefault(base, {})
        stacked_clash = (part == "uvw" and any(k in entry for k in "uvw")) or (part in "uvw" and "uvw" in entry)
        if part in entry or stacked_clash:
            raise FmmforgeError(f"{source}: format {base} is stored twice; keep one copy")
        entry[part] = info
    if not any(set(entry) - {"field"} for entry in groups.values()):
        raise FmmforgeError(f"{source} holds no decompositions")
    return groups


def _npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, allow_pickle: bool) -> np.ndarray:
    """One .npy member, its header checked (dtype, size) before anything is allocated."""
    key = info.filename[:-4]
    check_entries(info.file_size, f"{source}: unpacking key {key!r}", unit="bytes", per_entry=8, slack=65536)
    damaged = f"{source}: key {key!r} is damaged"
    try:
        raw = archive.read(info)
        fh = io.BytesIO(raw)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        else:
            raise FmmforgeError(f"{damaged} (.npy format version {version} is not read here); re-save it with numpy")
    except _DAMAGED as exc:
        raise FmmforgeError(f"{damaged} ({_cut(str(exc))}); re-export or re-download it") from None
    shape, fortran, dtype = header
    if not all(isinstance(x, int) and x >= 0 for x in shape):
        raise FmmforgeError(f"{damaged} (its header gives the shape {_cut(str(shape))}); re-export or re-download it")
    count = math.prod(shape)
    check_entries(count, f"{source}: key {key!r}")
    if dtype.hasobject:
        return _unpickle_member(raw, key, source, allow_pickle)
    if dtype.kind not in "biufUS" or dtype.fields is not None or dtype.subdtype is not None:
        raise FmmforgeError(f"{source}: key {key!r} holds {dtype} entries, not numbers; it cannot be a factor")
    offset = fh.tell()
    if len(raw) - offset < count * dtype.itemsize:
        raise FmmforgeError(f"{damaged} (it is shorter than its header says); re-export or re-download it")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def _unpickle_member(raw: bytes, key: str, source: str, allow_pickle: bool) -> np.ndarray:
    if not allow_pickle:
        raise FmmforgeError(
            f"{source}: key {key!r} holds pickled object arrays (as DeepMind's non-cubic "
            "entries do); unpickling an untrusted file can run arbitrary code, so pass "
            "--allow-pickle only if you trust the file"
        )
    try:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=True)
    except Exception as exc:  # noqa: BLE001 - unpickling a damaged (trusted) file can raise anything
        raise FmmforgeError(f"{source}: key {key!r} cannot be unpickled ({_cut(str(exc))}); the file is damaged") from None


def _npz_field(arr: np.ndarray, key: str, source: str) -> str:
    """The field a ``n,m,p.field`` marker (a small string array such as ``"Z2"``) names."""
    if arr.dtype.kind in "US" and arr.size == 1:
        value = arr.reshape(()).item()
        value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if value in ("Z", "Z2"):
            return value
    raise FmmforgeError(f"{source}: key '{key}.field' must hold \"Z\" or \"Z2\"; fix or remove it")


def _numeric_2d(arr: Any, what: str, source: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "biuf":
        desc = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise FmmforgeError(f"{source}: {what} is a {desc}, not a 2-D numeric factor matrix")
    return arr


def read_npz_factors(
    path: str | os.PathLike[str], *, allow_pickle: bool = False, shape: Format | None = None
) -> dict[str, Factors]:
    """The raw factors of every scheme in an npz, keyed ``"n,m,p"``, as stored.

    Dtypes and DeepMind's orientation (w indexes C^T) are kept. Shapes are checked against
    the key. With ``shape`` only that key is read (an error if absent).
    """
    p = Path(path)
    return {key: factors for key, (factors, _field) in _parse_npz(_read_bytes(p), str(p), allow_pickle, shape).items()}


def _split_deepmind(arr: np.ndarray, key: str, source: str) -> Factors:
    if arr.dtype == object:
        if arr.shape != (3,):
            raise FmmforgeError(f"{source}: key {key!r} is an object array of shape {arr.shape}, expected (u, v, w)")
        return tuple(_numeric_2d(arr[i], f"key {key!r} factor {'uvw'[i]}", source) for i in range(3))  # type: ignore[return-value]
    if arr.ndim != 3 or arr.shape[0] != 3 or arr.dtype.kind not in "biuf":
        raise FmmforgeError(
            f"{source}: key {key!r} is a {arr.dtype} array of shape {arr.shape}, expected (3, n*n, R)"
        )
    return arr[0], arr[1], arr[2]


def _check_npz_shapes(factors: Factors, fmt: Format, key: str, source: str) -> None:
    n, m, p = fmt
    want = (n * m, m * p, p * n)
    got = tuple(f.shape for f in factors)
    ranks = {f.shape[1] for f in factors}
    if tuple(s[0] for s in got) != want or len(ranks) != 1:
        raise FmmforgeError(
            f"{source}: key {key!r} has factors of shapes {', '.join(map(str, got))}; "
            f"<{key}> needs {want[0]}, {want[1]}, {want[2]} rows and equal ranks"
        )


def _npz_arrays(d: Decomposition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u, v, w_t for an npz: int64 when integral, float64 when exactly representable."""
    parts = to_deepmind(d)
    if all(den == 1 for _num, den in parts):
        return tuple(np.asarray(num, dtype=np.int64) for num, _ in parts)  # type: ignore[return-value]
    for num, den in parts:
        dyadic = den & (den - 1) == 0
        if not dyadic or (num.size and max(int(num.max()), -int(num.min())) > 2**53):
            raise FmmforgeError(
                f"{d!r} has entries such as 1/{den} that float64 cannot hold exactly; "
                "export it as json instead"
            )
    return tuple(num.astype(np.float64) / den for num, den in parts)  # type: ignore[return-value]


def npz_arrays(decompositions: Iterable[Decomposition]) -> dict[str, np.ndarray]:
    """The arrays of an npz holding ``decompositions``: cubic ones as DeepMind's stacked
    (3, n², R) array, others as the pickle-free keys ``n,m,p.u/.v/.w``, and for mod-2 schemes a
    marker ``n,m,p.field`` = "Z2" (so the field survives; DeepMind's files have none and are Z).
    One scheme per format (the key is the format)."""
    arrays: dict[str, np.ndarray] = {}
    for d in decompositions:
        fmt = _matmul_format(d, "npz")
        key = _fmt_key(fmt)
        if key in arrays or f"{key}.u" in arrays:
            raise FmmforgeError(f"two schemes of <{key}> cannot share one npz file; write them separately")
        u, v, w = _npz_arrays(d)
        if fmt[0] == fmt[1] == fmt[2]:
            arrays[key] = np.stack([u, v, w])
        else:
            arrays.update({f"{key}.u": u, f"{key}.v": v, f"{key}.w": w})
        if d.field != "Z":
            arrays[f"{key}.field"] = np.array(d.field)
    return arrays


def write_npz(decompositions: Iterable[Decomposition], path: str | os.PathLike[str]) -> None:
    """Write schemes to one npz atomically (layout: :func:`npz_arrays`)."""
    write_npz_arrays(npz_arrays(decompositions), path)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The compressed npz of ``arrays``; refuses object arrays (they would need pickle)."""
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise FmmforgeError(f"array {key!r} has dtype object; npz files written here stay pickle-free")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def write_npz_arrays(arrays: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """savez_compressed ``arrays`` atomically (see :func:`npz_bytes`)."""
    write_bytes(path, npz_bytes(arrays))
