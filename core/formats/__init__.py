"""Import and export of decompositions: fmmforge JSON, DeepMind-style npz, fast-matmul text,
the public catalogue's JSON and formula lines.

Five formats (one module each: :mod:`.json`, :mod:`.npz`, :mod:`.fastmm`, :mod:`.catalogue_json`,
:mod:`.formula_lines`), one convention
inside fmmforge (see tensor.py): U indexes the entries of A (n×m, row-major), V those of B
(m×p, row-major), W those of C (n×p, row-major, *not* transposed); column r of each factor is
product r. This module holds the entry points: the format names (:func:`check_format_name`,
:func:`guess_format`, ...), :func:`read_file`, :func:`read_data`, :func:`encode` and
:func:`write_file`.

Readers return *unchecked* decompositions (the ``verify`` command reports rather than
raises); every problem with a file is a one-line :class:`FmmforgeError` naming the file.
Writers never leave a half-written file: they go through :mod:`fmmforge.core.atomic`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fmmforge.core.atomic import write_bytes
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats.common import check_size, read_bytes, read_limited
from fmmforge.core.formats.catalogue_json import catalogue_from_document, dumps_catalogue, is_catalogue_document
from fmmforge.core.formats.fastmm import dumps_fastmm, loads_fastmm
from fmmforge.core.formats.formula_lines import dumps_formulas, loads_formulas, looks_like_formulas
from fmmforge.core.formats.json import json_loads, dumps_json, json_from_document
from fmmforge.core.formats.npz import npz_arrays, npz_bytes, read_npz_data
from fmmforge.core.tensor import check_format

__all__ = [
    "FORMATS", "check_format_name", "encode", "guess_format", "guess_write_format", "read_data", "read_file",
    "read_limited", "sniff_format", "write_file", "write_format",
]

FORMATS = ("json", "npz", "fastmm", "catalogue", "formulas")
FORMAT_ALIASES = {
    "fast-matmul": "fastmm", "fast_matmul": "fastmm",
    "catalogue-json": "catalogue", "catalog": "catalogue", "fmm-json": "catalogue",
    "formula": "formulas", "formula-lines": "formulas",
}
# File name endings each format is written under (fastmm files usually have none; the catalogue's
# JSON also ends in .json, so writing it takes --format catalogue).
SUFFIXES = {".json": "json", ".npz": "npz", ".fastmm": "fastmm", ".txt": "fastmm", "": "fastmm",
            ".formulas": "formulas"}
# What each format's text is called in messages about it.
_TEXT_KIND = {"json": "json", "catalogue": "json", "fastmm": "fastmm", "formulas": "formulas"}


def check_format_name(fmt: str) -> str:
    """The canonical name of a file format (case-insensitive; ``fast-matmul`` means fastmm)."""
    name = fmt.strip().lower()
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise FmmforgeError(
            f"unknown file format {fmt!r}; use one of {', '.join(FORMATS)} (or fast-matmul for fastmm, "
            "fmm-json for catalogue)"
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
            ".fastmm, .txt or with no ending (fastmm), .formulas, or give --format "
            "json|npz|fastmm|catalogue|formulas"
        )
    return SUFFIXES[suffix]


def sniff_format(data: bytes, path: str | os.PathLike[str] | None = None) -> str:
    """The format of file content: a zip is npz, a JSON object json (fmmforge's or the catalogue's:
    :func:`read_data` tells them apart by their keys), lines like ``M1 = ...`` formulas, rows of
    numbers fastmm. Content that is none of these is read as what ``path``'s ending names
    (so a broken .json file is reported as broken JSON), else as fastmm."""
    if data[:2] == b"PK":
        return "npz"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] == b"{":
        return "json"
    if looks_like_formulas(head[:65536].decode("utf-8", "replace")):
        return "formulas"
    return guess_format(path) if path is not None else "fastmm"


def write_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format a write to ``path`` uses: ``fmt`` checked, else the one its name asks for."""
    return guess_write_format(path) if fmt is None else check_format_name(fmt)


def _decode_text(data: bytes, fmt: str, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        hint = " (it looks like an npz archive: use --format npz)" if data[:2] == b"PK" else ""
        raise FmmforgeError(
            f"{source} is not a UTF-8 text file, so it cannot be a {fmt} file{hint}"
        ) from None


def read_file(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    shape: tuple[int, int, int] | None = None,
    field: str | None = None,
    allow_pickle: bool = False,
) -> list[tuple[str, Decomposition]]:
    """Read every decomposition in a file as ``(label, unchecked decomposition)`` pairs.

    ``fmt`` None: from the content (:func:`sniff_format`). ``shape`` checks (json, fastmm) or selects
    (npz) the format n,m,p; ``field`` None means what the file says (json, fastmm header,
    npz field marker) else Z. ``allow_pickle`` must stay False unless the npz file is
    trusted. The label is the npz key, or the file stem for the single-scheme formats.
    """
    p = Path(path)
    if fmt is not None:
        check_format_name(fmt)
    return read_data(read_bytes(p), fmt, source=str(p), label=p.stem, shape=shape, field=field,
                     allow_pickle=allow_pickle, path=p)


def read_data(
    data: bytes,
    fmt: str | None,
    *,
    source: str,
    label: str,
    shape: tuple[int, int, int] | None = None,
    field: str | None = None,
    allow_pickle: bool = False,
    path: str | os.PathLike[str] | None = None,
) -> list[tuple[str, Decomposition]]:
    """:func:`read_file` for bytes already read (standard input); ``fmt`` None: from the content
    (and, for content that is no format at all, from ``path``'s ending, see :func:`sniff_format`)."""
    kind = sniff_format(data, path) if fmt is None else check_format_name(fmt)
    check_size(len(data), source, kind)
    if field is not None:
        check_field(field)
    if shape is not None:
        shape = check_format(tuple(shape))
    if kind == "npz":
        return read_npz_data(data, source=source, shape=shape, field=field, allow_pickle=allow_pickle)
    text = _decode_text(data, _TEXT_KIND[kind], source)
    if kind == "fastmm":
        return [(label, loads_fastmm(text, source=source, shape=shape, field=field))]
    if kind == "formulas":
        return [(label, loads_formulas(text, source=source, shape=shape, field=field))]
    doc = json_loads(text, source)
    if kind == "catalogue" or (fmt is None and is_catalogue_document(doc)):
        return [(label, catalogue_from_document(doc, source=source, shape=shape, field=field))]
    return [(label, json_from_document(doc, source=source, shape=shape, field=field)[0])]


def encode(d: Decomposition, fmt: str, **meta: Any) -> bytes:
    """The bytes of ``d`` in file format ``fmt`` (see :func:`write_file` for ``meta``)."""
    kind = check_format_name(fmt)
    if kind == "json":
        return dumps_json(d, **meta).encode("utf-8")
    if kind == "fastmm":
        return dumps_fastmm(d, name=meta.get("name")).encode("utf-8")
    if kind == "formulas":
        return dumps_formulas(d, name=meta.get("name")).encode("utf-8")
    if kind == "catalogue":
        return dumps_catalogue(d).encode("utf-8")
    return npz_bytes(npz_arrays([d]))


def write_file(
    d: Decomposition, path: str | os.PathLike[str], fmt: str | None = None, **meta: Any
) -> None:
    """Write one decomposition atomically in :func:`write_format`'s format.

    ``meta`` (name, provenance, ...) goes into json documents; fastmm keeps only the name,
    in its header comment; npz keeps neither (but keeps a Z2 field, as a marker array).
    """
    write_bytes(path, encode(d, write_format(path, fmt), **meta))
