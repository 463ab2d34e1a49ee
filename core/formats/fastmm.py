"""The coefficient files of Benson & Ballard's fast-matmul code generator.

Three blocks of rows (U, V, W; one row per matrix entry in row-major order, one column per
product) separated by lines starting with ``#``. The shape is not stored; it is inferred from
the block row counts. Their generator reads entries with ``float()``, so entries that are
dyadic rationals are written as exact decimals (``0.5``, ``-0.125``) and only other rationals
as ``a/b``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import check_entries, exact_token
from fmmforge.core.formats.common import build_decomposition, cut, matmul_format
from fmmforge.core.tensor import Format

_INT_TOKEN = re.compile(r"^[+-]?[0-9]{1,18}$")
_FMMFORGE_HEADER = re.compile(r"^#\s*fmmforge\s+<(\d{1,9}),(\d{1,9}),(\d{1,9});(\d{1,12})>(.*)$")
_NOT_NUMBERS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_PARAMETER_NAMES = {"eps", "epsilon", "lambda", "alpha", "beta", "delta", "phi", "theta"}


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
    n, m, p = matmul_format(d, "fastmm")
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
            f"{source}:{lineno}: entry {cut(token)!r} is symbolic (a parameter, as in approximate "
            "algorithms); approximate algorithms with a parameter are unsupported, give exact numbers"
        )
    raise FmmforgeError(
        f"{source}:{lineno}: entry {cut(token)!r} is not a number; "
        "entries must be integers or rationals like 1/2, -0.5 or .125"
    )
