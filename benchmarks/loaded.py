"""Kernels on a busy machine (issue 31): each kernel's time over torch.matmul's, quiet and beside an outside job.

A kernel that wins on a quiet machine must not lose badly on a busy one. In ONE run this script
times, per case, the kernel against torch.matmul (interleaved, both writing into a preallocated
output; the one harness, hardware.timing.compare) first on a quiet machine, then with a load
running: a separate process doing a ``--load-threads``-thread torch.mm loop on ``--load-size``
matrices on the same cores. The script starts that process, switches its loop on and off around
the loaded phases, and stops it at the end; the process also ends by itself when the script
goes away (its stdin closes) or after ``--load-max-s``. Each case runs ``--rounds`` rounds of a
quiet phase then a loaded one.

Printed per case: the ratio kernel/torch quiet and loaded (medians of the per-pair ratios over all
rounds, IQR beside), their quotient loaded/quiet (the median of the rounds' quotients, min-max
over the rounds beside) and whether it is at most ``--bound`` (1.3: the kernel keeps within
about 1.3x of its quiet standing against torch when the machine is busy).

Cases (``--kernels``): the fused and the low-memory Strassen-Winograd kernels at ``--levels``, and
``matmul``: fmmforge.matmul with a stored choice of the fused plan for the size's shape class
(in a scratch FMMFORGE_HOME), as a user would call it: with its contention watch, which sends a
choice's calls to torch.matmul while the kernel is clearly slower there (``--no-watch``: without it,
always the kernel, as before issue 31). Every kernel is validated when generated and checked
against float64 again at the benchmark size. ``--quiet-only`` times the quiet ratios alone (does a
change cost speed on a quiet machine?).

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/loaded.py                  # 1024 and 2048
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/loaded.py --sizes 2048 --kernels fused --pairs 7
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/loaded.py --quiet-only --sizes 2048,4096 --levels 2

Not part of the test run (timings on a shared machine are not assertions).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

SW = "strassen-winograd"
KERNELS = {"fused": "the fused Strassen-Winograd kernel", "lowmem": "the low-memory Strassen-Winograd kernel",
           "matmul": "fmmforge.matmul with a stored choice of the fused kernel"}


# ------------------------------------------------------------ the outside job
# The load is the same job whatever this process was started with: none of the thread runtimes'
# wait settings it may have been given (they change how the job's own threads spin).
QUIET_ENV = ("OMP_", "GOMP_", "KMP_", "MKL_", "NUMBA_")
def load_worker(threads: int, size: int, max_s: float) -> int:
    """The load process: a torch.mm loop on ``threads`` threads while switched on. Reads commands
    from stdin, one a line, and answers each on stdout: ``on`` (answered once the first product of the
    loop is done, so the load runs when the answer comes), ``off`` (answered with the products done
    and seconds since ``on``). Ends at EOF on stdin or after ``max_s`` seconds, whichever comes first."""
    import torch

    torch.set_num_threads(threads)
    A, B = torch.rand(size, size), torch.rand(size, size)
    C = torch.empty(size, size)
    commands: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + max_s
    torch.mm(A, B, out=C)
    print("ready", flush=True)
    on, done, started = False, 0, 0.0
    while time.monotonic() < deadline:
        try:
            cmd = commands.get_nowait() if on else commands.get(timeout=0.1)
        except queue.Empty:
            cmd = None
        if cmd == "quit":
            return 0
        if cmd == "on":
            on, done, started = True, 0, time.perf_counter()
            torch.mm(A, B, out=C)
            done += 1
            print("on", flush=True)
        elif cmd == "off":
            on = False
            print(f"off {done} {time.perf_counter() - started:.3f}", flush=True)
        elif on:
            torch.mm(A, B, out=C)
            done += 1
    return 0


class Load:
    """The outside job as a context manager: the process is started on entry (idle until :meth:`on`)
    and ended on exit (stdin closed, then killed if it has not ended within a few seconds)."""

    def __init__(self, threads: int, size: int, max_s: float) -> None:
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--load-worker", "--load-threads",
                                       str(threads), "--load-size", str(size), "--load-max-s", str(max_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                      env={k: v for k, v in os.environ.items() if not k.startswith(QUIET_ENV)})
        self._expect("ready")

    def _say(self, cmd: str) -> str:
        self._proc.stdin.write(cmd + "\n")
        self._proc.stdin.flush()
        return self._expect(cmd)

    def _expect(self, word: str) -> str:
        line = self._proc.stdout.readline().strip()
        if not line.startswith(word):
            raise RuntimeError(f"the load process said {line!r} where {word!r} was expected (it ended?)")
        return line

    def on(self) -> None:
        self._say("on")

    def off(self) -> float:
        """Switch the loop off; products per second while it was on."""
        _, done, seconds = self._say("off").split()
        return int(done) / max(float(seconds), 1e-9)

    def __enter__(self) -> "Load":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()


# ------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    label: str
    size: int
    candidate: object  # () -> None: one product into its preallocated output
    baseline: object


def _pair_ratios(result) -> list[float]:
    return [c / b for c, b in zip(result.candidate.samples, result.baseline.samples)]


def _check(C, A, B, decomps, dtype: str, label: str) -> None:
    """The product at the benchmark size is within the scheme's error bound (else the run stops)."""
    from fmmforge.codegen.validate import error_bound

    ref = A.double() @ B.double()
    bound = error_bound(A.shape[1], decomps, dtype, float(A.abs().max()), float(B.abs().max()))
    err = float((C.double() - ref).abs().max())
    if not err <= bound:
        raise SystemExit(f"error: {label}: wrong at this size (max error {err:.3g} > bound {bound:.3g})")


def make_cases(sizes: list[int], kernels: list[str], levels: int, dtype: str) -> list[Case]:
    import torch

    import fmmforge
    from fmmforge.codegen.choices import shape_class, store_choice
    from fmmforge.codegen.generate import generate
    from fmmforge.codegen.plan import make_plan
    from fmmforge.hardware.devices import machine_key
    from fmmforge.plugins import get_backend

    tdtype = getattr(torch, dtype)
    cases = []
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        A, B = (torch.rand(n, n, dtype=tdtype, generator=g) * 2 - 1 for _ in range(2))
        C, D = torch.empty(n, n, dtype=tdtype), torch.empty(n, n, dtype=tdtype)
        for name in kernels:
            variant = "lowmem" if name == "lowmem" else "fused"
            plan, decomps = make_plan(SW, levels, dtype=dtype, device="cpu", variant=variant)
            label = f"{n} winograd L{levels} {variant}" + (" (fmmforge.matmul)" if name == "matmul" else "")
            if name == "matmul":
                store_choice(plan, machine=machine_key(), shape=shape_class(n, n, n), speedup=1.5,
                             baseline_median_s=1.0)
                fmmforge.matmul.refresh()
                if fmmforge.matmul.decide(A, B) is None:
                    raise SystemExit(f"error: {label}: fmmforge.matmul does not take the stored choice")
                fn = fmmforge.matmul
                base = torch.matmul
            else:
                fn = generate(plan, decomps, backend=get_backend(plan.backend)).matmul
                base = torch.mm
            fn(A, B, out=C)
            _check(C, A, B, decomps, dtype, label)
            cases.append(Case(label, n, lambda fn=fn, A=A, B=B, C=C: fn(A, B, out=C),
                              lambda base=base, A=A, B=B, D=D: base(A, B, out=D)))
    return cases


def measure(case: Case, load: Load | None, rounds: int, pairs: int) -> dict:
    """Quiet then loaded ratios kernel/torch of ``case``, ``rounds`` times; the load's speed beside
    (quiet ratios only without a load)."""
    from fmmforge.hardware.timing import Timing, compare

    quiet: list[list[float]] = []
    loaded: list[list[float]] = []
    load_rate: list[float] = []
    for _ in range(rounds):
        quiet.append(_pair_ratios(compare(case.candidate, case.baseline, pairs=pairs, warmup=1)))
        if load is None:
            continue
        load.on()
        try:
            loaded.append(_pair_ratios(compare(case.candidate, case.baseline, pairs=pairs, warmup=1)))
        finally:
            load_rate.append(load.off())
    q = Timing.of([x for r in quiet for x in r])
    if load is None:
        return {"quiet": q.median, "quiet_iqr": q.iqr}
    lo = Timing.of([x for r in loaded for x in r])
    quotients = [statistics.median(lr) / statistics.median(qr) for qr, lr in zip(quiet, loaded)]
    return {"quiet": q.median, "quiet_iqr": q.iqr, "loaded": lo.median, "loaded_iqr": lo.iqr,
            "quotient": statistics.median(quotients), "q_min": min(quotients), "q_max": max(quotients),
            "load_rate": statistics.median(load_rate)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048", help="comma-separated square sizes")
    ap.add_argument("--kernels", default="fused,lowmem,matmul", help=f"comma-separated, of {', '.join(KERNELS)}")
    ap.add_argument("--levels", type=int, default=1, help="Strassen-Winograd levels of the kernels")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--pairs", type=int, default=5, help="interleaved kernel/torch samples per phase")
    ap.add_argument("--rounds", type=int, default=2, help="quiet-then-loaded rounds per case")
    ap.add_argument("--bound", type=float, default=1.3, help="the loaded/quiet quotient a case must stay within")
    ap.add_argument("--load-threads", type=int, default=2, help="threads of the outside torch.mm loop")
    ap.add_argument("--load-size", type=int, default=1024, help="square size of the outside loop's products")
    ap.add_argument("--load-max-s", type=float, default=900.0, help="the load process ends by itself after this")
    ap.add_argument("--quiet-only", action="store_true",
                    help="no load: only the quiet ratios (does a change cost speed on a quiet machine?)")
    ap.add_argument("--no-watch", action="store_true",
                    help="fmmforge.matmul without its contention watch (always the kernel: as before issue 31)")
    ap.add_argument("--keep-home", action="store_true",
                    help="use $FMMFORGE_HOME as it is (default: a scratch one, for the matmul case's choice)")
    ap.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load_worker:
        return load_worker(args.load_threads, args.load_size, args.load_max_s)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(f"error: --sizes takes comma-separated whole numbers, not {args.sizes!r}", file=sys.stderr)
        return 2
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown or not kernels or not sizes or min(sizes) < 1 or args.pairs < 1 or args.rounds < 1:
        print(f"error: use --kernels of {', '.join(KERNELS)}, sizes >= 1, --pairs and --rounds >= 1", file=sys.stderr)
        return 2
    if not args.keep_home:
        os.environ["FMMFORGE_HOME"] = tempfile.mkdtemp(prefix="fmmforge-loaded-")

    import torch

    if args.no_watch:
        import fmmforge

        fmmforge.matmul.contention = None
    cases = make_cases(sizes, kernels, args.levels, args.dtype)
    print(f"{args.dtype}, torch threads {torch.get_num_threads()}, " + ("no load" if args.quiet_only else
          f"load: {args.load_threads}-thread torch.mm {args.load_size}x{args.load_size} loop in another process")
          + f"; {args.rounds} round(s) of {args.pairs} pairs")
    print(f"{'case':<38} {'quiet k/t':>9} {'(IQR)':>7}" + ("" if args.quiet_only else
          f" {'loaded k/t':>10} {'(IQR)':>7} {'loaded/quiet':>12} {'(min-max)':>13} {'load mm/s':>9}  <= {args.bound}"))
    if args.quiet_only:
        for case in cases:
            r = measure(case, None, args.rounds, args.pairs)
            print(f"{case.label:<38} {r['quiet']:9.3f} {r['quiet_iqr']:7.3f}", flush=True)
        return 0
    failed = 0
    with Load(args.load_threads, args.load_size, args.load_max_s) as load:
        for case in cases:
            r = measure(case, load, args.rounds, args.pairs)
            ok = r["quotient"] <= args.bound
            failed += not ok
            print(f"{case.label:<38} {r['quiet']:9.3f} {r['quiet_iqr']:7.3f} {r['loaded']:10.3f} "
                  f"{r['loaded_iqr']:7.3f} {r['quotient']:12.3f} {r['q_min']:6.3f}-{r['q_max']:<6.3f} "
                  f"{r['load_rate']:9.1f}  {'yes' if ok else 'NO'}", flush=True)
    print(f"{len(cases) - failed} of {len(cases)} cases within {args.bound}x of their quiet ratio when loaded")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
