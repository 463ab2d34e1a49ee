"""The public catalogue's JSON (Perminov's FastMatrixMultiplication, MIT): format name ``catalogue``.

One object per scheme: ``n`` the format ``[n, m, p]``, ``m`` the rank, ``z2`` true for a mod-2
scheme, and ``u``, ``v``, ``w`` with one list per product: ``u`` over the entries of A (n×m,
row-major), ``v`` over B (m×p, row-major), ``w`` over C *transposed* (entry ``j·n + i`` is
C[i][j]), as in DeepMind's files. Entries are integers or strings such as ``"1/2"``. Optional
``multiplications`` and ``elements`` hold the same scheme as formula lines
(``m1 = (a11 + a22) * (b11 + b22)``, ``c11 = m1 + m4 - m5 + m7``); they are written for
people and not read back: ``u``, ``v``, ``w`` are the scheme.

fmmforge's own json (``schema``, ``U``/``V``/``W`` with products as columns, C not transposed)
is the ``json`` format; the two are told apart by their keys.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import check_entries
from fmmforge.core.formats.common import build_decomposition, json_rows_text, matmul_format
from fmmforge.core.formats.formula_lines import formula_lines
from fmmforge.core.formats.json import entry_json, json_array, json_entry, json_format, json_loads, small_int_rows
from fmmforge.core.tensor import Format

CATALOGUE_KEYS = ("n", "m", "u", "v", "w")


def is_catalogue_document(doc: Any) -> bool:
    """Whether a parsed JSON value is meant as the catalogue's (its keys, not fmmforge's ``schema``):
    one with some keys missing is read as the catalogue's too, so the message names what is missing."""
    return isinstance(doc, dict) and "schema" not in doc and any(k in doc for k in ("n", "u", "v", "w", "z2"))


def _c_transposed(n: int, p: int) -> np.ndarray:
    """order[k] = the row-major index of C's entry at the catalogue's position k = j·n + i."""
    return np.array([i * p + j for j in range(p) for i in range(n)], dtype=np.int64)


def catalogue_document(d: Decomposition) -> dict[str, Any]:
    """The catalogue's JSON object for ``d`` (formula lines included)."""
    n, m, p = matmul_format(d, "catalogue json")
    U, V, W = d.factors()
    order = _c_transposed(n, p)
    mults, elements = formula_lines(d, lower=True, times=" * ")
    return {
        "n": [n, m, p],
        "m": d.rank,
        "z2": d.field == "Z2",
        "u": [[entry_json(x) for x in col] for col in U.T.tolist()],
        "v": [[entry_json(x) for x in col] for col in V.T.tolist()],
        "w": [[entry_json(W[k, r]) for k in order.tolist()] for r in range(d.rank)],
        "multiplications": mults,
        "elements": elements,
    }


def dumps_catalogue(d: Decomposition) -> str:
    """The catalogue's JSON text for ``d``: one product per line."""
    return json_rows_text(catalogue_document(d), ("u", "v", "w", "multiplications", "elements"),
                          lambda _key, value: json.dumps(value), separators=(", ", ": "))


def loads_catalogue(
    text: str, *, source: str = "catalogue JSON", shape: tuple[int, int, int] | None = None,
    field: str | None = None,
) -> Decomposition:
    """Parse the catalogue's JSON into an unchecked decomposition of fmmforge's convention."""
    return catalogue_from_document(json_loads(text, source), source=source, shape=shape, field=field)


def catalogue_from_document(
    doc: Any, *, source: str, shape: tuple[int, int, int] | None = None, field: str | None = None,
) -> Decomposition:
    if not isinstance(doc, dict):
        raise FmmforgeError(f"{source}: expected a JSON object with keys n, m, u, v, w (the catalogue's format)")
    missing = [k for k in ("n", "u", "v", "w") if k not in doc]
    if missing:
        raise FmmforgeError(f"{source}: key(s) {', '.join(missing)} missing; the catalogue's JSON has n, m, u, v, w")
    fmt: Format = json_format(doc["n"], source)
    if shape is not None and tuple(shape) != fmt:
        raise FmmforgeError(
            f"{source} holds a <{','.join(map(str, fmt))}> scheme, not the requested "
            f"<{','.join(map(str, shape))}>; drop --shape or pass the right one"
        )
    z2 = doc.get("z2", False)
    if not isinstance(z2, bool):
        raise FmmforgeError(f"{source}: \"z2\" must be true or false, got {json.dumps(z2)[:40]}")
    n, m, p = fmt
    check_entries(n * m + m * p + n * p, f"{source}: the entries of <{n},{m},{p}>")  # before any array of them
    factors = [_products(doc[key], key, size, source) for key, size in (("u", n * m), ("v", m * p), ("w", n * p))]
    counts = [len(f) for f in factors]
    if len(set(counts)) != 1:
        raise FmmforgeError(
            f"{source}: u, v, w have {', '.join(map(str, counts))} products; they need one list per product each"
        )
    rank = counts[0]
    declared = doc.get("m", rank)
    if declared != rank or isinstance(declared, bool):
        raise FmmforgeError(f"{source}: \"m\" (the rank) says {json.dumps(declared)[:40]} but u, v, w hold {rank} products")
    U, V, Wc = (json_array(f, n_rows).T if rank else np.zeros((n_rows, 0), dtype=np.int64)
                for f, n_rows in zip(factors, (n * m, m * p, n * p)))
    W = np.empty_like(Wc)
    W[_c_transposed(n, p)] = Wc
    try:
        return build_decomposition(U, V, W, fmt, field or ("Z2" if z2 else "Z"))
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}: {exc}") from None


def _products(value: Any, key: str, size: int, source: str) -> list[list[Any]]:
    """One list of ``size`` exact entries per product."""
    if not isinstance(value, list):
        raise FmmforgeError(f"{source}: \"{key}\" is not a list of products")
    check_entries(len(value) * size, f"{source}: factor {key}")
    if small_int_rows(value, size):
        return value  # the common case: small integers only, nothing to convert
    out = []
    for r, row in enumerate(value):
        if not isinstance(row, list):
            raise FmmforgeError(f"{source}: {key}[{r}] is not a list of entries")
        if len(row) != size:
            raise FmmforgeError(
                f"{source}: {key}[{r}] has {len(row)} entries but the format needs {size} "
                f"(one per entry of {'ABC'['uvw'.index(key)]})"
            )
        out.append([json_entry(x, f"{key}[{r}][{j}]", source) for j, x in enumerate(row)])
    return out
