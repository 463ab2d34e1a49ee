"""Measure generated kernels against the vendor matmul and record every measurement.

For each (algorithm, levels, size): the kernel is generated (validated, cached), checked at
that size against a float64 reference (max error beside every timing), then timed with the
baseline interleaved in the same run (fmmforge.hardware.timing) and recorded in the store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import Plan, ceiling, make_plan
from fmmforge.codegen.records import Record, add_record, query_records
from fmmforge.codegen.validate import KernelValidationError, error_bound
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import parse_shapes
from fmmforge.core.version import __version__
from fmmforge.hardware.devices import get_device, machine_key
from fmmforge.hardware.limits import ITEMSIZE, MAX_DIMENSION, MAX_LEVELS, check_int, check_memory
from fmmforge.hardware.memory import peak_extra_bytes
from fmmforge.hardware.timing import compare, pinned_threads

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
    rows = query_records(store, plan_key=plan.key(), device=plan.device, machine=machine_for(plan.device),
                         m=size[0], k=size[1], n=size[2], dtype=plan.dtype, fmmforge_version=__version__)
    return rows[-1] if rows else None


def _max_error(backend: CodegenBackend, device: str, A: Any, B: Any, C: Any) -> tuple[float, float, float]:
    """max|C - A·B| against a float64 product of the same (rounded) inputs, computed with torch
    on the kernel's device (MKL on the CPU, cuBLAS on a GPU); and max|A|, max|B|."""
    import torch

    dev = torch.device(device if device.startswith("cuda") else "cpu")
    A64 = torch.as_tensor(backend.to_numpy(A), device=dev).to(torch.float64)
    B64 = torch.as_tensor(backend.to_numpy(B), device=dev).to(torch.float64)
    ref = torch.mm(A64, B64)
    ref.sub_(torch.as_tensor(backend.to_numpy(C), device=dev).to(torch.float64))
    return float(ref.abs().max()), float(A64.abs().max()), float(B64.abs().max())


def _workspace_bytes(kernel) -> int | None:
    probe = getattr(kernel.module(), "workspace_bytes", None)
    return int(probe()) if probe is not None else None


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
    M, K, N = size
    rng = np.random.default_rng(seed)
    A64 = rng.uniform(-1, 1, (M, K))
    B64 = rng.uniform(-1, 1, (K, N))
    A = backend.to_native(A64, plan.dtype, plan.device)
    B = backend.to_native(B64, plan.dtype, plan.device)
    del A64, B64
    fn = kernel.matmul
    max_error = bound = None
    with pinned_threads(threads) as used_threads:
        if check_error:
            max_error, a_max, b_max = _max_error(backend, plan.device, A, B, fn(A, B))
            bound = error_bound(K, decomps, plan.dtype, a_max, b_max)
            if not max_error <= bound:

                raise KernelValidationError(f"kernel {plan.describe()} at {M}x{K}x{N}: max error {max_error:.3g} "
                                            f"> bound {bound:.3g}; not benchmarked")
        out_base = backend.out_baseline()
        base_fn = backend.baseline()
        C_base = base_fn(A, B)
        C_kern = fn(A, B)
        if out_base is not None:
            baseline: Callable[[], Any] = lambda: out_base(A, B, C_base)  # noqa: E731
            try:
                fn(A, B, out=C_kern)
                candidate: Callable[[], Any] = lambda: fn(A, B, out=C_kern)  # noqa: E731
            except TypeError:
                candidate = lambda: fn(A, B)  # noqa: E731
        else:
            baseline = lambda: base_fn(A, B)  # noqa: E731
            candidate = lambda: fn(A, B)  # noqa: E731
        peak = None
        if measure_memory:
            del C_kern
            clear = getattr(kernel.module(), "clear_workspaces", None)
            if clear is not None:
                clear()  # count the workspaces too: measure a call that has to allocate them
            peak = peak_extra_bytes(lambda: fn(A, B), plan.device)
            C_kern = fn(A, B)
        result = compare(candidate, baseline, device=plan.device, threads=None, pairs=pairs,
                         min_sample_s=min_sample_s, max_seconds=max_seconds)
    rec = Record(
        device=plan.device, machine=machine_for(plan.device), algorithm=(plan.algorithms[0] if len(set(plan.algorithms)) == 1 else "/".join(plan.algorithms)) if plan.algorithms else "vendor",
        fingerprint="/".join(plan.fingerprints), plan=json.dumps(plan.as_dict(), sort_keys=True),
        plan_key=plan.key(), backend=plan.backend, levels=plan.levels, m=M, k=K, n=N, dtype=plan.dtype,
        threads=used_threads, median_s=result.candidate.median, iqr_s=result.candidate.iqr,
        baseline_median_s=result.baseline.median, baseline_iqr_s=result.baseline.iqr,
        speedup=result.speedup, max_error=max_error, error_bound=bound, peak_extra_bytes=peak,
        workspace_bytes=_workspace_bytes(kernel),
    )
    if record:
        rid = add_record(rec, store)
        rec = Record(**{**rec.__dict__, "id": rid})
    return rec


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
              variant: str = "lowmem", memory_check: bool = True) -> list[BenchRow]:
    """Measure every (algorithm, levels) plan at every size; ``variant`` is the code layout
    (``"lowmem"`` or ``"batched"``, see :func:`fmmforge.codegen.plan.make_plan`).

    The largest size is checked against the device's available memory before anything runs
    (each measurement checks its own size again with its kernel's workspace)."""
    get_device(device)
    plans = []
    for name in algos:
        for L in levels:
            plans.append(make_plan(name, L, backend=backend.name, dtype=dtype, device=device, cutoff=cutoff,
                                   variant=variant))
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
