"""Emit a standalone Python kernel module (torch or numpy) from a plan.

The module imports only its backend library (and threading) and defines ``matmul(A, B)`` for
any M×K and K×N inputs of the planned dtype. Per distinct algorithm of the plan it has two
straight-line functions (``_strassen_set``: C = α·A·B, ``_strassen_acc``: C += α·A·B, called with
the depth they run at; ``LEVELS`` names each level's pair) written from
:mod:`fmmforge.codegen.schedule`; blocks are views, sums go into preallocated per-level
workspaces (cached per thread by level, reallocated only when the shape changes, so threads may
call the module at once), and the leaves are the vendor gemm (torch.mm/addmm, or numpy's matmul).
The rest of the module is the runtime of :mod:`fmmforge.codegen.runtime`, copied in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import Callable

from fmmforge.codegen.plan import Plan
from fmmforge.codegen.runtime import (inline, runtime_caches as caches, runtime_lowmem as lowmem, runtime_numpy,
                                      runtime_pad, runtime_parallel, runtime_split, runtime_torch)
from fmmforge.codegen.schedule import Add2, Axpy, LevelSchedule, Operand, Product, Scale, columns, schedule_level
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.version import __version__


def _num(c: Fraction) -> str:
    return repr(float(c))


def parallel_products_table(d: Decomposition) -> str:
    """``PARALLEL_PRODUCTS`` for level 0's decomposition ``d``: per product ((A terms), (B terms),
    (C terms)), each term (block, coefficient) with blocks row-major, coefficients as Python numbers.
    A product with an empty side is zero and reaches no C block: it is left out."""
    rows = []
    for sides in zip(*columns(d)):
        if not all(sides):
            continue
        text = ", ".join("(" + "".join(f"({i}, {_num(c)}), " for i, c in terms.items()).rstrip(" ") + ")" for terms in sides)
        rows.append(f"    ({text}),")
    return ("PARALLEL_PRODUCTS = (  # level 0, per product: (A terms, B terms, C terms), each (block, coefficient)\n"
            + "\n".join(rows) + "\n)")


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


# Several CUDA streams driven from one thread share that thread's workspaces (torch kernels).
CUDA_STREAMS_NOTE = """# On CUDA a call's work is queued on the current stream and its workspaces are reused by the
# thread's next call: a thread that calls matmul on several streams must order them between
# calls (e.g. s2.wait_stream(s1)), or call from one thread per stream."""


def thread_caches(cuda: bool) -> str:
    """Module text: this thread's caches and workspaces (``cuda``: what a user of streams must know)."""
    note = CUDA_STREAMS_NOTE + "\n" if cuda else ""
    return (f"# Caches are per thread: threads calling matmul at the same time never share a workspace,\n"
            f"# and a thread's workspaces are freed when it ends.\n{note}_LOCAL = threading.local()\n\n\n"
            + inline(caches._cache, caches.clear_workspaces, caches.workspace_bytes, caches._ws))


def backend_runtime(ops: ModuleType) -> str:
    """Module text: a backend's workspace allocation, leaf gemms and ``matmul`` (codegen.runtime.runtime_torch, ...)."""
    return inline(ops._fits, ops._allocate, ops._leaf_set, ops._leaf_acc, ops.matmul)


@dataclass(frozen=True)
class PythonDialect:
    """How one backend writes the schedule's operations; ``ops``: its runtime module."""

    library: str
    ops: ModuleType
    cuda: bool  # kernels may run on CUDA streams

    def header(self, dtype: str) -> list[str]:
        raise NotImplementedError

    def add2(self, dst: str, x: str, c: Fraction, y: str) -> list[str]:
        raise NotImplementedError

    def axpy(self, dst: str, c: Fraction, x: str) -> list[str]:
        raise NotImplementedError

    def scale(self, dst: str, c: Fraction, x: str) -> list[str]:
        raise NotImplementedError

    def product(self, mode: str, a: str, b: str, dst: str, alpha: str) -> str:
        """A product of the schedule, by the next level's ``sub_set``/``sub_acc`` (or the leaves)."""
        return f"sub_{mode}({a}, {b}, {dst}, {alpha}, deeper)"


class TorchDialect(PythonDialect):
    def __init__(self) -> None:
        super().__init__("torch", runtime_torch, cuda=True)

    def header(self, dtype: str) -> list[str]:
        return ["import threading", "", "import torch", "", f"DTYPE = torch.{dtype}"]

    def add2(self, dst: str, x: str, c: Fraction, y: str) -> list[str]:
        if c == 1:
            return [f"torch.add({x}, {y}, out={dst})"]
        if c == -1:
            return [f"torch.sub({x}, {y}, out={dst})"]
        return [f"torch.add({x}, {y}, alpha={_num(c)}, out={dst})"]

    def axpy(self, dst: str, c: Fraction, x: str) -> list[str]:
        if c == 1:
            return [f"{dst}.add_({x})"]
        if c == -1:
            return [f"{dst}.sub_({x})"]
        return [f"{dst}.add_({x}, alpha={_num(c)})"]

    def scale(self, dst: str, c: Fraction, x: str) -> list[str]:
        if c == 0:
            return [f"{dst}.zero_()"]
        if c == 1:
            return [f"{dst}.copy_({x})"]
        return [f"torch.mul({x}, {_num(c)}, out={dst})"]


class NumpyDialect(PythonDialect):
    def __init__(self) -> None:
        super().__init__("numpy", runtime_numpy, cuda=False)

    def header(self, dtype: str) -> list[str]:
        return ["import threading", "", "import numpy as np", "", f"DTYPE = np.dtype({dtype!r})"]

    def add2(self, dst: str, x: str, c: Fraction, y: str) -> list[str]:
        if c == 1:
            return [f"np.add({x}, {y}, out={dst})"]
        if c == -1:
            return [f"np.subtract({x}, {y}, out={dst})"]
        return [f"np.multiply({y}, {_num(c)}, out={dst})", f"np.add({dst}, {x}, out={dst})"]

    def axpy(self, dst: str, c: Fraction, x: str) -> list[str]:
        if c == 1:
            return [f"np.add({dst}, {x}, out={dst})"]
        if c == -1:
            return [f"np.subtract({dst}, {x}, out={dst})"]
        return [f"{dst} += {_num(c)} * {x}"]

    def scale(self, dst: str, c: Fraction, x: str) -> list[str]:
        if c == 0:
            return [f"{dst}.fill(0)"]
        if c == 1:
            return [f"np.copyto({dst}, {x})"]
        return [f"np.multiply({x}, {_num(c)}, out={dst})"]


class SplitTorchDialect(TorchDialect):
    """torch on uneven, zero-bordered blocks (remainder "split", codegen.runtime.runtime_split): every sum
    and product goes through ``_xcomb``/``_xprod``, which take torch's own path when the blocks are even."""

    def add2(self, dst: str, x: str, c: Fraction, y: str) -> list[str]:
        return [f"_xcomb({dst}, False, (1.0, {x}), ({_num(c)}, {y}))"]

    def axpy(self, dst: str, c: Fraction, x: str) -> list[str]:
        return [f"_xcomb({dst}, True, ({_num(c)}, {x}))"]

    def scale(self, dst: str, c: Fraction, x: str) -> list[str]:
        return [f"_xcomb({dst}, False, ({_num(c)}, {x}))"]

    def product(self, mode: str, a: str, b: str, dst: str, alpha: str) -> str:
        return f"_xprod(sub_{mode}, {a}, {b}, {dst}, {alpha}, deeper, {mode == 'set'})"


DIALECTS = {"torch": TorchDialect(), "numpy": NumpyDialect()}


def dialect_for(backend: str, remainder: str = "peel") -> PythonDialect:
    """The dialect of ``backend``; a backend this emitter cannot write is one clear error."""
    found = DIALECTS.get(backend)
    if found is None:
        raise FmmforgeError(f"the Python emitter writes kernels for {', '.join(DIALECTS)}, not backend "
                            f"{backend!r}; give the backend its own emit()")
    if remainder == "split":
        if backend != "torch":
            raise FmmforgeError(f"--remainder split is for torch kernels, not backend {backend}; use --remainder peel")
        return SplitTorchDialect()
    return found


def _alpha(c: Fraction) -> str:
    if c == 1:
        return "alpha"
    if c == -1:
        return "-alpha"
    return f"alpha * {_num(c)}"


def function_names(plan: Plan, decomps: list[Decomposition]) -> list[str]:
    """Per level, the stem of its function pair: one per distinct algorithm (levels with the same
    scheme share it), named after the algorithm (``_strassen_set``/``_strassen_acc``)."""
    stems: dict[Decomposition, str] = {}
    for label, d in zip(plan.algorithms, decomps):
        if d not in stems:
            stem = "_" + (re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower() or "scheme")
            if stem in stems.values() or stem == "_leaf":
                stem += f"_{len(stems)}"
            stems[d] = stem
    return [stems[d] for d in decomps]


def _algorithm_function(stem: str, label: str, d: Decomposition, sched: LevelSchedule, dialect: PythonDialect,
                        comments: list[str]) -> list[str]:
    """``{stem}_{mode}(A, B, C, alpha, level)``: one step of ``d`` at depth ``level``, its products
    computed by the next level's pair (or the leaves)."""
    n, m, p = d.format
    used = {(op_.kind, op_.index) for op in sched.ops for op_ in _operands(op)}
    L = level_prologue(f"{stem}_{sched.mode}", sched.mode, label, d, used,
                       split=isinstance(dialect, SplitTorchDialect))
    for ws, shape in (("S", "bm, bk"), ("T", "bk, bn"), ("P", "bm, bn")):
        if (ws, -1) in used:
            L.append(f"    {ws} = _ws((level, {ws!r}), ({shape}), A)")

    def nm(o: Operand) -> str:
        if o.kind in ("S", "T", "P"):
            return o.kind
        rows, cols = {"A": (n, m), "B": (m, p), "C": (n, p)}[o.kind]
        return block_name(o.kind, o.index, cols, rows)

    for op in sched.ops:
        if isinstance(op, Product):
            L.append(f"    # {comments[op.term]}")
            L.append("    " + dialect.product(op.mode, nm(op.a), nm(op.b), nm(op.dst), _alpha(op.coef)))
        elif isinstance(op, Add2):
            L += ["    " + s for s in dialect.add2(nm(op.dst), nm(op.x), op.coef, nm(op.y))]
        elif isinstance(op, Axpy):
            L += ["    " + s for s in dialect.axpy(nm(op.dst), op.coef, nm(op.x))]
        elif isinstance(op, Scale):
            L += ["    " + s for s in dialect.scale(nm(op.dst), op.coef, nm(op.x))]
    return L


def level_prologue(name: str, mode: str, label: str, d: Decomposition, used: set[tuple[str, int]],
                   split: bool = False) -> list[str]:
    """The start of a level function ``name(A, B, C, alpha, level)``: the leaf below the cut-off,
    peeling, the next level's pair, the block sizes and a view per block in ``used`` ((kind, index)).
    ``split``: no peeling; blocks of the rounded-up size, the last ones shorter (codegen.runtime.runtime_split)."""
    n, m, p = d.format
    what = "C = alpha·A·B" if mode == "set" else "C += alpha·A·B"
    L = [
        f"def {name}(A, B, C, alpha, level):",
        f'    """{what} with {label} <{n},{m},{p}> rank {d.rank}, at depth ``level`` of the plan."""',
        "    M, K = A.shape",
        "    N = B.shape[1]",
        f"    if M < {n} * CUTOFF or K < {m} * CUTOFF or N < {p} * CUTOFF:",
        f"        return _leaf_{mode}(A, B, C, alpha)",
    ]
    if not split:
        L += ["    dm, dk, dn = _multiples(M, K, N, level)",
              "    if M % dm or K % dk or N % dn:",
              f"        return _peel({name}, _leaf_{mode}, A, B, C, alpha, dm, dk, dn, level)"]
    L += ["    sub_set, sub_acc = _level(level + 1)",
          "    deeper = level + 1",
          f"    bm, bk, bn = -(-M // {n}), -(-K // {m}), -(-N // {p})  # the last blocks may be shorter" if split
          else f"    bm, bk, bn = M // {n}, K // {m}, N // {p}"]
    for kind, rows, cols, rs, cs in (("A", n, m, "bm", "bk"), ("B", m, p, "bk", "bn"), ("C", n, p, "bm", "bn")):
        for idx in range(rows * cols):
            if (kind, idx) not in used:
                continue
            i, j = divmod(idx, cols)
            L.append(f"    {block_name(kind, idx, cols, rows)} = {kind}[{_slice(i, rs)}, {_slice(j, cs)}]")
    return L


def level_functions(plan: Plan, decomps: list[Decomposition], stems: list[str],
                    function: Callable[[str, str, Decomposition, str, list[str]], list[str]]) -> list[str]:
    """Module text: ``function(stem, label, d, mode, comments)`` for each distinct algorithm and
    mode (set, acc), then ``LEVELS``, the (set, acc) pair of each level."""
    lines: list[str] = []
    written: set[str] = set()
    for level, (d, stem) in enumerate(zip(decomps, stems)):
        if stem in written:
            continue
        written.add(stem)
        comments = product_comments(d)
        for mode in ("set", "acc"):
            lines += ["", ""] + function(stem, plan.algorithms[level], d, mode, comments)
    pairs = "".join(f"({stem}_set, {stem}_acc), " for stem in stems)
    return lines + ["", "", f"LEVELS = ({pairs.rstrip(' ')})  # the (set, acc) functions of each level"]


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


def emit_python(plan: Plan, decomps: list[Decomposition]) -> tuple[str, dict]:
    """(module source, facts: passes per level, workspace elements per C element)."""
    dialect = dialect_for(plan.backend, plan.remainder)
    split = plan.remainder == "split"
    lines = ['"""fmmforge kernel: C = A·B with ' + plan.describe() + ".", ""]
    extra = "threading, ctypes, os, concurrent.futures" if plan.variant == "parallel" else "threading"
    lines.append(f"Generated by fmmforge {__version__}. Standalone: imports only {dialect.library} "
                 f"(and {extra}); copy it anywhere.")
    lines.append("Usage: C = matmul(A, B) for any M×K and K×N inputs of dtype DTYPE; threads may call it at once.")
    lines.append("")
    facts: dict = {"levels": []}
    for level, d in enumerate(decomps):
        s_set, s_acc = schedule_level(d, "set", split=split), schedule_level(d, "acc", split=split)
        n, m, p = d.format
        lines.append(f"Level {level}: {plan.algorithms[level]} <{n},{m},{p}> rank {d.rank}; "
                     f"{s_set.passes} block passes (set), {s_acc.passes} (accumulate); "
                     f"{d.naive_additions} additions without reuse.")
        facts["levels"].append({"algorithm": plan.algorithms[level], "format": d.format, "rank": d.rank,
                                "passes_set": s_set.passes, "passes_acc": s_acc.passes,
                                "naive_additions": d.naive_additions,
                                "uses_p": s_set.uses_p or s_acc.uses_p})
    stems = function_names(plan, decomps)
    if decomps:
        lines.append(f"One function pair (set: C = alpha·A·B, acc: C += alpha·A·B) per distinct algorithm, "
                     f"called with its depth: {', '.join(dict.fromkeys(stems))}.")
    lines.append('"""')
    lines.append("")
    lines += dialect.header(plan.dtype)
    lines.append(f"CUTOFF = {plan.cutoff}  # blocks smaller than this go to the vendor gemm")
    lines.append(f"FORMATS = {[tuple(d.format) for d in decomps]!r}  # <n,m,p> block counts of each level")
    lines += ["", "", thread_caches(dialect.cuda).rstrip(), "", "", backend_runtime(dialect.ops).rstrip(), "", "",
              inline(lowmem._level, lowmem._top, lowmem._multiples, lowmem._peel).rstrip()]
    parallel = plan.variant == "parallel" and bool(decomps)
    if parallel:
        lines += ["", "", parallel_products_table(decomps[0]), "", "", runtime_parallel.source().rstrip()]
    if plan.remainder == "pad":
        lines += ["", "", runtime_pad.source().rstrip()]
    if plan.remainder == "split":
        lines += ["", "", runtime_split.source().rstrip()]
    lines += level_functions(plan, decomps, stems, lambda stem, label, d, mode, comments: _algorithm_function(
        stem, label, d, schedule_level(d, mode, split=split), dialect, comments))
    # workspace: per level S (bm×bk), T (bk×bn), P (bm×bn) relative to the C at that level
    ws = 0.0
    scale_m = scale_k = scale_n = 1.0
    for level, d in enumerate(decomps):
        n, m, p = d.format
        scale_m, scale_k, scale_n = scale_m / n, scale_k / m, scale_n / p
        uses_p = facts["levels"][level]["uses_p"]
        ws += scale_m * scale_k + scale_k * scale_n + (scale_m * scale_n if uses_p else 0)
    if parallel:  # per worker: level 0's S, T, P and the deeper levels' workspaces; the caller holds none
        n, m, p = decomps[0].format
        facts["workspace_per_worker"] = ws + (0 if facts["levels"][0]["uses_p"] else 1 / (n * p))
        facts["workers"] = runtime_parallel.torch.get_num_threads()  # as many as torch's threads at a call
        ws = facts["workspace_per_worker"] * facts["workers"]
    if plan.remainder == "pad":
        ws += 3.0  # at most one padded A, B and C (codegen.runtime.runtime_pad)
    facts["workspace_fraction_square"] = ws  # for M=K=N: workspace elements / (M·N)
    return "\n".join(lines) + "\n", facts
