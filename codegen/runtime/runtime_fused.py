"""The compiled part of a *fused* kernel: every linear combination of one side of a level in one
numba pass, tile by tile (a row segment of every input block stays in L1 while all the sums that
read it are formed), and the C update of a level in one pass over the products.

Both kernels read and write through flat (1-D, contiguous) views of the operands: a block
``(i, j)`` of an operand with leading dimension ``ld`` (elements between rows) and blocks of
``rows × cols`` starts at element ``i·rows·ld + j·cols``, so the inner loop runs over contiguous
elements and vectorises. Combinations are given in CSR form: output ``o`` is
``Σ_{t in indptr[o]:indptr[o+1]} coef[t] · block(idx[t])``; ``coef`` has the operands' dtype.

Expects beside it (in the kernel): ``numba``, ``np`` and, for :func:`_flat`, ``torch``; the two
jitted kernels are made by :func:`_compile` (once per process: the kernel keeps them in the
thread-independent module namespace, numba compiles them on first call per dtype).
"""

import inspect
import os

import sys
import types

import numba
import numpy as np
import torch

TILE = 256  # columns of a row segment formed at once (TILE elements of every input block in L1; 256 measured
# best of 64-2048 on the Intel Xeon: 16 blocks of 4 MiB into 8 sums in 3.2 ms at 256, 3.9-4.5 at 512-2048)

# How a fused kernel forms its sums: "auto" (each group as its table says: codegen.fused.Group.sums_pass
# chose the compiled pass or torch's by the blocks each moves), or all "torch" (a torch pass per term)
# or all "numba" (all sums of a group in one compiled pass): experiments and tests force one way.
SUMS_PASS = "auto"


def _sums_py(X, ld, rows, cols, br, bc, slots, indptr, idx, coef, out):
    """out[slots[o], i, j] = Σ_t coef[t] · source idx[t] at (i, j) for each sum o in order, where a
    source a below ``len(br)`` is X's block (br[a], bc[a]) — element X[(br[a]·rows + i)·ld +
    bc[a]·cols + j] — and a source ``len(br) + k`` is out[k] as it is when sum o is formed (a slot
    written by an earlier sum of the pass holds its new value; a sum reading its own slot reads it
    as its first term). ``out``: the workspace, slots × rows × cols.

    Every inner loop runs over a slice from index 0 (no negative-index wraparound to test), which is
    what lets LLVM vectorise the accumulating loops too."""
    n_blk = br.shape[0]
    for i in numba.prange(rows):
        for j0 in range(0, cols, TILE):
            w = min(TILE, cols - j0)
            for o in range(slots.shape[0]):
                dst = out[slots[o], i, j0:j0 + w]
                for t in range(indptr[o], indptr[o + 1]):
                    a = idx[t]
                    if a < n_blk:
                        base = (br[a] * rows + i) * ld + bc[a] * cols + j0
                        x = X[base:base + w]
                    else:
                        x = out[a - n_blk, i, j0:j0 + w]
                    c = coef[t]
                    if t == indptr[o]:
                        for j in range(w):
                            dst[j] = c * x[j]
                    else:
                        for j in range(w):
                            dst[j] += c * x[j]


def _combine_py(C, ld, rows, cols, cr, cc, outputs, homes, P, indptr, src, coef, accumulate):
    """One pass over the products: C block outputs[q] (at block row cr[.], column cc[.]) =
    (its old value if ``accumulate``) + Σ_t coef[t] · source src[t] (t in indptr[q]:indptr[q+1], added
    in that order), where a source below ``len(homes)`` is the product held in C block homes[src]
    (copied, for the whole tile, before any C block of the tile is written) and source
    ``len(homes) + k`` is workspace slot P[k]. Inner loops run from index 0 (they vectorise)."""
    n_home = homes.shape[0]
    for i in numba.prange(rows):
        held = np.empty((max(n_home, 1), TILE), dtype=C.dtype)
        for j0 in range(0, cols, TILE):
            w = min(TILE, cols - j0)
            for h in range(n_home):
                base = (cr[homes[h]] * rows + i) * ld + cc[homes[h]] * cols + j0
                x = C[base:base + w]
                keep = held[h]
                for j in range(w):
                    keep[j] = x[j]
            for q in range(outputs.shape[0]):
                base = (cr[outputs[q]] * rows + i) * ld + cc[outputs[q]] * cols + j0
                dst = C[base:base + w]
                for t in range(indptr[q], indptr[q + 1]):
                    s = src[t]
                    x = held[s] if s < n_home else P[s - n_home, i, j0:j0 + w]
                    c = coef[t]
                    if t == indptr[q] and not accumulate:
                        for j in range(w):
                            dst[j] = c * x[j]
                    else:
                        for j in range(w):
                            dst[j] += c * x[j]


def _compile():
    """The two jitted kernels: parallel over block rows, exact IEEE arithmetic (no fastmath); numba
    caches the machine code beside the kernel when the kernel is a file (cache=True)."""
    cache = os.path.isfile(_sums_py.__code__.co_filename)
    jit = numba.njit(parallel=True, fastmath=False, nogil=True, cache=cache)
    return jit(_sums_py), jit(_combine_py)


def _flat(X):
    """(1-D numpy view from X's first element to its last, leading dimension) of a 2-D CPU tensor
    whose rows are contiguous (stride 1 along columns)."""
    rows, cols = X.shape
    ld = X.stride(0) if rows > 1 else cols
    flat = X.as_strided(((rows - 1) * ld + cols,), (1,))
    return flat.numpy(), ld


def _passes():
    """(sums, combine): the process's compiled passes, made from ``_FUSED_SOURCE`` on first use and
    shared (under ``_FUSED_NAME``, which hashes the source) by every kernel that carries them."""
    found = sys.modules.get(_FUSED_NAME)
    if found is None:
        found = types.ModuleType(_FUSED_NAME)
        found.__dict__.update(os=os, numba=numba, np=np, TILE=TILE)
        exec(compile(_FUSED_SOURCE, f"<{_FUSED_NAME}>", "exec"), found.__dict__)
        found.kernels = found._compile()
        _sleeping_pool()
        sys.modules[_FUSED_NAME] = found
    return found.kernels


def _sleeping_pool():
    """Start numba's thread pool with OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise:
    numba's OpenMP layer is a second OpenMP runtime beside torch's, and its workers, spinning after a
    pass, would take the cores from the MKL gemm that follows. libgomp reads the variable once, when
    numba loads it here, so the environment is restored at once; the policy stays with numba's pool
    for the process (no effect when the pool already runs, or on numba's other threading layers)."""
    from numba.np.ufunc import parallel

    if "OMP_WAIT_POLICY" in os.environ or parallel._is_initialized:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        parallel._launch_threads()
    finally:
        del os.environ["OMP_WAIT_POLICY"]


def _fused_sums(X, rows, cols, out, table):
    """Sums of X's rows×cols blocks into slots of the workspace ``out``, as ``table`` names them
    (((block rows), (block columns)), (slots, (indptr, idx, coef)), how)): ``how`` "numba", all in
    one compiled pass, or "torch", one element-wise pass per term after the first two (the emitter
    chose the one that moves less: codegen.fused.Group.sums_pass); the kernel's ``SUMS_PASS`` other
    than "auto" forces one for every group."""
    (br, bc), (slots, (indptr, idx, coef)), how = table
    if (how if SUMS_PASS == "auto" else SUMS_PASS) == "numba":  # noqa: F821 - the kernel's, beside it
        flat, ld = _flat(X)
        _passes()[0](flat, ld, rows, cols, np.array(br, np.int64), np.array(bc, np.int64), np.array(slots, np.int64),
                     np.array(indptr, np.int64), np.array(idx, np.int64), np.array(coef, flat.dtype), out.numpy())
        return
    n_blk = len(br)
    for o, k in enumerate(slots):  # a term reading slot k itself is the first (the slot plan's rule)
        _combination(out[k], [(X[br[a] * rows:(br[a] + 1) * rows, bc[a] * cols:(bc[a] + 1) * cols] if a < n_blk
                               else out[a - n_blk], coef[t]) for t, a in enumerate(idx[indptr[o]:indptr[o + 1]],
                                                                                  indptr[o])])  # noqa: F821


def _fused_combine(C, rows, cols, P, table, accumulate):
    """C's blocks from the products (homed in C or in workspace ``P``) as ``table`` says (((block
    rows), (block columns)), (outputs, homes, (indptr, src, coef))), in one compiled pass."""
    (cr, cc), (outputs, homes, (indptr, src, coef)) = table
    flat, ld = _flat(C)
    slots = P.numpy() if P is not None else np.empty((1, 1, 1), flat.dtype)
    combine = _passes()[1]
    combine(flat, ld, rows, cols, np.array(cr, np.int64), np.array(cc, np.int64), np.array(outputs, np.int64),
            np.array(homes, np.int64), slots, np.array(indptr, np.int64), np.array(src, np.int64),
            np.array(coef, flat.dtype), accumulate)


def _rows_contiguous(X):
    """Whether X's rows are contiguous and do not overlap (what the compiled passes read and write)."""
    return X.shape[1] <= 1 or (X.stride(1) == 1 and (X.shape[0] <= 1 or X.stride(0) >= X.shape[1]))


def _workspace(M, K, N, top_acc):
    """Elements of the workspaces a call on M×K and K×N operands holds: per level that splits, its
    S, T and P (``SLOTS``: the level functions' slot counts; at the top P as the set function
    allocates it, unless ``top_acc``: the acc function runs there too) at that level's block sizes,
    after the peeling to the levels' multiples that the recursion does."""
    total = 0
    for level, (n, m, p) in enumerate(FORMATS):  # noqa: F821 - the kernel's, beside it
        if M < n * CUTOFF or K < m * CUTOFF or N < p * CUTOFF:  # noqa: F821
            break
        dm, dk, dn = _multiples(M, K, N, level)  # noqa: F821 - runtime_lowmem, beside it
        M, K, N = (M - M % dm) // n, (K - K % dk) // m, (N - N % dn) // p
        s, t, p_top, p_slots = SLOTS[level]  # noqa: F821
        total += s * M * K + t * K * N + (p_top if level == 0 and not top_acc else p_slots) * M * N
    return total


def _k_width(M, K, N):
    """The width of the strips of K a call runs in (C = A[:, strip 1]·B[strip 1, :] + ...): K where
    the workspaces fit in WORKSPACE_BOUND × the size of C, else that of the fewest strips that make
    them fit (a K much longer than M and N makes the blocks of A and B, and so every sum, larger
    than C's; found by doubling, then halving the interval), or of a few more strips where those
    have one width, a multiple of the levels' K multiple, so that the workspaces are the same for
    every strip. A few dozen checks at most, whatever K is."""
    bound = WORKSPACE_BOUND * M * N  # noqa: F821 - the kernel's, beside it
    if _workspace(M, K, N, False) <= bound:
        return K
    _, dk, _ = _multiples(M, K, N, 0)  # noqa: F821 - runtime_lowmem, beside it
    most = max(2, K // dk)

    def width(ks):
        return -(-(-(-K // ks)) // dk) * dk

    def fits(ks):
        return _workspace(M, width(ks), N, True) <= bound

    high = 2
    while high < most and not fits(high):
        high = min(2 * high, most)
    low = high // 2 + 1 if high > 2 else 2  # fits(high); the fewest strips that fit lie in [low, high]
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    for ks in range(high, min(most, high + 8) + 1):  # one width for every strip, where a few more strips give it
        if K % width(ks) == 0 and fits(ks):
            return width(ks)
    return width(high)


def _top(A, B, C):
    """C = A·B by level 0, on operands with contiguous rows (copied when not), with numba's thread
    count set to torch's for the call and restored after it; in strips of K where the workspaces
    would not fit their bound otherwise (the first strip sets C, the others accumulate)."""
    A = A if _rows_contiguous(A) else A.contiguous()
    B = B if _rows_contiguous(B) else B.contiguous()
    out = C if _rows_contiguous(C) else torch.empty(C.shape, dtype=C.dtype)
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        K = A.shape[1]
        width = _k_width(A.shape[0], K, B.shape[1])
        for j, k0 in enumerate(range(0, K, width)):
            _level(0)[0 if j == 0 else 1](A[:, k0:k0 + width], B[k0:k0 + width], out, 1.0, 0)  # noqa: F821
    finally:
        numba.set_num_threads(before)
    if out is not C:
        C.copy_(out)


_FUSED_NAME = "fmmforge_fused_runtime"  # a kernel defines its own: the hash of the source it carries
_FUSED_SOURCE = "\n\n".join(inspect.getsource(f) for f in (_sums_py, _combine_py, _compile))
