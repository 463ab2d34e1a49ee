"""The batched torch layout: the plan's levels as ONE level <N1,M1,P1> of rank RANK, all leaf
products in one ``torch.bmm``.

Expects beside it (in the kernel): ``N1, M1, P1, RANK``, ``TERMS`` (per product: the A blocks, B
blocks and C blocks with their coefficients), ``CUTOFF``, ``_fast_set`` (the batched step with its
peeling) and the torch runtime (:mod:`.runtime_caches`, :mod:`.runtime_torch`, :func:`.runtime_lowmem._peel`).
"""

import torch


def _top(A, B, C):
    """C = A·B by the batched step."""
    _fast_set(A, B, C, 1.0)  # noqa: F821 - written per plan


def _coefficients(like):
    """U^T (RANK × N1·M1), V^T (RANK × M1·P1) and W (N1·P1 × RANK) as tensors like ``like``."""
    coefficients = _cache("coefficients")  # noqa: F821 - runtime_caches
    key = (like.dtype, like.device)
    found = coefficients.get(key)
    if found is None:
        Ut = [[0.0] * (N1 * M1) for _ in range(RANK)]  # noqa: F821 - the kernel's constants
        Vt = [[0.0] * (M1 * P1) for _ in range(RANK)]  # noqa: F821
        W = [[0.0] * RANK for _ in range(N1 * P1)]  # noqa: F821
        for r, (left, right, outputs) in enumerate(TERMS):  # noqa: F821
            for a, c in left:
                Ut[r][a] = c
            for b, c in right:
                Vt[r][b] = c
            for o, c in outputs:
                W[o][r] = c
        found = tuple(torch.tensor(x, dtype=like.dtype, device=like.device) for x in (Ut, Vt, W))
        coefficients[key] = found
    return found


def _grid(X, rows, cols):
    """X's rows×cols grid of equal blocks as a (rows, cols, block rows, block cols) view."""
    br, bc = X.shape[0] // rows, X.shape[1] // cols
    return X.unflatten(0, (rows, br)).unflatten(2, (cols, bc)).permute(0, 2, 1, 3)


def _stacked(X, rows, cols, key, numel):
    """X's blocks, row by row, as a (rows·cols) × (block elements) matrix: a view when they already
    lie one after another in memory, else copied into the first elements of workspace ``key``."""
    grid = _grid(X, rows, cols)
    r, c, br, bc = grid.shape
    if grid.is_contiguous():
        return grid.view(r * c, br * bc)
    buf = _ws(key, (numel,), X)[: grid.numel()].view(r, c, br, bc)  # noqa: F821 - runtime_caches
    buf.copy_(grid)
    return buf.view(r * c, br * bc)


def _core(A, B, C, alpha):
    """C = alpha·A·B for M, K, N divisible by N1, M1, P1: all RANK leaf products in one torch.bmm."""
    M, K = A.shape
    N = B.shape[1]
    n1, m1, p1, rank = N1, M1, P1, RANK  # noqa: F821 - the kernel's constants
    bm, bk, bn = M // n1, K // m1, N // p1
    Ut, Vt, W = _coefficients(A)
    shared = max(M * K, M * N)  # A's stacked blocks, later C's (never needed at the same time)
    S = _ws("S", (rank * bm * bk,), A).view(rank, bm, bk)  # noqa: F821 - runtime_caches
    T = _ws("T", (rank * bk * bn,), A).view(rank, bk, bn)  # noqa: F821
    P = _ws("P", (rank * bm * bn,), A).view(rank, bm, bn)  # noqa: F821
    torch.mm(Ut, _stacked(A, n1, m1, "AC", shared), out=S.view(rank, bm * bk))  # every left sum S_r
    torch.mm(Vt, _stacked(B, m1, p1, "B", K * N), out=T.view(rank, bk * bn))  # every right sum T_r
    torch.bmm(S, T, out=P)  # the RANK leaf products P_r = S_r·T_r, one batched gemm
    grid = _grid(C, n1, p1)
    direct = grid.is_contiguous()
    if direct:
        Cb = grid.view(n1 * p1, bm * bn)
    else:
        Cb = _ws("AC", (shared,), A)[: M * N].view(n1 * p1, bm * bn)  # noqa: F821
    if alpha == 1.0:
        torch.mm(W, P.view(rank, bm * bn), out=Cb)  # C's blocks: C_c = sum_r W[c, r]·P_r
    else:
        torch.addmm(Cb, W, P.view(rank, bm * bn), beta=0.0, alpha=alpha, out=Cb)
    if not direct:
        grid.copy_(Cb.view(n1, p1, bm, bn))
