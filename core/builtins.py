"""Classical algorithms, written as the formulas of their papers and verified when built."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.exact import check_entries
from fmmforge.core.tensor import check_format


@dataclass(frozen=True)
class BuiltinAlgorithm:
    name: str
    format: tuple[int, int, int]
    reference: str
    formulas: str


STRASSEN = BuiltinAlgorithm(
    "strassen", (2, 2, 2), "V. Strassen, Gaussian elimination is not optimal, Numer. Math. 13 (1969)",
    """
    M1 = (A11 + A22)*(B11 + B22)
    M2 = (A21 + A22)*B11
    M3 = A11*(B12 - B22)
    M4 = A22*(B21 - B11)
    M5 = (A11 + A12)*B22
    M6 = (A21 - A11)*(B11 + B12)
    M7 = (A12 - A22)*(B21 + B22)
    C11 = M1 + M4 - M5 + M7
    C12 = M3 + M5
    C21 = M2 + M4
    C22 = M1 - M2 + M3 + M6
    """,
)

# Winograd's variant (15 additions with reuse): S1 = A21+A22, S2 = S1-A11, S3 = A11-A21,
# S4 = A12-S2; T1 = B12-B11, T2 = B22-T1, T3 = B22-B12, T4 = T2-B21; written out here.
STRASSEN_WINOGRAD = BuiltinAlgorithm(
    "strassen-winograd", (2, 2, 2), "S. Winograd, On multiplication of 2x2 matrices, Linear Algebra Appl. 4 (1971)",
    """
    M1 = A11*B11
    M2 = A12*B21
    M3 = (A11 + A12 - A21 - A22)*B22
    M4 = A22*(B11 - B12 - B21 + B22)
    M5 = (A21 + A22)*(B12 - B11)
    M6 = (A21 + A22 - A11)*(B11 - B12 + B22)
    M7 = (A11 - A21)*(B22 - B12)
    C11 = M1 + M2
    C12 = M1 + M3 + M5 + M6
    C21 = M1 - M4 + M6 + M7
    C22 = M1 + M5 + M6 + M7
    """,
)

LADERMAN = BuiltinAlgorithm(
    "laderman", (3, 3, 3),
    "J. D. Laderman, A noncommutative algorithm for multiplying 3x3 matrices using 23 multiplications, "
    "Bull. AMS 82 (1976)",
    """
    M1 = (A11 + A12 + A13 - A21 - A22 - A32 - A33)*B22
    M2 = (A11 - A21)*(B22 - B12)
    M3 = A22*(B12 + B21 + B33 - B11 - B22 - B23 - B31)
    M4 = (A21 + A22 - A11)*(B11 - B12 + B22)
    M5 = (A21 + A22)*(B12 - B11)
    M6 = A11*B11
    M7 = (A31 + A32 - A11)*(B11 - B13 + B23)
    M8 = (A31 - A11)*(B13 - B23)
    M9 = (A31 + A32)*(B13 - B11)
    M10 = (A11 + A12 + A13 - A22 - A23 - A31 - A32)*B23
    M11 = A32*(B13 + B21 + B32 - B11 - B22 - B23 - B31)
    M12 = (A32 + A33 - A13)*(B22 + B31 - B32)
    M13 = (A13 - A33)*(B22 - B32)
    M14 = A13*B31
    M15 = (A32 + A33)*(B32 - B31)
    M16 = (A22 + A23 - A13)*(B23 + B31 - B33)
    M17 = (A13 - A23)*(B23 - B33)
    M18 = (A22 + A23)*(B33 - B31)
    M19 = A12*B21
    M20 = A23*B32
    M21 = A21*B13
    M22 = A31*B12
    M23 = A33*B33
    C11 = M6 + M14 + M19
    C12 = M1 + M4 + M5 + M6 + M12 + M14 + M15
    C13 = M6 + M7 + M9 + M10 + M14 + M16 + M18
    C21 = M2 + M3 + M4 + M6 + M14 + M16 + M17
    C22 = M2 + M4 + M5 + M6 + M20
    C23 = M14 + M16 + M17 + M18 + M21
    C31 = M6 + M7 + M8 + M11 + M12 + M13 + M14
    C32 = M12 + M13 + M14 + M15 + M22
    C33 = M6 + M7 + M8 + M9 + M23
    """,
)

BUILTINS = {a.name: a for a in (STRASSEN, STRASSEN_WINOGRAD, LADERMAN)}


@lru_cache(maxsize=None)
def builtin(name: str) -> Decomposition:
    from fmmforge.core.formulas import parse

    algo = BUILTINS[name]
    return parse(algo.formulas, algo.format)


def naive(n: int, m: int, p: int) -> Decomposition:
    """The classical algorithm: one product A[i,j]·B[j,k] per (i,j,k), rank n·m·p."""
    n, m, p = check_format((n, m, p))
    rank = n * m * p
    check_entries((n * m + m * p + n * p) * rank, f"naive:{n},{m},{p} (rank {rank})")
    U = np.zeros((n * m, rank), dtype=np.int64)
    V = np.zeros((m * p, rank), dtype=np.int64)
    W = np.zeros((n * p, rank), dtype=np.int64)
    r = 0
    for i in range(n):
        for j in range(m):
            for k in range(p):
                U[i * m + j, r] = V[j * p + k, r] = W[i * p + k, r] = 1
                r += 1
    return Decomposition.create(U, V, W, (n, m, p))


def strassen_2x2x3() -> Decomposition:
    """<2,2,3;11>: Strassen on the first two columns of B, the classical product on the third.

    11 products is the optimal rank of <2,2,3> (Hopcroft & Kerr 1971; Alekseyev 1985).
    """
    s = builtin("strassen")
    (su, sv, sw), rank = s.numerators(), s.rank + 4
    U = np.zeros((4, rank), dtype=np.int64)
    V = np.zeros((6, rank), dtype=np.int64)
    W = np.zeros((6, rank), dtype=np.int64)
    U[:, : s.rank] = su
    for j in range(2):  # B is 2×3: entry (j,k) -> j*3+k; Strassen's B is 2×2: (j,k) -> j*2+k
        for k in range(2):
            V[j * 3 + k, : s.rank] = sv[j * 2 + k]
            W[j * 3 + k, : s.rank] = sw[j * 2 + k]  # C is 2×3 too (rows i play the role of j here)
    r = s.rank
    for i in range(2):
        for j in range(2):
            U[i * 2 + j, r] = V[j * 3 + 2, r] = W[i * 3 + 2, r] = 1
            r += 1
    return Decomposition.create(U, V, W, (2, 2, 3))
