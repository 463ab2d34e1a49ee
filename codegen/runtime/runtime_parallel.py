"""The *parallel* layout's top level (torch CPU): the products of level 0 run at once on a pool of
workers, each with a single-threaded BLAS (task parallelism; Benson & Ballard's BFS step at the
top, DFS below it), instead of one multi-threaded gemm after another.

Level 0 of the plan is taken breadth-first. Product r of its decomposition is a task: form its A-side
sum S_r and its B-side sum T_r (a one-block side is a view, its coefficient folded into alpha), compute
P_r = S_r·T_r by the deeper levels of the plan (the low-memory layout's functions, so their additions
and leaves run on the worker's one core), and add it to the C blocks it reaches. The C updates of
the tasks are serialised by a lock (the first update of a C block writes it, the later ones add); the
order in which tasks finish, and so the order of the additions into a C block, may vary from call to
call (the result stays within the scheme's error bound; it is not bit-for-bit repeatable).

With W workers (torch's thread count at the call), the first R - R mod W products go to the workers
and the R mod W left over run afterwards one at a time, each on a worker given all W threads (the
hybrid split: no core idles while the last task runs alone; and only the workers hold workspaces). The workers are this kernel's threads
(one pool per worker count, made on first use); each pins ITSELF to one thread through the
per-thread controls of torch's OpenMP runtime and of MKL (omp_set_num_threads and
MKL_Set_Num_Threads_Local act on the calling thread only), so the caller's thread counts, and every
other thread's, are never changed. Where torch has no such controls (no MKL, no OpenMP), with one
thread, or at sizes where level 0 does not split, the kernel runs the low-memory layout instead.

Workspace: per worker one S, T and P of level 0's block size plus the deeper levels' low-memory
workspaces (cached per thread, :mod:`.runtime_caches`); the kernel's ``clear_workspaces`` and
``workspace_bytes`` cover the calling thread's and every worker's.

Expects beside it (in the kernel): ``torch``, ``threading``, ``CUTOFF``, ``FORMATS``, ``LEVELS``,
``_level``, ``_multiples``, ``_peel`` (:mod:`.runtime_lowmem`), ``_ws`` (:mod:`.runtime_caches`), the
backend's leaves, ``PARALLEL_PRODUCTS`` (per product of level 0: its A terms, B terms and C terms,
each ((block, coefficient), ...), blocks row-major) and ``_top_serial`` (the low-memory ``_top``);
:func:`source` writes the rebinding.
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_POOLS = {}  # worker count -> this kernel's ThreadPoolExecutor
_POOLS_LOCK = threading.Lock()
_CONTROLS = []  # [(omp_set_num_threads, MKL_Set_Num_Threads_Local) or None], filled on first use
_WORKER_CACHES = []  # each worker's per-thread caches (runtime_caches._LOCAL's dict on that thread)


def _thread_controls():
    """(omp_set_num_threads, MKL_Set_Num_Threads_Local) of the OpenMP runtime and MKL torch uses,
    each acting on the calling thread only; None where this torch has no such build."""
    with _POOLS_LOCK:
        if not _CONTROLS:
            found = None
            try:
                if torch.backends.mkl.is_available() and "OpenMP" in torch.__config__.parallel_info():
                    # dlsym on libtorch_cpu also finds the symbols of the libraries it links (libgomp)
                    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
                    found = (lib.omp_set_num_threads, lib.MKL_Set_Num_Threads_Local)
                    found[0].argtypes, found[0].restype = [ctypes.c_int], None
                    found[1].argtypes, found[1].restype = [ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                found = None
            _CONTROLS.append(found)
        return _CONTROLS[0]


def _pin_worker():
    """A worker's initializer: torch first sets this thread's counts to its own thread count (on the
    first query), then the per-thread controls set them to one."""
    torch.get_num_threads()
    omp, mkl = _thread_controls()
    omp(1)
    mkl(1)
    with _POOLS_LOCK:
        _WORKER_CACHES.append(vars(_LOCAL))  # noqa: F821 - runtime_caches: this thread's caches


def _all_caches():
    """The calling thread's caches and every worker's (a worker's workspaces are the kernel's too)."""
    with _POOLS_LOCK:
        return [vars(_LOCAL)] + list(_WORKER_CACHES)  # noqa: F821


def _clear_parallel():
    """Free the workspaces (and coefficient tensors) of this thread and of the kernel's workers."""
    for found in _all_caches():
        for name in ("workspaces", "coefficients"):
            found.get(name, {}).clear()


def _workspace_bytes_parallel():
    """Bytes held by the workspaces of this thread and of the kernel's workers."""
    held = []
    for found in _all_caches():
        held += list(found.get("workspaces", {}).values())
        held += [t for ts in found.get("coefficients", {}).values() for t in ts]
    return sum(t.nbytes for t in held)


def _pool(workers):
    """This kernel's pool of ``workers`` single-threaded workers (made on first use)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="fmmforge-leaf", initializer=_pin_worker)
            _POOLS[workers] = pool
        return pool


def _side(blocks, terms, key, shape):
    """(operand, scale): the view of a one-block side (its coefficient as the scale), or the sum of
    its blocks in this thread's workspace ``key`` (first coefficient 1, the scale)."""
    (first, lead), rest = terms[0], terms[1:]
    if not rest:
        return blocks[first], lead
    X = _ws(key, shape, blocks[first])  # noqa: F821 - runtime_caches, beside it
    _combination(X, [(blocks[i], c / lead) for i, c in terms])
    return X, lead


def _combination(dst, terms):
    """dst = Σ c·x over ``terms`` ((tensor, coefficient), ...) by torch element-wise passes: one for
    the first two terms, one more for each further term. A term that is ``dst`` itself must come
    first (every pass reads an element before it writes it)."""
    (x0, c0), rest = terms[0], terms[1:]
    if not rest:
        torch.mul(x0, c0, out=dst)
        return
    (x1, c1), rest = rest[0], rest[1:]
    if c0 == 1:
        torch.add(x0, x1, alpha=c1, out=dst)
    elif c1 == 1:
        torch.add(x1, x0, alpha=c0, out=dst)
    else:
        torch.mul(x0, c0, out=dst)
        dst.add_(x1, alpha=c1)
    for x, c in rest:
        dst.add_(x, alpha=c)


def _product(r, Ab, Bb, Cb, alpha, written, lock):
    """Product r of level 0 into the C blocks it reaches (under ``lock``; ``written``: the C blocks
    some product has written already)."""
    a_terms, b_terms, c_terms = PARALLEL_PRODUCTS[r]  # noqa: F821 - the kernel's table
    S, sa = _side(Ab, a_terms, ("par", "S"), tuple(Ab[0].shape))
    T, sb = _side(Bb, b_terms, ("par", "T"), tuple(Bb[0].shape))
    P = _ws(("par", "P"), (S.shape[0], T.shape[1]), S)  # noqa: F821 - runtime_caches
    _level(1)[0](S, T, P, 1.0, 1)  # noqa: F821 - P = S·T by the deeper levels (or the leaf)
    scale = alpha * sa * sb
    with lock:
        for c, w in c_terms:
            if c in written:
                Cb[c].add_(P, alpha=scale * w)
            else:
                torch.mul(P, scale * w, out=Cb[c])
                written.add(c)


def _wide(workers, *task):
    """:func:`_product` on a worker with ``workers`` threads (its own workspaces: no other thread's
    are held for it), back to one thread after it."""
    omp, mkl = _thread_controls()
    omp(workers)
    mkl(workers)
    try:
        _product(*task)
    finally:
        omp(1)
        mkl(1)


def _wait(futures):
    """Wait for every task; then raise the first error (C is never used while a task still runs)."""
    for f in futures:
        f.exception()
    for f in futures:
        f.result()


def _parallel_level(A, B, C, alpha, level):
    """C = alpha·A·B by level 0, its products on the workers (sizes that level 0's multiples divide)."""
    n, m, p = FORMATS[0]  # noqa: F821 - the kernel's constant
    M, K = A.shape
    N = B.shape[1]
    bm, bk, bn = M // n, K // m, N // p
    Ab = [A[i * bm:(i + 1) * bm, j * bk:(j + 1) * bk] for i in range(n) for j in range(m)]
    Bb = [B[i * bk:(i + 1) * bk, j * bn:(j + 1) * bn] for i in range(m) for j in range(p)]
    Cb = [C[i * bm:(i + 1) * bm, j * bn:(j + 1) * bn] for i in range(n) for j in range(p)]
    workers = torch.get_num_threads()
    R = len(PARALLEL_PRODUCTS)  # noqa: F821
    split = R - R % workers
    written, lock = set(), threading.Lock()
    pool = _pool(workers)
    _wait([pool.submit(_product, r, Ab, Bb, Cb, alpha, written, lock) for r in range(split)])
    for r in range(split, R):  # the rest one at a time, on a worker given all the threads
        _wait([pool.submit(_wide, workers, r, Ab, Bb, Cb, alpha, written, lock)])
    for c in range(n * p):  # a C block no product reaches
        if c not in written:
            Cb[c].zero_()


def _top_parallel(A, B, C):
    """C = A·B with level 0's products on the workers, or by the low-memory layout where that
    cannot run (see the module docstring)."""
    M, K = A.shape
    N = B.shape[1]
    workers = torch.get_num_threads()
    if not LEVELS or workers < 2 or A.device.type != "cpu" or _thread_controls() is None:  # noqa: F821
        return _top_serial(A, B, C)  # noqa: F821 - the low-memory _top, beside it
    n, m, p = FORMATS[0]  # noqa: F821
    if M < n * CUTOFF or K < m * CUTOFF or N < p * CUTOFF:  # noqa: F821
        return _top_serial(A, B, C)  # noqa: F821
    dm, dk, dn = _multiples(M, K, N, 0)  # noqa: F821 - runtime_lowmem
    if M % dm or K % dk or N % dn:
        return _peel(_parallel_level, _leaf_set, A, B, C, 1.0, dm, dk, dn, 0)  # noqa: F821
    _parallel_level(A, B, C, 1.0, 0)


def source() -> str:
    """The kernel text that makes its ``_top`` (the low-memory one, defined before it) run level 0's
    products on the workers: these helpers and the rebinding."""
    from fmmforge.codegen.runtime import inline

    return ("import ctypes\nimport os\nfrom concurrent.futures import ThreadPoolExecutor\n\n"
            "_top_serial = _top  # the low-memory top level: where the workers cannot run\n\n"
            "_POOLS = {}  # worker count -> this kernel's ThreadPoolExecutor\n"
            "_POOLS_LOCK = threading.Lock()\n"
            "_CONTROLS = []  # [(omp_set_num_threads, MKL_Set_Num_Threads_Local) or None]\n"
            "_WORKER_CACHES = []  # each worker's per-thread caches\n\n\n"
            + inline(_thread_controls, _pin_worker, _all_caches, _clear_parallel, _workspace_bytes_parallel, _pool, _side, _combination, _product, _wide, _wait, _parallel_level,
                     _top_parallel)
            + "\n\n_top = _top_parallel\nclear_workspaces = _clear_parallel\nworkspace_bytes = _workspace_bytes_parallel\n")
