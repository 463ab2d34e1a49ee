"""fmmforge's own json format: a versioned schema (:data:`JSON_SCHEMA`, :data:`JSON_VERSION`).

Exact: integers, or strings such as ``"1/2"`` for the rare non-integer entries, so nothing is
ever rounded. It also carries the field (Z or Z2), a name and provenance.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import ENTRY_LIMIT, MAX_FLOAT_DENOMINATOR, MAX_TOKEN_CHARS, check_entries, check_small, exact_token
from fmmforge.core.formats.common import build_decomposition, json_rows_text, matmul_format
from fmmforge.core.tensor import Format

JSON_SCHEMA = "fmmforge.decomposition"
JSON_VERSION = 1
JSON_CONVENTION = (
    "U rows: entries of A (n x m, row-major); V rows: entries of B (m x p, row-major); "
    "W rows: entries of C (n x p, row-major, not transposed); column r: product r"
)
_JSON_RESERVED = ("schema", "version", "format", "field", "rank", "convention", "U", "V", "W")


def entry_json(f: Fraction) -> int | str:
    return f.numerator if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _factor_rows(num: np.ndarray, den: int) -> list[list[int | str]]:
    if den == 1:
        return num.tolist()
    return [[entry_json(Fraction(x, den)) for x in row] for row in num.tolist()]


def json_document(d: Decomposition, **meta: Any) -> dict[str, Any]:
    """The JSON-ready dict of the fmmforge schema for ``d`` (see :func:`dumps_json`)."""
    fmt = matmul_format(d, "json")
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
    return json_rows_text(json_document(d, **meta), ("U", "V", "W"), _metadata_text)


def _metadata_text(key: str, value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=isinstance(value, dict))
    except (TypeError, ValueError) as exc:
        raise FmmforgeError(f"metadata {key!r} cannot be written as JSON: {exc}") from None


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
    return json_from_document(json_loads(text, source), source=source, shape=shape, field=field)


def json_from_document(
    doc: Any, *, source: str, shape: tuple[int, int, int] | None = None, field: str | None = None,
) -> tuple[Decomposition, dict[str, Any]]:
    """:func:`parse_json_document` for a JSON value already parsed."""
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
    fmt = json_format(doc.get("format"), source)
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
    arrays = [json_array(f, rank) for f in factors]
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


def json_loads(text: str, source: str) -> Any:
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


def json_array(rows: list[list[Fraction | int]], rank: int) -> np.ndarray:
    """int64 when every entry is a machine integer (the common case, fast), else Fractions."""
    if all(type(x) is int and -ENTRY_LIMIT < x < ENTRY_LIMIT for row in rows for x in row):
        return np.array(rows, dtype=np.int64).reshape(len(rows), rank)
    return np.array(rows, dtype=object).reshape(len(rows), rank)


def json_format(value: Any, source: str) -> Format:
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
    if value and type(value[0]) is list:
        width0 = len(value[0])
        check_entries(rows * width0, f"{source}: factor {name}")
        if small_int_rows(value, width0):
            return value  # the common case: small integers only, nothing to convert
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
        out.append([json_entry(x, f"{name}[{i}][{j}]", source) for j, x in enumerate(row)])
    return out


def small_int_rows(rows: list[Any], width: int) -> bool:
    """Whether ``rows`` are lists of ``width`` machine integers each (below 2^62 in magnitude):
    entries that need no conversion and no check, the common case of every scheme file."""
    return all(type(row) is list and len(row) == width and all(type(x) is int and -ENTRY_LIMIT < x < ENTRY_LIMIT for x in row)
               for row in rows)


def json_entry(x: Any, where: str, source: str) -> Fraction | int:
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
