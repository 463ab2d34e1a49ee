"""Transformations that map a valid decomposition to a valid one (docs/background.md §1).

Every function returns a verified Decomposition: the maps are exact, so verification is a
cheap safety net that never fails for a valid input.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import ENTRY_LIMIT, absmax, check_entries, exact_matrix, fraction_array


def _matmul_only(d: Decomposition, what: str) -> tuple[int, int, int]:
    if d.format is None:
        raise FmmforgeError(f"{what} needs a matmul decomposition, not a general tensor")
    return d.format


def _build(d: Decomposition, U: Any, V: Any, W: Any, fmt: tuple[int, int, int]) -> Decomposition:
    return Decomposition.create(U, V, W, fmt, field=d.field)


def _permute_rows(num: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Rows indexed by a rows×cols matrix in row-major order, re-indexed by its transpose."""
    rank = num.shape[1]
    return num.reshape(rows, cols, rank).transpose(1, 0, 2).reshape(rows * cols, rank)


def _scaled(factor: tuple[np.ndarray, int]) -> np.ndarray:
    num, den = factor
    return fraction_array(num, den) if den != 1 else num


def rotate(d: Decomposition) -> Decomposition:
    """Cyclic rotation <n,m,p> -> <m,p,n>.

    In the symmetric (trace) form Σ A_ij B_jk C_ki the three factors rotate; C is indexed
    row-major here, so W is transposed to C^T before and after.
    """
    n, m, p = _matmul_only(d, "rotation")
    U, V, W = (_scaled(f) for f in (d._u, d._v, d._w))
    w_t = _permute_rows(W, n, p)  # rows now index C^T (p×n), i.e. the (k,i) pairs
    new_u, new_v, new_wt = V, w_t, U  # A' = m×p, B' = p×n, C'^T = n×m
    new_w = _permute_rows(new_wt, n, m)  # to C' row-major (m×n)
    return _build(d, new_u, new_v, new_w, (m, p, n))


def transpose(d: Decomposition) -> Decomposition:
    """<n,m,p> -> <p,m,n> through (AB)^T = B^T A^T."""
    n, m, p = _matmul_only(d, "transposition")
    U, V, W = (_scaled(f) for f in (d._u, d._v, d._w))
    new_u = _permute_rows(V, m, p)  # A' = B^T (p×m)
    new_v = _permute_rows(U, n, m)  # B' = A^T (m×n)
    new_w = _permute_rows(W, n, p)  # C' = C^T (p×n)
    return _build(d, new_u, new_v, new_w, (p, m, n))


def _square_exact(M: Any, size: int, name: str, field: str) -> tuple[Any, Any]:
    import sympy  # only the sandwich action needs exact matrix inverses; sympy takes 0.3 s to import

    num, den = exact_matrix(M)
    if num.shape != (size, size):
        raise FmmforgeError(f"sandwich matrix {name} must be {size}×{size}, got {num.shape}")
    mat = sympy.Matrix(size, size, [sympy.Rational(int(x), den) for x in num.ravel()])
    if field == "Z2":
        if den != 1:
            raise FmmforgeError(f"sandwich matrix {name} must be integral over Z2")
        if mat.det() % 2 == 0:
            raise FmmforgeError(f"sandwich matrix {name} is not invertible mod 2")
        return mat, mat.inv_mod(2)
    if mat.det() == 0:
        raise FmmforgeError(f"sandwich matrix {name} is singular; use an invertible matrix")
    return mat, mat.inv()


def sandwich(d: Decomposition, X: Any, Y: Any, Z: Any) -> Decomposition:
    """The GL action: the scheme for A, B computes (X A Y⁻¹)(Y B Z⁻¹) = X·AB·Z⁻¹ and undoes it.

    Coefficient matrices change as U_r -> Xᵀ U_r Y⁻ᵀ, V_r -> Yᵀ V_r Z⁻ᵀ, W_r -> X⁻¹ W_r Z.
    """
    import sympy

    n, m, p = _matmul_only(d, "the sandwich action")
    x, xi = _square_exact(X, n, "X", d.field)
    y, yi = _square_exact(Y, m, "Y", d.field)
    z, zi = _square_exact(Z, p, "Z", d.field)
    U, V, W = d.factors()
    new = ([], [], [])
    for r in range(d.rank):
        ur = sympy.Matrix(n, m, list(U[:, r]))
        vr = sympy.Matrix(m, p, list(V[:, r]))
        wr = sympy.Matrix(n, p, list(W[:, r]))
        new[0].append(list(x.T * ur * yi.T))
        new[1].append(list(y.T * vr * zi.T))
        new[2].append(list(xi * wr * z))
    cols = [np.array([[Fraction(int(e.p), int(e.q)) for e in col] for col in f], dtype=object).T for f in new]
    return _build(d, *cols, (n, m, p))


def permute_terms(d: Decomposition, order: Any) -> Decomposition:
    order = [int(i) for i in order]
    if sorted(order) != list(range(d.rank)):
        raise FmmforgeError(f"term order must be a permutation of 0..{d.rank - 1}")
    U, V, W = (_scaled(f) for f in (d._u, d._v, d._w))
    return Decomposition.create(U[:, order], V[:, order], W[:, order], field=d.field, target=d.target)


def flip_signs(d: Decomposition, u_signs: Any, v_signs: Any) -> Decomposition:
    """Multiply u_r by s_r and v_r by t_r, and w_r by s_r·t_r (the product is unchanged)."""
    s = np.asarray(u_signs, dtype=np.int64)
    t = np.asarray(v_signs, dtype=np.int64)
    if s.shape != (d.rank,) or t.shape != (d.rank,) or not np.all(np.abs(s) == 1) or not np.all(np.abs(t) == 1):
        raise FmmforgeError(f"signs must be {d.rank} values of +1 or -1 for u and for v")
    U, V, W = (_scaled(f) for f in (d._u, d._v, d._w))
    return Decomposition.create(U * s, V * t, W * (s * t), field=d.field, target=d.target)


def kron(a: Decomposition, b: Decomposition) -> Decomposition:
    """Kronecker (tensor) product: <n1n2, m1m2, p1p2> of rank R1·R2 (block recursion)."""
    n1, m1, p1 = _matmul_only(a, "the Kronecker product")
    n2, m2, p2 = _matmul_only(b, "the Kronecker product")
    if a.field != b.field:
        raise FmmforgeError("the Kronecker product needs both schemes over the same field")
    r1, r2 = a.rank, b.rank
    rows = n1 * n2 * m1 * m2 + m1 * m2 * p1 * p2 + n1 * n2 * p1 * p2
    check_entries(rows * r1 * r2, f"the Kronecker product <{n1 * n2},{m1 * m2},{p1 * p2}> of rank {r1 * r2}")
    for fa, fb, name in ((a._u, b._u, "U"), (a._v, b._v, "V"), (a._w, b._w, "W")):
        # numerators multiply in int64: refuse, with Python integers, what would overflow
        if absmax(fa[0]) * absmax(fb[0]) >= ENTRY_LIMIT or fa[1] * fb[1] >= ENTRY_LIMIT:
            raise FmmforgeError(f"the Kronecker product's {name} entries would reach 2^62 or more; "
                                "fmmforge keeps entries below that")

    def combine(fa: tuple[np.ndarray, int], fb: tuple[np.ndarray, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        xa = _scaled(fa).reshape(rows[0], cols[0], r1)
        xb = _scaled(fb).reshape(rows[1], cols[1], r2)
        # entry (i,k),(j,l) of the big matrix = (block (i,j)) × (entry (k,l) inside the block)
        out = xa[:, None, :, None, :, None] * xb[None, :, None, :, None, :]
        return out.reshape(rows[0] * rows[1] * cols[0] * cols[1], r1 * r2)

    U = combine(a._u, b._u, (n1, n2), (m1, m2))
    V = combine(a._v, b._v, (m1, m2), (p1, p2))
    W = combine(a._w, b._w, (n1, n2), (p1, p2))
    return Decomposition.create(U, V, W, (n1 * n2, m1 * m2, p1 * p2), field=a.field)

