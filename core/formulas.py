"""Algorithms as formulas people read, and back (sympy does the symbolic side).

    M1 = (A11 + A22)·(B11 + B22)
    ...
    C11 = M1 + M4 - M5 + M7
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import sympy

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import matrix_entry_name


def _symbols(letter: str, rows: int, cols: int) -> list[sympy.Symbol]:
    return [sympy.Symbol(matrix_entry_name(letter, i, cols)) for i in range(rows * cols)]


def _combination(column: np.ndarray, den: int, symbols: list[sympy.Symbol]) -> sympy.Expr:
    return sympy.Add(*[sympy.Rational(int(c), den) * s for c, s in zip(column.tolist(), symbols) if c])


def _paren(expr: sympy.Expr) -> str:
    text = sympy.sstr(expr)
    return f"({text})" if isinstance(expr, sympy.Add) else text


def render(d: Decomposition) -> list[str]:
    """Lines ``M_r = (...)·(...)`` for every product, then ``C_ik = ...`` for every output."""
    if d.format is None:
        raise FmmforgeError("formulas are only printed for matrix-multiplication schemes")
    n, m, p = d.format
    a_sym, b_sym = _symbols("A", n, m), _symbols("B", m, p)
    m_sym = [sympy.Symbol(f"M{r + 1}") for r in range(d.rank)]
    (U, V, W), (du, dv, dw) = d.numerators(), d.denominators()
    lines = []
    for r in range(d.rank):
        left = _combination(U[:, r], du, a_sym)
        right = _combination(V[:, r], dv, b_sym)
        lines.append(f"{m_sym[r]} = {_paren(left)}·{_paren(right)}")
    for c in range(n * p):
        expr = _combination(W[c, :], dw, m_sym)
        lines.append(f"{matrix_entry_name('C', c, p)} = {sympy.sstr(expr) if expr != 0 else '0'}")
    return lines


def parse(text: str, fmt: tuple[int, int, int], field: str = "Z") -> Decomposition:
    """Parse formulas in the form :func:`render` prints (``*`` or ``·`` for the product)."""
    n, m, p = fmt
    a_sym, b_sym = _symbols("A", n, m), _symbols("B", m, p)
    products: list[tuple[sympy.Expr, sympy.Expr]] = []
    outputs: dict[str, sympy.Expr] = {}
    names = {str(s): s for s in a_sym + b_sym}
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for line in lines:
        lhs, _, rhs = line.partition("=")
        lhs = lhs.strip()
        rhs = rhs.replace("·", "*")
        if lhs.startswith("M"):
            left, right = _split_product(rhs)
            products.append((sympy.parse_expr(left, local_dict=names), sympy.parse_expr(right, local_dict=names)))
            names[lhs] = sympy.Symbol(lhs)
        elif lhs.startswith("C"):
            outputs[lhs] = sympy.parse_expr(rhs, local_dict=names)
        else:
            raise FmmforgeError(f"cannot read formula line {line!r}")
    m_sym = [sympy.Symbol(f"M{r + 1}") for r in range(len(products))]
    U = [[_coeff(left, s) for s in a_sym] for left, _ in products]
    V = [[_coeff(right, s) for s in b_sym] for _, right in products]
    c_names = [matrix_entry_name("C", c, p) for c in range(n * p)]
    W = [[_coeff(outputs.get(cn, sympy.Integer(0)), s) for s in m_sym] for cn in c_names]
    return Decomposition.create(
        np.array(U, dtype=object).T, np.array(V, dtype=object).T, np.array(W, dtype=object), fmt, field=field
    )


def _split_product(rhs: str) -> tuple[str, str]:
    depth = 0
    for i, ch in enumerate(rhs):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "*" and depth == 0:
            return rhs[:i], rhs[i + 1 :]
    raise FmmforgeError(f"product {rhs!r} is not of the form (...)·(...)")


def _coeff(expr: sympy.Expr, sym: sympy.Symbol) -> Fraction:
    c = sympy.expand(expr).coeff(sym)
    r = sympy.Rational(c)
    return Fraction(int(r.p), int(r.q))
