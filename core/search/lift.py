"""Lifting a Z2 scheme to Z (or Q): Hensel lifting plus rational reconstruction.

As Kauers and Moosbauer do: start from the 0/1 factors (U0, V0, W0) of a scheme valid mod 2 and
lift it to a 2-adic solution one bit at a time. At step k the correction δ solves the linear
system ``J·δ ≡ (T - F(U,V,W)) / 2^k  (mod 2)``, where J is the Jacobian of the Brent equations at
(U0, V0, W0) mod 2 -- the same matrix at every step, so it is row-reduced once (Gauss-Jordan over
GF(2), bit-packed, compiled). Free variables are set to zero. After ``bits`` steps each entry
is rationally reconstructed (|p|, q <= sqrt(2^bits / 2)); the candidate is accepted only if it
verifies exactly over Z (Decomposition.create). Returns None when any step has no solution or
the reconstruction does not verify.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import InvalidDecompositionError


@njit(cache=True)
def _gf2_rref(A, nvars):
    """Gauss-Jordan on the first nvars columns of the bit-packed rows A (in place).

    Returns pivot_row[col] (-1 for free columns) and the rank.
    """
    neq = A.shape[0]
    words = A.shape[1]
    pivots = np.full(nvars, -1, np.int64)
    row = 0
    for col in range(nvars):
        w = col >> 6
        bit = np.uint64(1) << np.uint64(col & 63)
        piv = -1
        for r in range(row, neq):
            if A[r, w] & bit:
                piv = r
                break
        if piv < 0:
            continue
        if piv != row:
            for q in range(words):
                tmp = A[piv, q]
                A[piv, q] = A[row, q]
                A[row, q] = tmp
        for r in range(neq):
            if r != row and (A[r, w] & bit):
                for q in range(w, words):
                    A[r, q] ^= A[row, q]
        pivots[col] = row
        row += 1
        if row == neq:
            break
    return pivots, row


def _pack_rows(bits: np.ndarray) -> np.ndarray:
    """bool (rows, cols) -> uint64 (rows, ceil(cols/64)), column c = bit c%64 of word c//64."""
    rows, cols = bits.shape
    words = (cols + 63) // 64
    padded = np.zeros((rows, words * 64), dtype=np.uint8)
    padded[:, :cols] = bits
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64).copy()


def _unpack_rows(packed: np.ndarray, cols: int) -> np.ndarray:
    return np.unpackbits(packed.view(np.uint8), axis=1, bitorder="little")[:, :cols].astype(bool)


def _ratrecon(x: int, mod: int, bound: int) -> Fraction | None:
    """p/q ≡ x (mod mod) with |p| <= bound, 0 < q <= bound, q odd; None if there is none."""
    r0, r1 = mod, x % mod
    s0, s1 = 0, 1
    while r1 > bound:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    if s1 == 0 or abs(s1) > bound or math.gcd(r1, abs(s1)) != 1:
        return None
    return Fraction(r1, s1)


def lift_to_z(d: Decomposition, bits: int = 40) -> Decomposition | None:
    """A scheme over Z (rational coefficients allowed) that reduces to ``d`` mod 2, or None."""
    if d.field != "Z2":
        return d
    T = np.asarray(d.target.tensor, dtype=np.int64)
    U0, V0, W0 = (np.mod(np.asarray(x, dtype=np.int64), 2) for x in d.numerators())
    A, B, C = T.shape
    R = d.rank
    # Jacobian mod 2: rows = tensor entries (a,b,c); columns = [U (A×R) | V (B×R) | W (C×R)]
    dU = np.einsum("xa,br,cr->abcxr", np.eye(A, dtype=np.int64), V0, W0).reshape(A * B * C, A * R)
    dV = np.einsum("ar,xb,cr->abcxr", U0, np.eye(B, dtype=np.int64), W0).reshape(A * B * C, B * R)
    dW = np.einsum("ar,br,xc->abcxr", U0, V0, np.eye(C, dtype=np.int64)).reshape(A * B * C, C * R)
    J = (np.concatenate([dU, dV, dW], axis=1) & 1).astype(bool)
    neq, nvars = J.shape
    aug = _pack_rows(np.concatenate([J, np.eye(neq, dtype=bool)], axis=1))
    pivots, rank = _gf2_rref(aug, nvars)
    full = _unpack_rows(aug, nvars + neq)
    M = full[:, nvars:].astype(np.uint8)  # row operations: transformed rhs = M·e
    pivot_cols = np.flatnonzero(pivots >= 0)
    pivot_rows = pivots[pivot_cols]

    X = [x.astype(np.uint64) for x in (U0, V0, W0)]
    Tu = T.astype(np.uint64)
    for k in range(1, bits):
        # residual T - F mod 2^(k+1), in wrapping uint64 arithmetic (exact modulo 2^64)
        F = np.einsum("ar,br,cr->abc", X[0], X[1], X[2], dtype=np.uint64)
        resid = (Tu - F)
        low = resid & np.uint64((1 << k) - 1)
        if np.any(low):
            return None  # not a solution mod 2^k: cannot happen for a valid Z2 scheme
        e = ((resid >> np.uint64(k)) & np.uint64(1)).astype(np.uint8).reshape(-1)
        t = (M.astype(np.int64) @ e.astype(np.int64)) & 1
        if np.any(t[rank:]):
            return None  # the linear system has no solution: no 2-adic lift from here
        delta = np.zeros(nvars, dtype=np.uint64)
        delta[pivot_cols] = t[pivot_rows].astype(np.uint64)
        step = np.uint64(1 << k)
        X[0] = X[0] + step * delta[: A * R].reshape(A, R)
        X[1] = X[1] + step * delta[A * R: (A + B) * R].reshape(B, R)
        X[2] = X[2] + step * delta[(A + B) * R:].reshape(C, R)
    mod = 1 << bits
    bound = math.isqrt(mod // 2)
    factors = []
    for x in X:
        vals = np.empty(x.shape, dtype=object)
        for idx, v in np.ndenumerate(x):
            f = _ratrecon(int(v) % mod, mod, bound)
            if f is None:
                return None
            vals[idx] = f
        factors.append(vals)
    try:
        return Decomposition.create(*factors, field="Z", target=d.target)
    except InvalidDecompositionError:
        return None
