"""Measure generated kernels against the vendor matmul and record every measurement.

For each (algorithm, levels, size): the kernel is generated (validated, cached), checked at
that size against a float64 reference (max error beside every timing), then timed with the
baseline interleaved in the same run (fmmforge.hardware.timing) and recorded in the store.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import Plan, ceiling, make_plan
from fmmforge.codegen.records import Record, add_record, current_records
from fmmforge.codegen.validate import KernelValidationError, error_bound
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import parse_shapes
from fmmforge.core.version import __version__
from fmmforge.hardware.devices import get_device, machine_key
from fmmforge.hardware.limits import ITEMSIZE, MAX_DIMENSION, MAX_LEVELS, check_int, check_memory
from fmmforge.hardware.memory import peak_extra_bytes
from fmmforge.hardware.timing import Timing, compare, interleaved, pinned_threads

Size = tuple[int, int, int]


def parse_sizes(text: str) -> list[Size]:
    """``2048,4096`` (square) and ``8192x4096x8192`` (M×K×N) items, comma separated; every side
    between 1 and 2^31."""
    return parse_shapes(text, "size", MAX_DIMENSION)


def parse_algos(text: str) -> list[str]:
    """Comma-separated names, where the commas of a format (alphatensor:4,4,4) stay in the name."""
    out: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if token.isdigit() and out and re.search(r"[:,]\d+$", out[-1]):
            out[-1] += "," + token
        else:
            out.append(token)
    if not out:
        raise FmmforgeError("no algorithms given; write e.g. --algos strassen,laderman")
    repeated = sorted({name for name in out if out.count(name) > 1})
    if repeated:  # the same plan twice would be measured and recorded twice: refuse rather than guess
        raise FmmforgeError(f"--algos names {', '.join(repeated)} more than once; give each algorithm once")
    return out


def parse_levels(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FmmforgeError(f"cannot read levels {text!r}; write e.g. 1,2") from None
    if not vals:
        raise FmmforgeError("no levels given; write e.g. --levels 1,2")

    for v in vals:
        if v < 0:
            raise FmmforgeError(f"levels must be >= 0, not {v}")
        check_int(v, "levels", minimum=0, maximum=MAX_LEVELS)
    if len(set(vals)) != len(vals):
        raise FmmforgeError(f"--levels {text!r} repeats a level; give each level once")
    return vals


def run_bytes(size: Size, dtype: str, *, workspace_fraction: float = 0.0, check_error: bool = True) -> int:
    """Bytes one measurement holds at its peak: the inputs (float64 as drawn, then in ``dtype``),
    the kernel's and the baseline's C, the kernel's workspaces (a fraction of C's size), and the
    float64 copies of A, B and C and the reference product of the error check."""
    M, K, N = size
    operands, out = M * K + K * N, M * N
    item = ITEMSIZE[dtype]
    need = operands * (8 + item) + 2 * out * item + int(workspace_fraction * max(out, M * K, K * N) * item)
    if check_error:
        need += 8 * (operands + 2 * out)
    return need


def check_run_memory(size: Size, dtype: str, device: str, **kwargs: Any) -> None:
    """Refuse a size whose measurement cannot fit in the memory ``device`` has available now."""
    check_memory(run_bytes(size, dtype, **kwargs), f"a {size[0]}x{size[1]}x{size[2]} {dtype} run", device,
                 override="--ignore-memory")


def machine_for(device: str) -> str:

    dev = get_device(device)
    return machine_key() if dev.kind == "cpu" else dev.description


def cached_record(plan: Plan, size: Size, store=None) -> Record | None:
    """The latest measurement of this plan at this size on this device and machine, if any."""
    rows = current_records(store, plan_key=plan.key(), device=plan.device, machine=machine_for(plan.device),
                           m=size[0], k=size[1], n=size[2], dtype=plan.dtype, fmmforge_version=__version__)
    return rows[-1] if rows else None


class Reference:
    """A·B in float64 of the (rounded) inputs, computed once with torch on the kernels' device
    (MKL on the CPU, cuBLAS on a GPU), and max|A|, max|B| for the error bounds: every kernel
    measured on these inputs is checked against it."""

    def __init__(self, backend: CodegenBackend, device: str, A: Any, B: Any) -> None:
        import torch

        self.backend = backend
        self.device = torch.device(device if device.startswith("cuda") else "cpu")
        A64 = torch.as_tensor(backend.to_numpy(A), device=self.device).to(torch.float64)
        B64 = torch.as_tensor(backend.to_numpy(B), device=self.device).to(torch.float64)
        self.a_max, self.b_max = float(A64.abs().max()), float(B64.abs().max())
        self.shape = (A64.shape[0], A64.shape[1], B64.shape[1])
        self.product = torch.mm(A64, B64)

    def error(self, C: Any) -> float:
        """max|C - A·B|."""
        import torch

        diff = torch.as_tensor(self.backend.to_numpy(C), device=self.device).to(torch.float64)
        diff.sub_(self.product)
        return float(diff.abs().max())

    def check(self, plan: Plan, decomps: list[Decomposition], C: Any) -> tuple[float, float]:
        """(max error, bound) of a kernel's output ``C``; KernelValidationError above the bound."""
        M, K, N = self.shape
        max_error = self.error(C)
        bound = error_bound(K, decomps, plan.dtype, self.a_max, self.b_max)
        if not max_error <= bound:
            raise KernelValidationError(f"kernel {plan.describe()} at {M}x{K}x{N}: max error {max_error:.3g} "
                                        f"> bound {bound:.3g}; not benchmarked")
        return max_error, bound


def _workspace_bytes(kernel) -> int | None:
    probe = getattr(kernel.module(), "workspace_bytes", None)
    return int(probe()) if probe is not None else None


def _inputs(size: Size, dtype: str, device: str, backend: CodegenBackend, seed: int) -> tuple[Any, Any]:
    M, K, N = size
    rng = np.random.default_rng(seed)
    A64 = rng.uniform(-1, 1, (M, K))
    B64 = rng.uniform(-1, 1, (K, N))
    return backend.to_native(A64, dtype, device), backend.to_native(B64, dtype, device)


def _vendor_call(backend: CodegenBackend, A: Any, B: Any) -> tuple[Callable[[], Any], bool]:
    """The vendor matmul as a timed call, and whether it writes into a preallocated output (then
    the kernels are timed writing into theirs too)."""
    out_base = backend.out_baseline()
    base_fn = backend.baseline()
    if out_base is None:
        return (lambda: base_fn(A, B)), False
    C = base_fn(A, B)
    return (lambda: out_base(A, B, C)), True


def _kernel_call(fn: Callable, A: Any, B: Any, C: Any, into: bool) -> Callable[[], Any]:
    """The kernel as a timed call: into ``C`` (an output it returned) when ``into`` and it takes
    out=, else allocating its output."""
    if into:
        try:
            fn(A, B, out=C)
        except TypeError:
            pass
        else:
            return lambda: fn(A, B, out=C)
    return lambda: fn(A, B)


def _record(plan: Plan, size: Size, threads: int, cand: Timing, base: Timing, max_error: float | None,
            bound: float | None, peak: int | None, kernel, store, record: bool,
            speedup: float | None = None) -> Record:
    M, K, N = size
    algorithm = (plan.algorithms[0] if len(set(plan.algorithms)) == 1 else "/".join(plan.algorithms)) \
        if plan.algorithms else "vendor"
    rec = Record(
        device=plan.device, machine=machine_for(plan.device), algorithm=algorithm,
        fingerprint="/".join(plan.fingerprints), plan=json.dumps(plan.as_dict(), sort_keys=True),
        plan_key=plan.key(), backend=plan.backend, levels=plan.levels, m=M, k=K, n=N, dtype=plan.dtype,
        threads=threads, median_s=cand.median, iqr_s=cand.iqr,
        baseline_median_s=base.median, baseline_iqr_s=base.iqr,
        speedup=speedup if speedup is not None else base.median / cand.median, max_error=max_error,
        error_bound=bound, peak_extra_bytes=peak,
        workspace_bytes=_workspace_bytes(kernel),
    )
    if record:
        rid = add_record(rec, store)
        rec = Record(**{**rec.__dict__, "id": rid})
    return rec


def measure(plan: Plan, decomps: list[Decomposition], size: Size, *, backend: CodegenBackend,
            threads: int | None = None,
            pairs: int = 5, min_sample_s: float = 0.05, max_seconds: float | None = None,
            measure_memory: bool = False, store=None, record: bool = True, seed: int = 0,
            check_error: bool = True, memory_check: bool = True) -> Record:
    """Generate (validated, with ``backend``: the plan's), check at ``size``, time against the vendor
    matmul, record.

    Before anything of ``size`` is allocated, the memory the run needs is checked against what
    the device has available (``memory_check=False`` skips that)."""
    get_device(plan.device)
    kernel = generate(plan, decomps, backend=backend)
    if not kernel.validation:  # generate validates or raises; an unvalidated kernel is never timed
        raise FmmforgeError(f"kernel {plan.describe()} is not validated; it is not benchmarked or recorded")
    if memory_check:
        check_run_memory(size, plan.dtype, plan.device, check_error=check_error,
                         workspace_fraction=float(kernel.facts.get("workspace_fraction_square", 0.0)))
    A, B = _inputs(size, plan.dtype, plan.device, backend, seed)
    fn = kernel.matmul
    max_error = bound = None
    with pinned_threads(threads) as used_threads:
        C = fn(A, B)
        if check_error:
            max_error, bound = Reference(backend, plan.device, A, B).check(plan, decomps, C)
        baseline, into = _vendor_call(backend, A, B)
        candidate = _kernel_call(fn, A, B, C, into)
        peak = None
        if measure_memory:
            clear = getattr(kernel.module(), "clear_workspaces", None)
            if clear is not None:
                clear()  # count the workspaces too: measure a call that has to allocate them
            peak = peak_extra_bytes(lambda: fn(A, B), plan.device)
        result = compare(candidate, baseline, device=plan.device, threads=None, pairs=pairs,
                         min_sample_s=min_sample_s, max_seconds=max_seconds)
    return _record(plan, size, used_threads, result.candidate, result.baseline, max_error, bound, peak, kernel,
                   store, record)


def measure_many(items: Sequence[tuple[Plan, list[Decomposition]]], size: Size, *, backend: CodegenBackend,
                 threads: int | None = None, rounds: int = 5, min_sample_s: float = 0.05, store=None,
                 record: bool = True, seed: int = 0, memory_check: bool = True,
                 on_error: Callable[[Plan, FmmforgeError], None] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[Record | None]:
    """Several plans of one device and dtype measured in one run at ``size``: the inputs and their
    float64 product are made once, every kernel is checked against it, then all the kernels and
    the vendor matmul are timed round-robin (hardware.timing.interleaved, ``rounds`` samples each),
    so every candidate shares one baseline and the candidates are compared with each other under
    the same load. Each is recorded as :func:`measure` records it, its speed-up the median over
    the rounds of the vendor's time over its own in that round (a round's two samples share the
    machine's state, so a slowdown that lasts a round cancels; against one shared vendor run, the
    ratio of two medians carries that run's own noise into every plan's speed-up alike).

    A plan that fails (generation, validation, the check at ``size``) is None in the result, with
    ``on_error`` told why (without it the error propagates). The memory check counts every
    kernel's output and workspaces. An interrupt while timing records nothing of that run."""
    plans = [p for p, _ in items]
    if not plans:
        return []
    if len({(p.device, p.dtype) for p in plans}) != 1:
        raise FmmforgeError("measure_many measures plans of one device and dtype at a time")
    device, dtype = plans[0].device, plans[0].dtype
    get_device(device)
    say = progress or (lambda text: None)

    def failed(plan: Plan, exc: FmmforgeError) -> None:
        if on_error is None:
            raise exc
        on_error(plan, exc)

    kernels: list[Any] = []
    for plan, decomps in items:
        say(f"generating {plan.describe()}")
        try:
            kernel = generate(plan, decomps, backend=backend)
            if not kernel.validation:
                raise FmmforgeError(f"kernel {plan.describe()} is not validated; it is not benchmarked or recorded")
            kernels.append(kernel)
        except FmmforgeError as exc:
            failed(plan, exc)
            kernels.append(None)
    live = [i for i, k in enumerate(kernels) if k is not None]
    if memory_check and live:
        fraction = sum(float(kernels[i].facts.get("workspace_fraction_square", 0.0)) for i in live)
        M, K, N = size
        extra = (len(live) - 1) * M * N * ITEMSIZE[dtype]  # one output per kernel
        check_memory(run_bytes(size, dtype, workspace_fraction=fraction) + extra,
                     f"a {M}x{K}x{N} {dtype} run of {len(live)} kernels", device, override="--ignore-memory")
    A, B = _inputs(size, dtype, device, backend, seed)
    checks: dict[int, tuple[float, float]] = {}
    outputs: dict[int, Any] = {}
    with pinned_threads(threads) as used_threads:
        if live:
            say("computing the float64 reference product")
            ref = Reference(backend, device, A, B)
            for i in live:
                plan, decomps = items[i]
                say(f"checking {plan.describe()} against it")
                outputs[i] = kernels[i].matmul(A, B)
                try:
                    checks[i] = ref.check(plan, decomps, outputs[i])
                except FmmforgeError as exc:
                    del outputs[i]
                    failed(plan, exc)
            del ref
        timed = [i for i in live if i in checks]
        if not timed:
            return [None] * len(items)
        vendor, into = _vendor_call(backend, A, B)
        fns = {f"k{i}": _kernel_call(kernels[i].matmul, A, B, outputs[i], into) for i in timed}
        fns["vendor"] = vendor
        say(f"timing {len(timed)} kernel(s) and the vendor matmul round-robin, {rounds} rounds")
        # warm already: each kernel ran for its check and once into its output, the vendor once
        samples = interleaved(fns, device=device, threads=None, warmup=0, rounds=rounds, min_sample_s=min_sample_s)
    base = Timing.of(samples["vendor"])
    out: list[Record | None] = [None] * len(items)
    for i in timed:
        plan, _ = items[i]
        ratios = [b / c for b, c in zip(samples["vendor"], samples[f"k{i}"])]
        out[i] = _record(plan, size, used_threads, Timing.of(samples[f"k{i}"]), base, *checks[i], None, kernels[i],
                         store, record, speedup=statistics.median(ratios))
    return out


@dataclass(frozen=True)
class BenchRow:
    record: Record
    ceiling: float

    @property
    def efficiency(self) -> float:
        return self.record.speedup / self.ceiling if self.ceiling else float("nan")


def run_bench(algos: list[str], levels: list[int], sizes: list[Size], *, backend: CodegenBackend,
              device: str = "cpu", dtype: str = "float32", cutoff: int = 64, threads: int | None = None,
              pairs: int = 5, measure_memory: bool = False, on_row: Callable[[BenchRow], None] | None = None,
              on_error: Callable[[str], None] | None = None, min_sample_s: float = 0.05,
              variant: str = "lowmem", memory_check: bool = True, remainder: str = "peel") -> list[BenchRow]:
    """Measure every (algorithm, levels) plan at every size; ``variant`` is the code layout
    (``"lowmem"``, ``"batched"`` or ``"fused"``) and ``remainder`` what a size that does not divide
    gets (``"peel"``, ``"pad"`` or ``"split"``), see :func:`fmmforge.codegen.plan.make_plan`.

    The largest size is checked against the device's available memory before anything runs
    (each measurement checks its own size again with its kernel's workspace)."""
    get_device(device)
    plans = []
    for name in algos:
        for L in levels:
            plans.append(make_plan(name, L, backend=backend.name, dtype=dtype, device=device, cutoff=cutoff,
                                   variant=variant, remainder=remainder))
    if memory_check:
        check_run_memory(max(sizes, key=lambda s: run_bytes(s, dtype)), dtype, device)
    rows = []
    for size in sizes:
        for plan, decomps in plans:
            try:
                rec = measure(plan, decomps, size, backend=backend, threads=threads, pairs=pairs,
                              measure_memory=measure_memory, min_sample_s=min_sample_s, memory_check=memory_check)
            except FmmforgeError as exc:
                if on_error is None:
                    raise
                on_error(str(exc))
                continue
            row = BenchRow(rec, ceiling(decomps))
            rows.append(row)
            if on_row:
                on_row(row)
    return rows
