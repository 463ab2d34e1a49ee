"""A hand-written, hand-scheduled Strassen–Winograd in torch: the yardstick of issue 5.

Not fmmforge code and not generated: the classic in-place schedule of Boyer, Dumas, Pernet and
Zhou ("Memory efficient scheduling of Strassen–Winograd's matrix multiplication algorithm",
ISSAC 2009, table 1) for C = A·B with two preallocated temporaries per level (X: bm×max(bk,bn),
Y: bk×bn), out= and in-place adds, torch.mm at the leaves. benchmarks/cpu_speedup.py times it
beside the generated kernels so that a reader sees, on the machine at hand, how far generated
code is from the best hand schedule, and how far that one is from the issue's targets.
"""

from __future__ import annotations

import torch

_WS: dict[tuple[int, str], torch.Tensor] = {}


def _ws(level: int, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    t = _WS.get((level, name))
    if t is None or tuple(t.shape) != (rows, cols) or t.dtype != like.dtype:
        t = _WS[(level, name)] = torch.empty((rows, cols), dtype=like.dtype)
    return t


def winograd(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, levels: int, level: int = 0) -> torch.Tensor:
    """C = A·B with ``levels`` levels of Strassen–Winograd (sizes divisible by 2**levels)."""
    if levels == 0:
        return torch.mm(A, B, out=C)
    M, K = A.shape
    N = B.shape[1]
    m, k, n = M // 2, K // 2, N // 2
    A11, A12, A21, A22 = A[:m, :k], A[:m, k:], A[m:, :k], A[m:, k:]
    B11, B12, B21, B22 = B[:k, :n], B[:k, n:], B[k:, :n], B[k:, n:]
    C11, C12, C21, C22 = C[:m, :n], C[:m, n:], C[m:, :n], C[m:, n:]
    X = _ws(level, "X", m, max(k, n), A)
    Xa, Xc = X[:, :k], X[:, :n]
    Y = _ws(level, "Y", k, n, A)

    def rec(a, b, c):
        winograd(a, b, c, levels - 1, level + 1)

    torch.sub(A11, A21, out=Xa)  # S3
    torch.sub(B22, B12, out=Y)  # T3
    rec(Xa, Y, C21)  # P7
    torch.add(A21, A22, out=Xa)  # S1
    torch.sub(B12, B11, out=Y)  # T1
    rec(Xa, Y, C22)  # P5
    Xa.sub_(A11)  # S2
    torch.sub(B22, Y, out=Y)  # T2
    rec(Xa, Y, C12)  # P6
    torch.sub(A12, Xa, out=Xa)  # S4
    rec(Xa, B22, C11)  # P3
    rec(A11, B11, Xc)  # P1
    C12.add_(Xc)  # U2 = P1 + P6
    C21.add_(C12)  # U3 = U2 + P7
    C12.add_(C22)  # U4 = U2 + P5
    C22.add_(C21)  # U7 = U3 + P5
    C12.add_(C11)  # U5 = U4 + P3
    Y.sub_(B21)  # T4
    rec(A22, Y, C11)  # P4
    C21.sub_(C11)  # U6 = U3 - P4
    rec(A12, B21, C11)  # P2
    C11.add_(Xc)  # U1 = P1 + P2
    return C
