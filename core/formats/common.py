"""What two or more file formats share: the size limits on what is read, reading a file's
bytes, and building an unchecked decomposition from factor arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import check_entries, max_entries
from fmmforge.core.tensor import Format

# Bytes a file may hold per allowed factor entry: json and fastmm spend a few per entry; an
# npz (8 bytes per entry uncompressed) often holds many schemes, each checked on its own.
_BYTES_PER_ENTRY = {"json": 16, "fastmm": 16, "catalogue": 16, "formulas": 16, "npz": 64}
_FILE_SLACK = 1 << 20


def max_file_bytes() -> int:
    """The largest file read: a few bytes per factor entry that FMMFORGE_MAX_ENTRIES allows."""
    return max(_BYTES_PER_ENTRY.values()) * max_entries() + _FILE_SLACK


def check_size(size: int, source: str, kind: str) -> None:
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
        check_size(len(data), source, "npz")
    return data


def read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FmmforgeError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise FmmforgeError(f"{path} is a directory; give the path of a decomposition file")
    try:
        with path.open("rb") as fh:
            return read_limited(fh, str(path))
    except OSError as exc:
        raise FmmforgeError(f"cannot read {path}: {exc.strerror or exc}") from None


def matmul_format(d: Decomposition, what: str) -> Format:
    if d.format is None:
        raise FmmforgeError(
            f"only matrix-multiplication decompositions can be written as {what}; "
            f"{d.target.describe()} is a general tensor"
        )
    return d.format


def build_decomposition(u: Any, v: Any, w: Any, fmt: Format, field: str) -> Decomposition:
    """An unchecked decomposition of ``<fmt>`` from factor arrays in fmmforge's convention."""
    return Decomposition.unchecked(*(np.asarray(x) for x in (u, v, w)), fmt, field=field)


def cut(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def json_rows_text(doc: dict[str, Any], row_keys: tuple[str, ...], value_text: Callable[[str, Any], str],
                   separators: tuple[str, str] = (",", ":")) -> str:
    """A JSON object with one list item per line under ``row_keys`` (diff-friendly), other values
    as ``value_text(key, value)`` gives them."""
    parts = []
    for key, value in doc.items():
        if key in row_keys:
            rows = [json.dumps(row, separators=separators, ensure_ascii=False) for row in value]
            text = "[\n    " + ",\n    ".join(rows) + "\n  ]" if rows else "[]"
        else:
            text = value_text(key, value)
        parts.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
