"""The recursion of the low-memory layout: one (set, acc) function pair per distinct algorithm of
the plan, called with the depth ``level`` it runs at; these helpers dispatch and peel.

Expects beside it (in the kernel): ``CUTOFF``, ``FORMATS`` (<n,m,p> of each level) and ``LEVELS``
(the (set, acc) pair of each level), as defined here for import, and the backend's leaves.
"""

CUTOFF = 64  # blocks smaller than this go to the vendor gemm
FORMATS = ()  # <n,m,p> block counts of each level
LEVELS = ()  # the (set, acc) functions of each level


def _level(level):
    """The (set, acc) functions that compute at depth ``level``: that level's algorithm, or the
    vendor gemm below the last level."""
    if level < len(LEVELS):
        return LEVELS[level]
    return _leaf_set, _leaf_acc  # noqa: F821 - the backend's leaves


def _top(A, B, C):
    """C = A·B by the algorithm of level 0 (the vendor gemm for a plan without levels)."""
    _level(0)[0](A, B, C, 1.0, 0)


def _multiples(M, K, N, level):
    """What M, K, N must divide by for this level and every deeper one that will split at these sizes.

    Peeling once to these multiples (instead of by one level's block counts at every level) leaves
    a remainder of a few rows/columns at the top only: its fix-ups are three thin gemms, not three
    per product of every level.
    """
    dm = dk = dn = 1
    for n, m, p in FORMATS[level:]:
        if M // dm < n * CUTOFF or K // dk < m * CUTOFF or N // dn < p * CUTOFF:
            break
        dm, dk, dn = dm * n, dk * m, dn * p
    return dm, dk, dn


def _peel(core, leaf, A, B, C, alpha, n, m, p, level):
    """Dynamic peeling: the fast algorithm on the divisible core, gemm fix-ups for the rest."""
    M, K = A.shape
    N = B.shape[1]
    Mc, Kc, Nc = M - M % n, K - K % m, N - N % p
    core(A[:Mc, :Kc], B[:Kc, :Nc], C[:Mc, :Nc], alpha, level)
    if Kc < K:
        _leaf_acc(A[:Mc, Kc:], B[Kc:, :Nc], C[:Mc, :Nc], alpha)  # noqa: F821 - the backend's leaf
    if Nc < N:
        leaf(A[:Mc, :], B[:, Nc:], C[:Mc, Nc:], alpha)
    if Mc < M:
        leaf(A[Mc:, :], B, C[Mc:, :], alpha)
