"""DeepMind's AlphaTensor npz layout.

One key ``"n,m,p"`` per scheme, holding a stacked ``(3, n*n, R)`` array for cubic formats or
(in DeepMind's own files) a *pickled* object array ``(u, v, w)`` otherwise. Pickles can run
arbitrary code when loaded, so they are refused unless the caller says the file is trusted
(``allow_pickle=True``); fmmforge itself writes non-cubic schemes in a pickle-free layout of
three keys ``"n,m,p.u"``, ``"n,m,p.v"``, ``"n,m,p.w"``, and a Z2 scheme with a marker key
``"n,m,p.field"``. In every npz layout w indexes C *transposed* (p×n, row-major), as in
DeepMind's files; readers and writers convert.
"""

from __future__ import annotations

import io
import math
import os
import re
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from fmmforge.core.atomic import write_bytes
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import MAX_FLOAT_DENOMINATOR, absmax, check_entries
from fmmforge.core.formats.common import build_decomposition, cut, matmul_format, read_bytes
from fmmforge.core.tensor import Format, check_format

_NPZ_MAX_MEMBERS = 4096
# Errors numpy's .npy header parser and zipfile raise on damaged bytes.
_DAMAGED = (
    ValueError, SyntaxError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
    EOFError, OSError, NotImplementedError, zipfile.BadZipFile, zlib.error, tokenize.TokenError,
    RuntimeError,  # zipfile's word for members it cannot unpack (encryption, unknown methods)
)
Factors = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Raw factor arrays (u, v, w) as stored in an npz file (w indexes C transposed)."""
_NPZ_KEY = re.compile(r"^(\d{1,9}),(\d{1,9}),(\d{1,9})(?:\.(u|v|w|field))?$")


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
    n, _m, p = matmul_format(d, "npz")
    (u, v, w), (du, dv, dw) = d.numerators(), d.denominators()
    return (u, du), (v, dv), (_c_transposed(w, n, p), dw)


def read_npz_data(
    data: bytes, *, source: str, shape: Format | None, field: str | None, allow_pickle: bool
) -> list[tuple[str, Decomposition]]:
    """Every scheme of an npz archive's bytes as ``(key, unchecked decomposition)``; ``field``
    None means the field the key's marker names, else Z."""
    out = []
    for key, (factors, file_field) in _parse_npz(data, source, allow_pickle, shape).items():
        try:
            out.append((key, from_deepmind(*factors, _key_format(key), field or file_field or "Z")))
        except FmmforgeError as exc:
            raise FmmforgeError(f"{source}: key {key!r}: {exc}") from None
    return out


def read_npz_factors(
    path: str | os.PathLike[str], *, allow_pickle: bool = False, shape: Format | None = None
) -> dict[str, Factors]:
    """The raw factors of every scheme in an npz, keyed ``"n,m,p"``, as stored.

    Dtypes and DeepMind's orientation (w indexes C^T) are kept. Shapes are checked against
    the key. With ``shape`` only that key is read (an error if absent).
    """
    p = Path(path)
    return {key: factors for key, (factors, _field) in _parse_npz(read_bytes(p), str(p), allow_pickle, shape).items()}


def _key_format(key: str) -> Format:
    match = _NPZ_KEY.match(key)
    assert match is not None
    return check_format(tuple(int(x) for x in match.group(1, 2, 3)))


def _fmt_key(fmt: Format) -> str:
    return ",".join(map(str, fmt))


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
        raise FmmforgeError(f"{source} is a damaged npz archive ({cut(str(exc))}); re-export or re-download it") from None
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
                f"{source}: member {cut(name)!r} is not an .npy array; this is not an npz of "
                "decomposition factors"
            )
        match = _NPZ_KEY.match(name[:-4])
        if not match:
            raise FmmforgeError(
                f"{source}: key {cut(name[:-4])!r} is not a matrix format 'n,m,p' (or "
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
    if info.flag_bits & 0x1:
        raise FmmforgeError(f"{source}: key {key!r} is encrypted; fmmforge reads unencrypted npz files only")
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
        raise FmmforgeError(f"{damaged} ({cut(str(exc))}); re-export or re-download it") from None
    shape, fortran, dtype = header
    if not all(isinstance(x, int) and x >= 0 for x in shape):
        raise FmmforgeError(f"{damaged} (its header gives the shape {cut(str(shape))}); re-export or re-download it")
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
        raise FmmforgeError(f"{source}: key {key!r} cannot be unpickled ({cut(str(exc))}); the file is damaged") from None


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
        # the reader takes a float as exact only up to MAX_FLOAT_DENOMINATOR: never write what it refuses
        if not dyadic or den > MAX_FLOAT_DENOMINATOR or absmax(num) > 2**53:
            raise FmmforgeError(
                f"{d!r} has entries such as 1/{den} that float64 cannot hold exactly "
                f"(npz keeps power-of-two denominators up to 2^{MAX_FLOAT_DENOMINATOR.bit_length() - 1}); "
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
        fmt = matmul_format(d, "npz")
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
