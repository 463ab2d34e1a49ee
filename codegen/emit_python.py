"""Emit a standalone Python kernel module (torch or numpy) from a plan.

The module imports only its backend library (and threading) and defines ``matmul(A, B)`` for
any M×K and K×N inputs of the planned dtype. Per recursion level it has two straight-line functions
(``_l{level}_set``: C = α·A·B, ``_l{level}_acc``: C += α·A·B) written from
:mod:`fmmforge.codegen.schedule`; blocks are views, sums go into preallocated per-level
workspaces (cached per thread by level, reallocated only when the shape changes, so threads may
call the module at once), and the leaves are the vendor gemm (torch.mm/addmm, or numpy's matmul).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from fmmforge.codegen.plan import Plan
from fmmforge.codegen.schedule import Add2, Axpy, LevelSchedule, Operand, Product, Scale, schedule_level
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.version import __version__


def _num(c: Fraction) -> str:
    return repr(float(c))


def block_name(kind: str, index: int, cols: int, rows: int) -> str:
    i, j = divmod(index, cols)
    if max(rows, cols) <= 9:
        return f"{kind}{i + 1}{j + 1}"
    return f"{kind}{i + 1}_{j + 1}"


def _combo_text(terms: dict[int, Fraction], kind: str, cols: int, rows: int) -> str:
    parts = []
    for idx, c in sorted(terms.items()):
        name = block_name(kind, idx, cols, rows)
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        coef = "" if mag == 1 else f"{mag}·"
        parts.append((sign, coef + name))
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, t in parts[1:]:
        text += f" {sign} {t}"
    return f"({text})" if len(parts) > 1 else text


def product_comments(d: Decomposition) -> list[str]:
    n, m, p = d.format
    U, V, W = d.factors()
    lines = []
    for r in range(d.rank):
        u = {a: Fraction(U[a, r]) for a in range(n * m) if U[a, r] != 0}
        v = {b: Fraction(V[b, r]) for b in range(m * p) if V[b, r] != 0}
        outs = [block_name("C", c, p, n) if W[c, r] == 1 else f"{Fraction(W[c, r])}·{block_name('C', c, p, n)}"
                for c in range(n * p) if W[c, r] != 0]
        lines.append(f"M{r + 1} = {_combo_text(u, 'A', m, n)}·{_combo_text(v, 'B', p, m)}"
                     f"  -> {', '.join(outs)}")
    return lines


@dataclass(frozen=True)
class PythonDialect:
    """How one backend writes the schedule's operations."""

    library: str

    def header(self, dtype: str) -> list[str]:
        raise NotImplementedError

    def add2(self, dst: str, x: str, c: Fraction, y: str) -> list[str]:
        raise NotImplementedError

    def axpy(self, dst: str, c: Fraction, x: str) -> list[str]:
        raise NotImplementedError

    def scale(self, dst: str, c: Fraction, x: str) -> list[str]:
        raise NotImplementedError

    def runtime(self) -> str:
        raise NotImplementedError


# The per-thread caches of every Python module. ``__STREAMS__``: what a CUDA user must know.
THREAD_CACHES = '''
# Caches are per thread: threads calling matmul at the same time never share a workspace, and a
# thread's workspaces are freed when it ends.__STREAMS__
_LOCAL = threading.local()


def _cache(name):
    """This thread's cache ``name``: a dict, created on first use."""
    found = getattr(_LOCAL, name, None)
    if found is None:
        found = {}
        setattr(_LOCAL, name, found)
    return found
'''

# Several CUDA streams driven from one thread share that thread's workspaces.
CUDA_STREAMS_NOTE = """
# On CUDA a call's work is queued on the current stream and its workspaces are reused by the
# thread's next call: a thread that calls matmul on several streams must order them between
# calls (e.g. s2.wait_stream(s1)), or call from one thread per stream."""


def thread_caches(cuda: bool) -> str:
    """The module text defining ``_cache(name)``; ``cuda``: note what a user of several streams must do."""
    return THREAD_CACHES.replace("__STREAMS__", CUDA_STREAMS_NOTE if cuda else "")


WORKSPACES = '''

def clear_workspaces():
    """Free this thread's cached workspaces."""
    _cache("workspaces").clear()


def workspace_bytes():
    """Bytes held by this thread's cached workspaces."""
    return sum(t.nbytes for t in _cache("workspaces").values())


def _ws(key, rows, cols, like):
    """This thread's rows×cols workspace ``key`` (dtype and device of ``like``)."""
    ws = _cache("workspaces")
    t = ws.get(key)
    if t is None or tuple(t.shape) != (rows, cols) or t.dtype != like.dtype__SAME_DEVICE__:
        ws.pop(key, None)  # free the old buffer before allocating (peak memory)
        t = __ALLOCATE__
        ws[key] = t
    return t


'''


def workspace_runtime(device_check: str, allocate: str, cuda: bool) -> str:
    """The cached-workspace helpers of a low-memory module (the same for every Python backend)."""
    return thread_caches(cuda) + WORKSPACES.replace("__SAME_DEVICE__", device_check).replace("__ALLOCATE__", allocate)


# The vendor-gemm leaves and the public entry point of every torch module (``__ENTRY__``: the
# function that computes C = alpha·A·B at the top).
TORCH_LEAVES_AND_MATMUL = '''def _leaf_set(A, B, C, alpha):
    """C = alpha·A·B (vendor gemm)."""
    if alpha == 1.0:
        torch.mm(A, B, out=C)
    else:
        torch.addmm(C, A, B, beta=0.0, alpha=alpha, out=C)


def _leaf_acc(A, B, C, alpha):
    """C += alpha·A·B (vendor gemm, accumulating in place)."""
    torch.addmm(C, A, B, alpha=alpha, out=C)


def matmul(A, B, out=None):
    """C = A·B for an M×K and a K×N tensor of dtype DTYPE (any sizes; one device)."""
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise TypeError("matmul expects two torch tensors")
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"cannot multiply shapes {tuple(A.shape)} and {tuple(B.shape)}")
    if A.dtype != DTYPE or B.dtype != DTYPE:
        raise TypeError(f"this kernel was generated for {DTYPE}, got {A.dtype} and {B.dtype}")
    M, N = A.shape[0], B.shape[1]
    C = torch.empty((M, N), dtype=DTYPE, device=A.device) if out is None else out
    if C.numel() == 0:
        return C
    if A.shape[1] == 0:
        return C.zero_()
    __ENTRY__(A, B, C, 1.0)
    return C
'''


class TorchDialect(PythonDialect):
    def __init__(self) -> None:
        super().__init__("torch")

    def header(self, dtype: str) -> list[str]:
        return ["import threading", "", "import torch", "", f"DTYPE = torch.{dtype}"]

    def add2(self, dst, x, c, y):
        if c == 1:
            return [f"torch.add({x}, {y}, out={dst})"]
        if c == -1:
            return [f"torch.sub({x}, {y}, out={dst})"]
        return [f"torch.add({x}, {y}, alpha={_num(c)}, out={dst})"]

    def axpy(self, dst, c, x):
        if c == 1:
            return [f"{dst}.add_({x})"]
        if c == -1:
            return [f"{dst}.sub_({x})"]
        return [f"{dst}.add_({x}, alpha={_num(c)})"]

    def scale(self, dst, c, x):
        if c == 0:
            return [f"{dst}.zero_()"]
        if c == 1:
            return [f"{dst}.copy_({x})"]
        return [f"torch.mul({x}, {_num(c)}, out={dst})"]

    def runtime(self) -> str:
        return (workspace_runtime(" or t.device != like.device",
                                  "torch.empty((rows, cols), dtype=like.dtype, device=like.device)", cuda=True)
                + TORCH_LEAVES_AND_MATMUL.replace("__ENTRY__", "_l0_set"))


class NumpyDialect(PythonDialect):
    def __init__(self) -> None:
        super().__init__("numpy")

    def header(self, dtype: str) -> list[str]:
        return ["import threading", "", "import numpy as np", "", f"DTYPE = np.dtype({dtype!r})"]

    def add2(self, dst, x, c, y):
        if c == 1:
            return [f"np.add({x}, {y}, out={dst})"]
        if c == -1:
            return [f"np.subtract({x}, {y}, out={dst})"]
        return [f"np.multiply({y}, {_num(c)}, out={dst})", f"np.add({dst}, {x}, out={dst})"]

    def axpy(self, dst, c, x):
        if c == 1:
            return [f"np.add({dst}, {x}, out={dst})"]
        if c == -1:
            return [f"np.subtract({dst}, {x}, out={dst})"]
        return [f"{dst} += {_num(c)} * {x}"]

    def scale(self, dst, c, x):
        if c == 0:
            return [f"{dst}.fill(0)"]
        if c == 1:
            return [f"np.copyto({dst}, {x})"]
        return [f"np.multiply({x}, {_num(c)}, out={dst})"]

    def runtime(self) -> str:
        return workspace_runtime("", "np.empty((rows, cols), dtype=like.dtype)", cuda=False) + '''def _leaf_set(A, B, C, alpha):
    """C = alpha·A·B (BLAS gemm)."""
    np.matmul(A, B, out=C)
    if alpha != 1.0:
        C *= alpha


def _leaf_acc(A, B, C, alpha):
    """C += alpha·A·B (BLAS gemm)."""
    if alpha == 1.0:
        C += A @ B
    else:
        C += alpha * (A @ B)


def matmul(A, B, out=None):
    """C = A·B for an M×K and a K×N array of dtype DTYPE (any sizes)."""
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"cannot multiply shapes {A.shape} and {B.shape}")
    if A.dtype != DTYPE or B.dtype != DTYPE:
        raise TypeError(f"this kernel was generated for {DTYPE}, got {A.dtype} and {B.dtype}")
    M, N = A.shape[0], B.shape[1]
    C = np.empty((M, N), dtype=DTYPE) if out is None else out
    if C.size == 0:
        return C
    if A.shape[1] == 0:
        C.fill(0)
        return C
    _l0_set(A, B, C, 1.0)
    return C
'''


DIALECTS = {"torch": TorchDialect(), "numpy": NumpyDialect()}


def _alpha(c: Fraction) -> str:
    if c == 1:
        return "alpha"
    if c == -1:
        return "-alpha"
    return f"alpha * {_num(c)}"


def _level_function(level: int, d: Decomposition, sched: LevelSchedule, dialect: PythonDialect,
                    next_fn: str, comments: list[str]) -> list[str]:
    n, m, p = d.format
    mode = sched.mode
    name = f"_l{level}_{mode}"
    what = "C = alpha·A·B" if mode == "set" else "C += alpha·A·B"
    L = [
        f"def {name}(A, B, C, alpha):",
        f'    """Level {level}: {what} with <{n},{m},{p}> rank {d.rank}."""',
        "    M, K = A.shape",
        "    N = B.shape[1]",
        f"    if M < {n} * CUTOFF or K < {m} * CUTOFF or N < {p} * CUTOFF:",
        f"        return _leaf_{mode}(A, B, C, alpha)",
    ]
    L += [f"    dm, dk, dn = _multiples(M, K, N, {level})",
          "    if M % dm or K % dk or N % dn:",
          f"        return _peel({name}, _leaf_{mode}, A, B, C, alpha, dm, dk, dn)"]
    L.append(f"    bm, bk, bn = M // {n}, K // {m}, N // {p}")
    used = {(op_.kind, op_.index) for op in sched.ops for op_ in _operands(op)}
    for kind, rows, cols, rs, cs in (("A", n, m, "bm", "bk"), ("B", m, p, "bk", "bn"), ("C", n, p, "bm", "bn")):
        for idx in range(rows * cols):
            if (kind, idx) not in used:
                continue
            i, j = divmod(idx, cols)
            src = kind
            L.append(f"    {block_name(kind, idx, cols, rows)} = {src}[{_slice(i, rs)}, {_slice(j, cs)}]")
    if ("S", -1) in used:
        L.append(f"    S = _ws(({level}, 'S'), bm, bk, A)")
    if ("T", -1) in used:
        L.append(f"    T = _ws(({level}, 'T'), bk, bn, A)")
    if ("P", -1) in used:
        L.append(f"    P = _ws(({level}, 'P'), bm, bn, A)")

    def nm(o: Operand) -> str:
        if o.kind in ("S", "T", "P"):
            return o.kind
        rows, cols = {"A": (n, m), "B": (m, p), "C": (n, p)}[o.kind]
        return block_name(o.kind, o.index, cols, rows)

    for op in sched.ops:
        if isinstance(op, Product):
            L.append(f"    # {comments[op.term]}")
            fn = next_fn + "_" + op.mode
            L.append(f"    {fn}({nm(op.a)}, {nm(op.b)}, {nm(op.dst)}, {_alpha(op.coef)})")
        elif isinstance(op, Add2):
            L += ["    " + s for s in dialect.add2(nm(op.dst), nm(op.x), op.coef, nm(op.y))]
        elif isinstance(op, Axpy):
            L += ["    " + s for s in dialect.axpy(nm(op.dst), op.coef, nm(op.x))]
        elif isinstance(op, Scale):
            L += ["    " + s for s in dialect.scale(nm(op.dst), op.coef, nm(op.x))]
    return L


def _slice(i: int, size: str) -> str:
    if i == 0:
        return f":{size}"
    if i == 1:
        return f"{size}:2 * {size}"
    return f"{i} * {size}:{i + 1} * {size}"


def _operands(op) -> list[Operand]:
    if isinstance(op, Product):
        return [op.dst, op.a, op.b]
    if isinstance(op, Add2):
        return [op.dst, op.x, op.y]
    return [op.dst, op.x]


MULTIPLES = '''

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
'''

PEEL = '''

def _peel(core, leaf, A, B, C, alpha, n, m, p):
    """Dynamic peeling: the fast algorithm on the divisible core, gemm fix-ups for the rest."""
    M, K = A.shape
    N = B.shape[1]
    Mc, Kc, Nc = M - M % n, K - K % m, N - N % p
    core(A[:Mc, :Kc], B[:Kc, :Nc], C[:Mc, :Nc], alpha)
    if Kc < K:
        _leaf_acc(A[:Mc, Kc:], B[Kc:, :Nc], C[:Mc, :Nc], alpha)
    if Nc < N:
        leaf(A[:Mc, :], B[:, Nc:], C[:Mc, Nc:], alpha)
    if Mc < M:
        leaf(A[Mc:, :], B, C[Mc:, :], alpha)
'''


def emit_python(plan: Plan, decomps: list[Decomposition]) -> tuple[str, dict]:
    """(module source, facts: passes per level, workspace elements per C element)."""
    dialect = DIALECTS[plan.backend if plan.backend in DIALECTS else "torch"]
    lines = ['"""fmmforge kernel: C = A·B with ' + plan.describe() + ".", ""]
    lines.append(f"Generated by fmmforge {__version__}. Standalone: imports only {dialect.library} "
                 "(and threading); copy it anywhere.")
    lines.append("Usage: C = matmul(A, B) for any M×K and K×N inputs of dtype DTYPE; threads may call it at once.")
    lines.append("")
    facts: dict = {"levels": []}
    schedules: list[tuple[LevelSchedule, LevelSchedule]] = []
    for level, d in enumerate(decomps):
        s_set, s_acc = schedule_level(d, "set"), schedule_level(d, "acc")
        schedules.append((s_set, s_acc))
        n, m, p = d.format
        lines.append(f"Level {level}: {plan.algorithms[level]} <{n},{m},{p}> rank {d.rank}; "
                     f"{s_set.passes} block passes (set), {s_acc.passes} (accumulate); "
                     f"{d.naive_additions} additions without reuse.")
        facts["levels"].append({"algorithm": plan.algorithms[level], "format": d.format, "rank": d.rank,
                                "passes_set": s_set.passes, "passes_acc": s_acc.passes,
                                "naive_additions": d.naive_additions,
                                "uses_p": s_set.uses_p or s_acc.uses_p})
    lines.append('"""')
    lines.append("")
    lines += dialect.header(plan.dtype)
    lines.append(f"CUTOFF = {plan.cutoff}  # blocks smaller than this go to the vendor gemm")
    lines.append(f"FORMATS = {[tuple(d.format) for d in decomps]!r}  # <n,m,p> block counts of each level")
    lines.append(dialect.runtime().rstrip())
    lines.append(MULTIPLES.rstrip())
    lines.append(PEEL.rstrip())
    if not decomps:
        lines += ["", "", "_l0_set = _leaf_set", "_l0_acc = _leaf_acc"]
    for level, d in enumerate(decomps):
        comments = product_comments(d)
        next_fn = f"_l{level + 1}" if level + 1 < len(decomps) else "_leaf"
        for sched in schedules[level]:
            lines += ["", ""] + _level_function(level, d, sched, dialect, next_fn, comments)
    # workspace: per level S (bm×bk), T (bk×bn), P (bm×bn) relative to the C at that level
    ws = 0.0
    scale_m = scale_k = scale_n = 1.0
    for level, d in enumerate(decomps):
        n, m, p = d.format
        scale_m, scale_k, scale_n = scale_m / n, scale_k / m, scale_n / p
        uses_p = facts["levels"][level]["uses_p"]
        ws += scale_m * scale_k + scale_k * scale_n + (scale_m * scale_n if uses_p else 0)
    facts["workspace_fraction_square"] = ws  # for M=K=N: workspace elements / (M·N)
    return "\n".join(lines) + "\n", facts
