"""Where the time of a generated torch kernel goes on this CPU, and the best speed-up its leaves allow.

For each case the validated kernel is generated and four things are timed, each interleaved with
torch.mm (out=) through fmmforge.hardware.timing, so every figure is a ratio taken in one run:

* ``full``: the kernel itself (what benchmarks/cpu_speedup.py reports);
* ``leaves``: the same module with every element-wise pass (the lines ``torch.add/sub/mul(..., out=)``
  and ``X.add_/sub_/copy_/zero_(...)`` of the source) replaced by ``pass``: the leaf gemms run on
  the same operands, in the same order, writing into the same blocks of C. Its result is wrong by
  construction, so it is a *measurement of a bound*, never a kernel: base / leaves is the
  speed-up a schedule with free additions could reach with these leaves on this machine;
* ``passes``: the module with the leaf gemms replaced by no-ops: additions, copies and the
  Python overhead of the recursion;
* the remainder ``full - leaves - passes`` is the interaction of the two (caches evicted by
  one and refilled by the other).

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/cpu_breakdown.py
    .venv/bin/python benchmarks/cpu_breakdown.py --cases "strassen-winograd:2:4096,laderman:1:4608"

It answers whether a target of issue 14 is reachable by a better addition schedule: when even
``base / leaves`` is below the target, no schedule of these leaves can meet it on this machine.

``--variant lowmem,fused`` (one or several plan variants) instead splits the time of each variant's
kernel into its phases, the variants and torch.mm timed interleaved (one call of each per round,
the order rotated): ``leaves`` (the leaf gemms), ``A`` / ``B`` (the passes forming A-side / B-side
sums), ``C`` (the passes writing C and product workspaces) and ``overhead`` (the rest: Python
recursion, views, dispatch, thread-count switches). Each phase is clocked around the calls
themselves (:func:`instrument`), so the kernel computes its true result while it is measured:

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/cpu_breakdown.py \
        --variant lowmem,fused --cases strassen-winograd:1:4096,strassen-winograd:2:4096 --pairs 5

``--task-parallel 1024,2048`` answers whether independent leaf gemms gain from running at once, one
single-threaded gemm per core (the parallel variant's premise): per size, 7 gemms of N^3 one after
another with all threads (``seq``), the 7 on the workers with one thread each (``par7``: 4 and 3),
6 on the workers and the 7th with all threads (``hybrid``, the parallel kernel's BFS/DFS split), one
single-threaded gemm alone and two at once (full per-core speed when those take the same time);
timed round-robin (fmmforge.hardware.timing.interleaved), ratios per round with min-max. Each worker
pins its own thread count (omp_set_num_threads and MKL_Set_Num_Threads_Local act on the calling
thread only; torch.set_num_threads is process-wide):

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/cpu_breakdown.py --task-parallel 1024,2048 --pairs 9
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import types
from typing import Callable

DEFAULT_CASES = "strassen-winograd:2:4096,strassen-winograd:3:4096,strassen-winograd:2:8192,strassen-winograd:3:8192"
TARGETS = {4096: 1.10, 8192: 1.18, 16384: 1.25}  # issue 14's best-plan targets (benchmarks/cpu_speedup.py)
# the element-wise passes an emitted torch kernel performs (codegen/emit_python.py writes them so)
_PASS_LINE = re.compile(r"^(\s+)(torch\.(add|sub|mul)\(.*\bout=\w+\)|\w+\.(add_|sub_|copy_|zero_)\(.*\)"
                        r"|_fused_(sums|combine)\(.*\)|_combination\(.*\)|_xcomb\(.*\))\s*(#.*)?$")


# The kernels' workspace allocation (codegen.runtime.runtime_torch._allocate). With the passes gone, nothing
# ever writes the sums the leaves read, so a workspace must not be left as torch.empty gives it: on
# memory a freed float64 array held (the error check's), a float32 view is full of denormals, which
# Intel cores multiply dozens of times slower (2026-12-03, Intel Xeon: one "leaves-only" Strassen
# L2 at 4096 ran 8x slower than the whole kernel). The leaves-only module fills it with rand instead.
_ALLOCATE = "return torch.empty(shape, dtype=like.dtype, device=like.device)"
_ALLOCATE_FILLED = "return torch.rand(shape, dtype=like.dtype, device=like.device)  # leaves-only: no denormals"


# helpers whose call lines are passes (clocked or removed as one): the lines in their bodies are not
# (_xprod, codegen.runtime.runtime_split: a product whose body zeroes the thin strips of uneven blocks)
_PASS_HELPERS = re.compile(r"^def (_fused_sums|_fused_combine|_combination|_xcomb|_xprod)\(")


def pass_lines(source: str) -> list[tuple[str, re.Match | None]]:
    """Each line of ``source`` with its :data:`_PASS_LINE` match, None inside a pass helper's body."""
    out, inside = [], False
    for line in source.splitlines():
        if line.startswith("def "):
            inside = bool(_PASS_HELPERS.match(line))
        out.append((line, None if inside else _PASS_LINE.match(line)))
    return out


def strip_passes(source: str) -> tuple[str, int]:
    """The module source with every element-wise pass replaced by ``pass``, and its workspaces
    filled with random numbers when allocated (:data:`_ALLOCATE`); and how many passes there were."""
    if _ALLOCATE not in source:
        raise ValueError("the kernel source has no torch workspace allocation to fill: strip_passes needs a torch kernel")
    out, n = [], 0
    for line, m in pass_lines(source.replace(_ALLOCATE, _ALLOCATE_FILLED)):
        if m:
            out.append(f"{m.group(1)}pass  # removed: {m.group(2)}")
            n += 1
        else:
            out.append(line)
    return "\n".join(out) + "\n", n


PHASES = ("leaves", "A", "B", "C", "overhead")


def _pass_phase(call: str) -> str:
    """The phase of one element-wise pass line: the A- or B-side sums, or the C side (C blocks and
    product workspaces). Lowmem writes A-side sums into ``S``, B-side ones into ``T``; the fused
    kernel names the operand it reads first."""
    fused = re.match(r"_fused_(sums|combine)\((\w+)", call)
    if fused:
        return {"A": "A", "B": "B"}.get(fused.group(2), "C") if fused.group(1) == "sums" else "C"
    split = re.match(r"_xcomb\((\w+)", call)  # uneven blocks (codegen.runtime.runtime_split): the destination first
    if split:
        return {"S": "A", "T": "B"}.get(split.group(1), "C")
    out = re.search(r"\bout=(\w+)", call)
    dst = out.group(1) if out else call.split(".", 1)[0]
    return {"S": "A", "T": "B"}.get(dst.rstrip("0123456789").split("[", 1)[0], "C")


def instrument(source: str, name: str) -> tuple[types.ModuleType, dict[str, float]]:
    """The kernel module with a clock around every element-wise pass and every leaf gemm, and the
    dict the clocks add their seconds to (phases ``leaves``, ``A``, ``B``, ``C``; zero it between
    calls). The module still computes C = A·B."""
    out = []
    for line, m in pass_lines(source):
        if m:
            phase = _pass_phase(m.group(2))
            line = f"{m.group(1)}_t0 = _clock(); {m.group(2)}; _spent[{phase!r}] += _clock() - _t0"
        out.append(line)
    mod = load("\n".join(out) + "\n", name)
    spent = dict.fromkeys(PHASES, 0.0)
    mod._clock, mod._spent = time.perf_counter, spent

    def clocked(leaf: Callable) -> Callable:
        def run(*args):
            t0 = time.perf_counter()
            leaf(*args)
            spent["leaves"] += time.perf_counter() - t0
        return run

    mod._leaf_set, mod._leaf_acc = clocked(mod._leaf_set), clocked(mod._leaf_acc)
    return mod, spent


def serial_passes() -> tuple[Callable, Callable]:
    """The fused kernels' two compiled passes without numba's thread pool (an experiment of
    ``--variant fused-serial``: prange runs as range on the calling thread)."""
    import numba

    from fmmforge.codegen.runtime import runtime_fused

    jit = numba.njit(parallel=False, fastmath=False, nogil=True)
    found = getattr(serial_passes, "kernels", None)
    if found is None:
        found = serial_passes.kernels = (jit(runtime_fused._sums_py), jit(runtime_fused._combine_py))
    return found


def phase_rounds(kernels: dict[str, Callable[[], None]], spent: dict[str, dict[str, float]],
                 baseline: Callable[[], None], rounds: int, warmup: int = 1) -> tuple[dict[str, list[dict[str, float]]], list[float]]:
    """Per variant, one phase split per round ({phase: seconds}, ``overhead`` = the call's time not in
    a clocked phase), and torch.mm's time per round; each round calls every kernel and the baseline
    once, in an order rotated from round to round."""
    names = list(kernels) + ["torch.mm"]
    calls = {**kernels, "torch.mm": baseline}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in kernels}
    base: list[float] = []
    for r in range(warmup + rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if name in spent:
                for phase in spent[name]:
                    spent[name][phase] = 0.0
            t0 = time.perf_counter()
            calls[name]()
            total = time.perf_counter() - t0
            if r < warmup:
                continue
            if name == "torch.mm":
                base.append(total)
            else:
                split = dict(spent[name])
                split["overhead"] = total - sum(split[p] for p in PHASES if p != "overhead")
                split["total"] = total
                samples[name].append(split)
    return samples, base


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.4f} [{min(values):.4f}-{max(values):.4f}]"


def phases_main(cases: list[tuple[str, int, int]], variants: list[str], rounds: int, threads: int | None) -> int:
    """The phase table of each case and variant (see the module docstring)."""
    import torch

    from fmmforge.codegen.generate import generate
    from fmmforge.codegen.plan import make_plan
    from fmmforge.hardware.devices import cpu_device
    from fmmforge.hardware.timing import pinned_threads
    from fmmforge.plugins import get_backend

    print(f"device: {cpu_device().description}; phases of {', '.join(variants)} and torch.mm, interleaved; "
          f"rounds {rounds}; seconds: median [min-max] over the rounds", flush=True)
    for algo, levels, n in cases:
        torch.manual_seed(0)
        A, B = torch.rand(n, n) * 2 - 1, torch.rand(n, n) * 2 - 1
        exact = A.double() @ B.double()
        kernels, spent, outs = {}, {}, {}
        for variant in variants:
            base_variant, _, serial = variant.partition("-")
            plan, decomps = make_plan(algo, levels, backend="torch", dtype="float32", device="cpu",
                                      variant=base_variant)
            mod, spent[variant] = instrument(generate(plan, decomps, backend=get_backend("torch")).source,
                                             f"phases_{variant}")
            if serial == "serial" and base_variant == "fused":  # experiment: the passes on one core, no pool
                mod._passes = serial_passes
            if serial in ("numba", "torch") and base_variant == "fused":  # experiment: every group's sums one way
                mod.SUMS_PASS = serial
            C = outs[variant] = torch.empty(n, n)
            err = float((mod.matmul(A, B, out=C).double() - exact).abs().max())
            if not err < 1e-2:
                raise SystemExit(f"{algo} L{levels} {variant} at {n}: max error {err:.3g}; not timed")
            kernels[variant] = (lambda m, c: lambda: m.matmul(A, B, out=c))(mod, C)
        C_base = torch.empty(n, n)
        with pinned_threads(threads):
            samples, base = phase_rounds(kernels, spent, lambda: torch.mm(A, B, out=C_base), rounds)
        b = statistics.median(base)
        print(f"{algo} L{levels} {n}: torch.mm {_spread(base)} s")
        print(f"  {'variant':8s} " + " ".join(f"{p:>24s}" for p in PHASES + ("total",)) + f" {'speed-up':>9s}")
        for variant in variants:
            rows = samples[variant]
            cells = " ".join(f"{_spread([r[p] for r in rows]):>24s}" for p in PHASES + ("total",))
            ratios = [t / r["total"] for t, r in zip(base, rows)]
            print(f"  {variant:8s} {cells} {b / statistics.median([r['total'] for r in rows]):9.3f} "
                  f"[{min(ratios):.3f}-{max(ratios):.3f}]", flush=True)
        if len(variants) > 1:
            first = [r["total"] for r in samples[variants[0]]]
            for variant in variants[1:]:
                ratios = [f / r["total"] for f, r in zip(first, samples[variant])]
                print(f"  {variants[0]} time / {variant} time: {statistics.median(ratios):.3f} "
                      f"[{min(ratios):.3f}-{max(ratios):.3f}] (above 1: {variant} is faster)")
    return 0


def thread_controls() -> tuple[Callable[[int], int], Callable[[int], int]] | None:
    """(omp_set_num_threads, MKL_Set_Num_Threads_Local) of the OpenMP runtime and MKL that torch
    uses, each acting on the calling thread only; None where torch has no such build."""
    import ctypes
    import os

    import torch

    if not torch.backends.mkl.is_available() or "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:  # dlsym on libtorch_cpu also finds the symbols of the libraries it links (libgomp)
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        fns = (lib.omp_set_num_threads, lib.MKL_Set_Num_Threads_Local)
    except (OSError, AttributeError):
        return None
    for fn in fns:
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fns


def task_parallel_main(sizes: list[int], rounds: int, threads: int | None) -> int:
    """The task-parallel table (see the module docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from fmmforge.hardware.devices import cpu_device
    from fmmforge.hardware.timing import interleaved, pinned_threads

    controls = thread_controls()
    if controls is None:
        raise SystemExit("torch here has no per-thread OpenMP/MKL thread controls: no task parallelism to measure")
    with pinned_threads(threads) as used:
        workers = used
    # torch sets a thread's counts on its first parallel op there (to torch.set_num_threads' value):
    # the initializer lets that happen (torch.get_num_threads) before it pins the worker to one thread
    pool = ThreadPoolExecutor(workers, initializer=lambda: (torch.get_num_threads(), controls[0](1), controls[1](1)))
    per_worker = pool.submit(torch.get_num_threads).result()
    print(f"device: {cpu_device().description}; {used} threads; {workers} workers of {per_worker} thread(s); rounds {rounds}; "
          "median [min-max] over the rounds", flush=True)
    for n in sizes:
        torch.manual_seed(0)
        ops = [(torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)) for _ in range(7)]

        def gemm(i: int) -> None:
            torch.mm(ops[i][0], ops[i][1], out=ops[i][2])

        def on_workers(products) -> Callable[[], None]:
            return lambda: list(pool.map(gemm, products))

        def hybrid() -> None:
            list(pool.map(gemm, range(6)))
            gemm(6)

        fns = {"seq": lambda: [gemm(i) for i in range(7)], "par7": on_workers(range(7)), "hybrid": hybrid,
               "one": on_workers([0]), "pair": on_workers(range(min(2, workers)))}
        s = interleaved(fns, threads=used, rounds=rounds, min_sample_s=0.2)
        flop = 2 * n ** 3 / 1e9
        for name in ("par7", "hybrid"):
            print(f"N={n}: seq time / {name} time {_spread([q / t for q, t in zip(s['seq'], s[name])])} "
                  f"(above 1: task-parallel is faster)")
        print(f"N={n}: two 1-thread gemms at once / one alone {_spread([p / o for p, o in zip(s['pair'], s['one'])])} "
              "(1: full per-core speed)")
        print(f"N={n}: GFLOP/s (median) seq {7 * flop / statistics.median(s['seq']):.0f}, par7 "
              f"{7 * flop / statistics.median(s['par7']):.0f}, hybrid {7 * flop / statistics.median(s['hybrid']):.0f}, "
              f"one 1-thread gemm {flop / statistics.median(s['one']):.0f}", flush=True)
    pool.shutdown()
    return 0


def load(source: str, name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    return mod


def parse_cases(text: str) -> list[tuple[str, int, int]]:
    cases = []
    for part in text.split(","):
        try:
            algo, levels, n = part.rsplit(":", 2)
            cases.append((algo, int(levels), int(n)))
        except ValueError:
            raise SystemExit(f"bad case {part!r}: write ALGO:LEVELS:N, e.g. strassen-winograd:2:4096") from None
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated ALGO:LEVELS:N (square, float32)")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved samples per comparison")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--variant", default="", help="comma-separated plan variants (lowmem, fused; fused-serial: the fused "
                                                   "passes without numba's pool; fused-numba / fused-torch: every "
                                                   "group's sums in the compiled pass / by torch passes, not as "
                                                   "the emitter chose): print the phase "
                                                   "split of each, timed interleaved, instead of the bound table")
    ap.add_argument("--task-parallel", default="", metavar="N,N",
                    help="instead: 7 leaf gemms of N^3 one after another vs on single-threaded workers, interleaved")
    args = ap.parse_args(argv)
    if args.task_parallel:
        sizes = [n for n in args.task_parallel.split(",") if n]
        if not all(n.isdigit() and int(n) > 0 for n in sizes):
            raise SystemExit(f"bad --task-parallel {args.task_parallel!r}: write sizes N,N, e.g. 1024,2048")
        return task_parallel_main([int(n) for n in sizes], args.pairs, args.threads)
    cases = parse_cases(args.cases)
    if args.variant:
        return phases_main(cases, [v for v in args.variant.split(",") if v], args.pairs, args.threads)

    import torch

    from fmmforge.codegen.generate import generate
    from fmmforge.codegen.plan import ceiling, make_plan
    from fmmforge.hardware.devices import cpu_device
    from fmmforge.hardware.timing import compare, pinned_threads
    from fmmforge.plugins import get_backend

    print(f"device: {cpu_device().description}; baseline torch.mm (out=); pairs {args.pairs}", flush=True)
    print(f"{'case':30s} {'base s':>7s} {'full':>6s} {'leaves':>7s} {'passes':>7s} {'rest':>6s} "
          f"{'speed-up':>8s} {'bound':>6s} {'ceiling':>7s} {'target':>6s}")
    verdicts = []
    for algo, levels, n in cases:
        plan, decomps = make_plan(algo, levels, backend="torch", dtype="float32", device="cpu")
        kernel = generate(plan, decomps, backend=get_backend("torch"))  # validated (or a validated cached copy)
        stripped, removed = strip_passes(kernel.source)
        if removed == 0:
            raise SystemExit(f"{algo} L{levels}: found no element-wise pass to remove; has the torch emitter changed?")
        leaves_mod = load(stripped, "leaves_only")
        passes_mod = load(kernel.source, "passes_only")
        passes_mod._leaf_set = passes_mod._leaf_acc = lambda *a: None  # noqa: E731  (leaves skipped)
        torch.manual_seed(0)
        A = torch.rand(n, n) * 2 - 1
        B = torch.rand(n, n) * 2 - 1
        C = torch.empty(n, n)
        C_base = torch.empty(n, n)
        full_mod = kernel.module()
        err = float((full_mod.matmul(A, B, out=C).double() - A.double() @ B.double()).abs().max())
        if not err < 1e-2:
            raise SystemExit(f"{algo} L{levels} at {n}: max error {err:.3g}; not timed")
        base = lambda: torch.mm(A, B, out=C_base)  # noqa: E731
        with pinned_threads(args.threads):
            r_full = compare(lambda: full_mod.matmul(A, B, out=C), base, pairs=args.pairs)
            r_leaves = compare(lambda: leaves_mod.matmul(A, B, out=C), base, pairs=args.pairs)
            r_passes = compare(lambda: passes_mod.matmul(A, B, out=C), base, pairs=args.pairs)
        # each as a fraction of its own run's baseline, so drifts between the three runs cancel
        f_full = r_full.candidate.median / r_full.baseline.median
        f_leaves = r_leaves.candidate.median / r_leaves.baseline.median
        f_passes = r_passes.candidate.median / r_passes.baseline.median
        bound = 1 / f_leaves
        target = TARGETS.get(n)
        print(f"{algo + ' L' + str(levels) + ' ' + str(n):30s} {r_full.baseline.median:7.3f} {f_full:6.3f} "
              f"{f_leaves:7.3f} {f_passes:7.3f} {f_full - f_leaves - f_passes:6.3f} {1 / f_full:8.3f} "
              f"{bound:6.3f} {ceiling(decomps):7.3f} {target if target else '':>6}", flush=True)
        if target:
            verdicts.append((n, algo, levels, bound, target))
    print("full, leaves, passes, rest: times as fractions of torch.mm's time in the same run; "
          "bound = 1/leaves = the speed-up with free additions")
    for n, algo, levels, bound, target in verdicts:
        word = "reachable" if bound >= target else "NOT reachable by any schedule of these leaves"
        print(f"N={n} {algo} L{levels}: target {target}x is {word} on this machine (bound {bound:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
