"""Emit the *batched* torch kernel: all R leaf products of a plan in one ``torch.bmm``.

Like :mod:`fmmforge.codegen.emit_cupy`, the plan's L levels are applied as ONE level of their
Kronecker product <N1,M1,P1> of rank R (:func:`~fmmforge.codegen.emit_cupy.flatten_levels`).
The emitted module (imports only torch and threading; CPU or CUDA, the device of the inputs;
safe to call from several threads at once) does, for sizes that divide:

* A's N1×M1 blocks stacked as an (N1·M1)×(bm·bk) matrix (a view when the blocks already lie one
  after another in memory, else one copy into a cached workspace), and the same for B;
* all R left sums at once: ``S.view(R, -1) = U^T @ A_blocks`` (and ``T`` from ``V^T``), into
  stacked workspaces S (R×bm×bk) and T (R×bk×bn);
* ONE ``torch.bmm(S, T, out=P)`` for the R leaf products;
* C's blocks ``= alpha · W @ P.view(R, -1)``, written into C (directly when C's blocks are
  contiguous, else through the workspace that held A's blocks).

Sizes that do not divide are peeled as in the low-memory module (fix-up gemms for the
remainders); below N1·CUTOFF (M1·CUTOFF, P1·CUTOFF) the vendor gemm runs. Workspaces are cached
per thread and reused across calls (reallocated only when a size changes). The coefficients
are written out product by product (sparse, with the product's formula as a comment) and become
dense tensors on first use on a device.
"""

from __future__ import annotations

from fractions import Fraction

from fmmforge.codegen.emit_cupy import flatten_levels
from fmmforge.codegen.emit_python import PEEL, TORCH_LEAVES_AND_MATMUL, _num, product_comments, thread_caches
from fmmforge.codegen.plan import Plan
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.version import __version__

PASSES = "batched: 1 mm per side, 1 bmm"


def _terms(column) -> str:
    """((index, coefficient), ...) for the nonzero entries of one factor column."""
    items = [f"({i}, {_num(Fraction(c))})" for i, c in enumerate(column) if c != 0]
    if len(items) == 1:
        return f"({items[0]},)"
    return "(" + ", ".join(items) + ")"


def workspace_fraction_square(format_: tuple[int, int, int], rank: int) -> float:
    """Workspace elements / (M·N) for M = K = N and contiguous inputs: S, T and P (R·bm·bk,
    R·bk·bn, R·bm·bn), the buffer shared by A's and C's stacked blocks (M·N; not needed when
    both are views: M1 = P1 = 1) and B's (K·N; not needed when P1 = 1)."""
    n, m, p = format_
    ws = rank / (n * m) + rank / (m * p) + rank / (n * p)
    ws += 1.0 if (m > 1 or p > 1) else 0.0
    ws += 1.0 if p > 1 else 0.0
    return ws


RUNTIME = '''

def clear_workspaces():
    """Free this thread's cached workspaces (and coefficient tensors)."""
    _cache("workspaces").clear()
    _cache("coefficients").clear()


def workspace_bytes():
    """Bytes held by this thread's cached workspaces and coefficient tensors."""
    held = list(_cache("workspaces").values()) + [t for ts in _cache("coefficients").values() for t in ts]
    return sum(t.numel() * t.element_size() for t in held)


def _ws(key, numel, like):
    """This thread's flat workspace ``key`` of ``numel`` elements (dtype and device of ``like``)."""
    ws = _cache("workspaces")
    t = ws.get(key)
    if t is None or t.numel() != numel or t.dtype != like.dtype or t.device != like.device:
        ws.pop(key, None)  # free the old buffer before allocating (peak memory)
        t = torch.empty(numel, dtype=like.dtype, device=like.device)
        ws[key] = t
    return t


def _coefficients(like):
    """U^T (RANK × N1·M1), V^T (RANK × M1·P1) and W (N1·P1 × RANK) as tensors like ``like``."""
    coefficients = _cache("coefficients")
    key = (like.dtype, like.device)
    found = coefficients.get(key)
    if found is None:
        Ut = [[0.0] * (N1 * M1) for _ in range(RANK)]
        Vt = [[0.0] * (M1 * P1) for _ in range(RANK)]
        W = [[0.0] * RANK for _ in range(N1 * P1)]
        for r, (left, right, outputs) in enumerate(TERMS):
            for a, c in left:
                Ut[r][a] = c
            for b, c in right:
                Vt[r][b] = c
            for o, c in outputs:
                W[o][r] = c
        found = tuple(torch.tensor(x, dtype=like.dtype, device=like.device) for x in (Ut, Vt, W))
        coefficients[key] = found
    return found


'''

CORE = '''

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
    buf = _ws(key, numel, X)[: grid.numel()].view(r, c, br, bc)
    buf.copy_(grid)
    return buf.view(r * c, br * bc)


def _core(A, B, C, alpha):
    """C = alpha·A·B for M, K, N divisible by N1, M1, P1: all RANK leaf products in one torch.bmm."""
    M, K = A.shape
    N = B.shape[1]
    bm, bk, bn = M // N1, K // M1, N // P1
    Ut, Vt, W = _coefficients(A)
    shared = max(M * K, M * N)  # A's stacked blocks, later C's (never needed at the same time)
    S = _ws("S", RANK * bm * bk, A).view(RANK, bm, bk)
    T = _ws("T", RANK * bk * bn, A).view(RANK, bk, bn)
    P = _ws("P", RANK * bm * bn, A).view(RANK, bm, bn)
    torch.mm(Ut, _stacked(A, N1, M1, "AC", shared), out=S.view(RANK, bm * bk))  # every left sum S_r
    torch.mm(Vt, _stacked(B, M1, P1, "B", K * N), out=T.view(RANK, bk * bn))  # every right sum T_r
    torch.bmm(S, T, out=P)  # the RANK leaf products P_r = S_r·T_r, one batched gemm
    grid = _grid(C, N1, P1)
    direct = grid.is_contiguous()
    if direct:
        Cb = grid.view(N1 * P1, bm * bn)
    else:
        Cb = _ws("AC", shared, A)[: M * N].view(N1 * P1, bm * bn)
    if alpha == 1.0:
        torch.mm(W, P.view(RANK, bm * bn), out=Cb)  # C's blocks: C_c = sum_r W[c, r]·P_r
    else:
        torch.addmm(Cb, W, P.view(RANK, bm * bn), beta=0.0, alpha=alpha, out=Cb)
    if not direct:
        grid.copy_(Cb.view(N1, P1, bm, bn))
'''

FAST = '''

def _fast_set(A, B, C, alpha):
    """C = alpha·A·B: the batched <N1,M1,P1> step, peeling sizes that do not divide."""
    M, K = A.shape
    N = B.shape[1]
    if M < N1 * CUTOFF or K < M1 * CUTOFF or N < P1 * CUTOFF:
        return _leaf_set(A, B, C, alpha)
'''

def emit_batched(plan: Plan, decomps: list[Decomposition]) -> tuple[str, dict]:
    """(module source, facts) for a torch plan with ``variant="batched"``."""
    from fmmforge.core.builtins import naive

    d = flatten_levels(decomps) if decomps else naive(1, 1, 1)
    n, m, p = d.format
    R = d.rank
    U, V, W = d.factors()
    ws = workspace_fraction_square(d.format, R) if decomps else 0.0
    lines = ['"""fmmforge kernel: C = A·B with ' + plan.describe() + ".", ""]
    lines.append(f"Generated by fmmforge {__version__}. Standalone: imports only torch (and threading); "
                 "copy it anywhere.")
    lines.append("Usage: C = matmul(A, B) for any M×K and K×N inputs of dtype DTYPE (CPU or CUDA tensors);")
    lines.append("threads may call it at once.")
    lines.append("")
    for level, x in enumerate(decomps):
        xn, xm, xp = x.format
        lines.append(f"Level {level}: {plan.algorithms[level]} <{xn},{xm},{xp}> rank {x.rank}.")
    if decomps:
        lines += [
            f"Batched layout: the levels are applied as ONE level of their Kronecker product <{n},{m},{p}>",
            f"rank {R}. A is split into {n}×{m} blocks and B into {m}×{p} blocks; one matmul with U^T",
            f"({R}×{n * m}) forms all {R} left sums in a stacked workspace S ({R}×bm×bk), one with V^T",
            f"({R}×{m * p}) all right sums in T ({R}×bk×bn); ONE torch.bmm(S, T, out=P) computes the {R}",
            f"leaf products, and one matmul with W ({n * p}×{R}) forms C's blocks. Sizes that do not",
            f"divide are peeled (fix-up gemms); below {n}·CUTOFF × {m}·CUTOFF × {p}·CUTOFF the vendor gemm runs.",
            f"Workspace for M=K=N: {ws:.3f} × size of C (cached per thread between calls; clear_workspaces()).",
        ]
    else:
        lines.append("No levels: every product is the vendor gemm.")
    lines += ['"""', "", "import threading", "", "import torch", "", f"DTYPE = torch.{plan.dtype}",
              f"CUTOFF = {plan.cutoff}  # blocks smaller than this go to the vendor gemm",
              f"N1, M1, P1, RANK = {n}, {m}, {p}, {R}  # one level <N1,M1,P1> of rank RANK", "",
              "# Per product r: ((A block, coefficient), ...) of the left sum, ((B block, coefficient), ...)",
              "# of the right sum, ((C block, coefficient), ...) it goes to; blocks numbered row by row.",
              "TERMS = ("]
    comments = product_comments(d)
    for r in range(R):
        lines.append(f"    # {comments[r]}")
        lines.append(f"    ({_terms(U[:, r])}, {_terms(V[:, r])}, {_terms(W[:, r])}),")
    lines.append(")")
    lines.append(thread_caches(cuda=True).rstrip())
    lines.append(RUNTIME.rstrip())
    lines += ["", "", TORCH_LEAVES_AND_MATMUL.replace("__ENTRY__", "_fast_set").rstrip()]
    lines.append(CORE.rstrip())
    lines.append(PEEL.rstrip())
    if decomps:
        body = FAST.rstrip().splitlines()
        conds = [c for c, k in (("M % N1", n), ("K % M1", m), ("N % P1", p)) if k > 1]
        if conds:
            body += [f"    if {' or '.join(conds)}:",
                     "        return _peel(_fast_set, _leaf_set, A, B, C, alpha, N1, M1, P1)"]
        body.append("    _core(A, B, C, alpha)")
        lines += body
    else:
        lines += ["", "", "_fast_set = _leaf_set  # no levels: the vendor gemm"]
    facts = {"variant": "batched",
             "levels": [{"algorithm": a, "format": x.format, "rank": x.rank, "passes": PASSES}
                        for a, x in zip(plan.algorithms, decomps)],
             "flattened": {"format": d.format, "rank": R},
             "workspace_fraction_square": ws}  # for M=K=N: workspace elements / (M·N)
    return "\n".join(lines) + "\n", facts
