"""`fmmforge calibrate`'s work: gather the records a cost model may learn from, measure what is
missing (benchmark records with plans picked here, vendor-gemm timings at the records' leaf
shapes and at the grid shapes around them) within a time budget, fit, evaluate on held-out records and store the model.

Every measurement is stored as soon as it is taken (records through codegen.bench.measure, gemm
timings one by one), so an interrupted calibration keeps all of them. Progress goes to the
``progress`` callback (the command draws the bar); nothing here prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterable, Sequence

import numpy as np

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.costmodel import (
    FITTED_VARIANTS, LEAF_LAYOUT, CalibratedModel, Features, GemmTable, ModelKey, Shape, cache_bytes, features, fit, leaf_shapes,
    load_gemm_points, save_gemm_point, save_model, union_corners,
)
from fmmforge.codegen.generate import EMITTER_REVISION
from fmmforge.codegen.plan import DEFAULT_VARIANT, REMAINDERS, make_plan
from fmmforge.codegen.records import Record, query_records
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store

MIN_RECORDS = 10  # fewer records than this cannot both fit 4 parameters and check them held-out
# Records at fewer sizes than this cannot separate the gemm time from the passes and the per-call
# cost (they grow differently with the size): a store holding only a tune's 14 records at 8192 fitted
# gemm_scale 0 and 1.94 s per call, which "predicted" its own held-out records within 0.73 %
# (benchmarks/calibrate.py on a tune's home, 2026-12-07). Calibrate then measures its own plans.
MIN_SIZES = 3
DEFAULT_BUDGET_S = 240.0
# The plans calibrate measures when the store has too few records: the vendor gemm and the
# built-in schemes at one and two levels, a <3,3,3> (which peels where 3 does not divide) and a
# <4,4,4;49> level (49 leaves, 303 passes), low-memory, and four of them fused (codegen.fused:
# their compiled passes have their own cost per byte; the <4,4,4> level, the Strassen-square of
# issue 12, forms its sums by the compiled pass, Strassen-Winograd's by torch passes, whose cost
# inside a fused kernel is its own too), at square and non-square sizes (small ones
# first): plans of the kinds the tuner ranks, whose times at one size differ enough to be ranked.
CALIBRATION_PLANS = (("strassen", 0, "lowmem"), ("strassen", 1, "lowmem"), ("strassen-winograd", 1, "lowmem"),
                     ("strassen", 2, "lowmem"), ("strassen-winograd", 2, "lowmem"), ("laderman", 1, "lowmem"),
                     ("strassen*strassen", 1, "lowmem"), ("strassen-winograd", 1, "fused"),
                     ("strassen-winograd", 2, "fused"), ("laderman", 1, "fused"), ("strassen*strassen", 1, "fused"))
CALIBRATION_SIZES: tuple[Shape, ...] = ((512, 512, 512), (768, 768, 768), (1024, 1024, 1024), (1024, 2048, 768),
                                        (1536, 1536, 1536), (2048, 1024, 1536), (2048, 2048, 2048))
# A record whose samples spread (interquartile range, kernel or baseline) over more than this
# share of their median was taken while other work held the CPUs: calibrate measures it once
# more, and the fit combines the steady measurements of one plan at one size (:func:`combined`).
NOISY_SPREAD = 0.2
# Rounds of a size's run: its plans share one vendor run, whose median's own noise moves every
# record of the size alike, so it needs more samples than one comparison would. (On a busy host,
# 2026-12-03, the same ten plans at 1536³ measured twice differed by a median 8.6 % at 9 rounds
# and 5.7 % at 25: more rounds help, slowly; 15 keeps a calibration from nothing near 4 minutes.)
RECORD_ROUNDS = 15
# When calibrate measures this size, it measures all its plans once more at the end (time
# permitting): how far two readings of one plan disagree is the floor under any model's
# held-out error on this machine now (Quality.repeat_pct), measured rather than guessed.
REPEAT_SIZE: Shape = (1536, 1536, 1536)
GEMM_SHARE = 0.3  # of the budget kept for the vendor-gemm timings when records are measured too
# Every gemm timing is taken interleaved with this reference gemm and stored as its time ratio
# times the reference's own time: a shared machine's load then scales the whole table alike,
# as the records' interleaved baselines do, instead of skewing the leaves one point at a time.
REFERENCE_GEMM: Shape = (512, 512, 512)
# A leaf-layout point below this share of the contiguous gemm's time at its shape was disturbed
# (the blocks of a larger product run 1.04-1.28x slower than a contiguous product, never much
# faster): it is measured again and the slower reading kept. One 2048³ point once read 510
# GFLOP/s on a 330 GFLOP/s machine, and the tuner predicted 2.9x at 8192 from it.
LEAF_FLOOR = 0.9

# progress(phase, done, total, label): phase is "records" or "gemm"
Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class Usable:
    """A record the model can learn from, with the decompositions of its plan."""

    record: Record
    decomps: tuple[Decomposition, ...]
    cutoff: int
    variant: str = "lowmem"
    remainder: str = "peel"

    @property
    def shape(self) -> Shape:
        return self.record.m, self.record.k, self.record.n


@dataclass(frozen=True)
class Calibration:
    model: CalibratedModel
    measured_records: int
    measured_gemms: int
    skipped: int  # records of this device that the model cannot describe (other backend/variant, unknown scheme)


def plan_schemes(record: Record, store: Store, cache: dict) -> tuple[tuple[Decomposition, ...], int, str, str] | None:
    """(the plan's schemes, cutoff, variant, remainder), each scheme resolved by name (or fingerprint prefix)
    and matching the recorded fingerprint; None when the record is not of a torch plan in a
    variant the model is fitted to (codegen.costmodel.FITTED_VARIANTS)."""
    from fmmforge.core.catalogue import resolve

    try:
        plan = json.loads(record.plan)
        names, fps = list(plan["algorithms"]), list(plan["fingerprints"])
        cutoff = int(plan["cutoff"])
    except (ValueError, TypeError, KeyError):
        return None
    variant, remainder = plan.get("variant", DEFAULT_VARIANT), plan.get("remainder", "peel")
    if variant not in FITTED_VARIANTS or remainder not in REMAINDERS or record.backend != "torch" or len(names) != len(fps):
        return None
    out = []
    for name, fp in zip(names, fps):
        if (name, fp) not in cache:
            found = None
            for label in (str(name), str(fp)[:16], str(name).removeprefix("fp:")):
                try:
                    d = resolve(label, store)
                except FmmforgeError:
                    continue
                if d.fingerprint == fp and d.format is not None:
                    found = d
                    break
            cache[(name, fp)] = found
        if cache[(name, fp)] is None:
            return None
        out.append(cache[(name, fp)])
    return tuple(out), cutoff, variant, remainder


def usable_records(key: ModelKey, store: Store) -> tuple[list[Usable], int]:
    """Records of ``key``'s device, machine, threads and dtype that describe a plan the model knows,
    of kernels the current emitter writes; and how many of that device's records were left out."""
    rows = query_records(store, device=key.device, machine=key.machine, dtype=key.dtype)
    cache: dict = {}
    out, skipped = [], 0
    for r in rows:
        got = plan_schemes(r, store, cache) if r.threads == key.threads and r.emitter == EMITTER_REVISION else None
        if got is None:
            skipped += 1
            continue
        out.append(Usable(r, *got))
    return out, skipped


def spread(record: Record) -> float:
    """The larger relative interquartile range of a record's two sides (kernel, vendor baseline)."""
    return max(record.iqr_s / record.median_s, record.baseline_iqr_s / record.baseline_median_s)


def _readings(usable: Sequence[Usable]) -> list[list[Usable]]:
    """The records grouped by (plan, size), each group in the order taken."""
    groups: dict[tuple[str, Shape], list[Usable]] = {}
    for u in usable:
        groups.setdefault((u.record.plan_key, u.shape), []).append(u)
    return list(groups.values())


def combined(usable: Sequence[Usable]) -> list[Usable]:
    """One record per (plan, size): of its readings, those whose :func:`spread` is at most
    :data:`NOISY_SPREAD` (or, when none is, the one with the smallest spread), their speed-ups
    combined by the geometric mean (first reading's other fields). Two steady readings of a
    plan are a better estimate of its time than either (on 2026-12-03's busy host the same 70
    records fitted to 6.10 % held-out error combined, 7.16 % taking the steadier reading)."""
    out = []
    for group in _readings(usable):
        steady = [u for u in group if spread(u.record) <= NOISY_SPREAD] or [min(group, key=lambda u: spread(u.record))]
        speedup = float(np.exp(np.mean([np.log(u.record.speedup) for u in steady])))
        out.append(replace(steady[0], record=replace(steady[0].record, speedup=speedup)))
    return out


def repeatability(usable: Sequence[Usable]) -> tuple[float | None, int]:
    """How far records repeat: the median, over every plan and size measured more than once, of
    how far apart two successive readings' speed-ups are (the larger over the smaller - 1), in
    percent (None when nothing was measured twice); and how many such pairs there are. (Retakes
    of noisy records count too, so on a busy machine the floor reads a little high.)"""
    diffs = [(max(a.record.speedup, b.record.speedup) / min(a.record.speedup, b.record.speedup) - 1) * 100
             for group in _readings(usable) for a, b in zip(group, group[1:])]
    return (float(np.median(diffs)) if diffs else None), len(diffs)


CalibrationPlan = tuple[str, int, str]  # (scheme, levels, variant): an entry of CALIBRATION_PLANS
# What a run of measure_many costs before it starts (:func:`run_cost_s`): the kernels generated (a
# low-memory one in about 0.2 s, a fused one compiled by numba in 2-3.5 s: this machine, 2026-12-08),
# the inputs and the float64 reference (a fixed part and about 4 vendor times), every kernel checked
# against it and run once into its output (2 kernel times each, a kernel's time taken as the
# vendor's), then RECORD_ROUNDS rounds of every kernel and the vendor, each sample repeated to
# at least MIN_SAMPLE_S. What the runs really take rescales the estimates as calibrate goes.
GENERATE_S = {"lowmem": 0.3, "fused": 3.0}
RUN_OVERHEAD_S = 1.0
MIN_SAMPLE_S = 0.05
NOMINAL_FLOPS = 50e9  # a vendor gemm's rate when no gemm timing is stored yet (a slow CPU's)
# The plan fills the time left over this, so that runs slower than their estimates (a busy machine,
# the first kernels' imports) still leave the sizes the fit needs their time; what the records do
# not use goes to the gemm timings.
PLAN_MARGIN = 1.3


def run_cost_s(plans: Sequence[CalibrationPlan], vendor_s: float, rounds: int = RECORD_ROUNDS) -> float:
    """Estimated seconds of one measure_many run of ``plans`` at a size where the vendor gemm
    takes ``vendor_s`` (the constants above say what goes into it)."""
    if not plans:
        return 0.0
    generate = sum(GENERATE_S.get(variant, max(GENERATE_S.values())) for _, _, variant in plans)
    checks = (4 + 2 * len(plans)) * vendor_s
    return RUN_OVERHEAD_S + generate + checks + rounds * (len(plans) + 1) * max(vendor_s, MIN_SAMPLE_S)


@dataclass(frozen=True)
class Run:
    """One planned run: the plans measured together at a size, and its estimated seconds."""

    size: Shape
    plans: tuple[CalibrationPlan, ...]
    cost_s: float


def plan_runs(missing: Sequence[tuple[Shape, Sequence[CalibrationPlan]]], vendor_s: Callable[[Shape], float],
              budget_s: float, have_sizes: Collection[Shape] = (), have_records: int = 0, *,
              least: bool = False) -> list[Run]:
    """The runs calibrate makes within ``budget_s`` (estimated by :func:`run_cost_s`): ``missing`` is
    each size with the plans not yet recorded there, in the order of :data:`CALIBRATION_SIZES` and
    :data:`CALIBRATION_PLANS` (cheapest first). First what the fit needs: the first plans at enough
    new sizes that, with the ``have_sizes`` sizes and ``have_records`` records already usable, there
    are :data:`MIN_SIZES` sizes and :data:`MIN_RECORDS` records; then, while the estimate stays
    within the budget, each further plan at the chosen sizes, then further sizes (``least``: only
    the first part). One run per size (its plans compared under the same load). Empty when even
    the first part would pass the budget."""
    chosen: dict[Shape, list[CalibrationPlan]] = {}
    sizes_needed = max(0, MIN_SIZES - len(set(have_sizes)))
    records_needed = max(0, MIN_RECORDS - have_records)
    if sizes_needed or records_needed:
        fresh = [(size, list(plans)) for size, plans in missing if plans and size not in have_sizes]
        new_sizes = fresh[:sizes_needed] if sizes_needed else fresh[:1]
        per = max(2, -(-records_needed // max(1, len(new_sizes))))
        for size, plans in new_sizes:
            chosen[size] = plans[:per]
        if sum(len(p) for p in chosen.values()) < records_needed:  # sizes with few missing plans: more sizes
            for size, plans in fresh[len(new_sizes):]:
                if sum(len(p) for p in chosen.values()) >= records_needed:
                    break
                chosen[size] = plans[:per]

    def total(plan: dict[Shape, list[CalibrationPlan]]) -> float:
        return sum(run_cost_s(p, vendor_s(s)) for s, p in plan.items())

    if total(chosen) > budget_s:
        return []
    if least:
        return [Run(size, tuple(plans), run_cost_s(plans, vendor_s(size))) for size, plans in chosen.items()]
    # the rest: a plan at a time across the sizes chosen, then the other sizes in order
    width = max((len(plans) for _, plans in missing), default=0)
    offers = [(size, plans[i]) for i in range(width) for size, plans in missing if size in chosen and i < len(plans)]
    offers += [(size, plan) for size, plans in missing if size not in chosen for plan in plans]
    for size, plan in offers:
        if plan not in chosen.get(size, []):
            trial = {**chosen, size: [*chosen.get(size, []), plan]}
            if total(trial) <= budget_s:
                chosen = trial
    rank = {size: list(plans) for size, plans in missing}
    return [Run(size, tuple(sorted(chosen[size], key=rank[size].index)), run_cost_s(chosen[size], vendor_s(size)))
            for size in rank if size in chosen]


def _missing(key: ModelKey, have: Sequence[Usable]) -> tuple[list[tuple[Shape, list[CalibrationPlan]]], dict]:
    """Each calibration size with the calibration plans not yet recorded there (both in their
    order), and the plans made: entry -> (Plan, decompositions)."""
    done_keys = {(u.record.plan_key, u.shape) for u in have}
    made = {}
    for entry in CALIBRATION_PLANS:
        name, levels, variant = entry
        if variant != DEFAULT_VARIANT and key.device != "cpu":
            continue  # the fused kernels are CPU torch kernels
        made[entry] = make_plan(name, levels, backend="torch", dtype=key.dtype, device=key.device, variant=variant)
    missing = [(size, [e for e, (plan, _) in made.items() if (plan.key(), size) not in done_keys])
               for size in CALIBRATION_SIZES]
    return missing, made


def _vendor_estimate(key: ModelKey, store: Store, deadline: float, progress: Progress | None) -> Callable[[Shape], float]:
    """The vendor gemm's seconds at a size, for estimating runs: from the stored gemm timings,
    the reference gemm timed first when none is stored and the deadline is finite (it is the
    first point the gemm table needs anyway); at :data:`NOMINAL_FLOPS` without any."""
    import math

    points = load_gemm_points(key, store)
    if not points and math.isfinite(deadline):
        _measure_gemms(key, {REFERENCE_GEMM}, points, deadline, store, progress)
    table = GemmTable(points) if points else None
    return lambda size: table.seconds(size) if table is not None else 2.0 * math.prod(size) / NOMINAL_FLOPS


RETAKE = " again (their samples spread)"
REPEAT = " again (to see how far records repeat)"


def _measure_records(key: ModelKey, have: list[Usable], deadline: float, backend: CodegenBackend,
                     store: Store, progress: Progress | None) -> int:
    """Measure the calibration plans at the calibration sizes not yet recorded, as planned by
    :func:`plan_runs` to end by ``deadline``: every plan of one size in one run
    (codegen.bench.measure_many: one reference, one vendor run, all timed round-robin), so the
    plans of a size, which the model must rank, are compared under the same load. Before each
    run its cost is estimated again (:func:`run_cost_s`, rescaled by what the runs so far took
    against their estimates); its plans beyond what the fit needs are dropped, last first, while
    it would leave too little for the sizes still needed, and a run that would pass the deadline
    is not started. After the planned runs, plans whose samples spread are measured once more,
    together; and when :data:`REPEAT_SIZE` was measured, all its plans again at the end, to read
    :func:`repeatability` from. A budget too small for what the fit needs is one FmmforgeError
    before anything is measured."""
    from fmmforge.codegen.bench import measure_many

    missing, made = _missing(key, have)
    vendor_s = _vendor_estimate(key, store, deadline, progress)
    have_sizes = {u.shape for u in have}
    runs = plan_runs(missing, vendor_s, (deadline - time.monotonic()) / PLAN_MARGIN, have_sizes, len(have))
    fewest = plan_runs(missing, vendor_s, float("inf"), have_sizes, len(have), least=True)  # what the fit needs
    if not runs and any(plans for _, plans in missing) and not _enough(have):
        need = sum(r.cost_s for r in fewest)
        raise FmmforgeError(f"calibrate needs records at {MIN_SIZES} sizes or more on {key.describe()}: measuring the "
                            f"fewest that will do takes about {need:.0f} s, more than the budget leaves for them; give "
                            f"--budget {need * PLAN_MARGIN / (1 - GEMM_SHARE) + 1:.0f}s or more, or run `fmmforge bench` at "
                            f"{MIN_SIZES} sizes first")
    least = {run.size: run.plans for run in fewest}
    # the planned runs first, then the noisy plans of each measured again, then the repeat run:
    # a retake never takes the time a size the fit needs was planned in
    planned: list[tuple[Shape, tuple[CalibrationPlan, ...], str]] = [(run.size, run.plans, "") for run in runs]
    later: list[tuple[Shape, tuple[CalibrationPlan, ...], str]] = []
    repeat = next((run.plans for run in runs if run.size == REPEAT_SIZE), ())
    taken, spent, estimated, done = 0, 0.0, 0.0, 0
    while planned or later:
        size, entries, why = planned.pop(0) if planned else later.pop(0)
        scale = spent / estimated if estimated else 1.0
        left = deadline - time.monotonic()
        # what the sizes the fit still needs will take, as the runs so far went against their estimates
        reserve = sum(run_cost_s(least[s], vendor_s(s)) * scale for s, _, _ in planned if s in least)
        while len(entries) > len(least.get(size, ())) and run_cost_s(entries, vendor_s(size)) * scale > left - reserve:
            entries = entries[:-1]  # the plans beyond the fit's need, last first, until the run fits
        cost = run_cost_s(entries, vendor_s(size)) * scale
        label = f"{len(entries)} plan(s) at {'x'.join(map(str, size))}{why}"
        total = done + len(planned) + len(later) + 1
        done += 1
        if cost > left:
            if progress:
                progress("records", done - 1, total, f"{label}: not started (about {cost:.0f} s, {max(left, 0):.0f} s left)")
            continue
        if progress:
            progress("records", done - 1, total, f"{label} (about {cost:.0f} s)")
        say = (lambda text, d=done - 1, t=total, label=label: progress("records", d, t, f"{label}: {text}")) if progress else None
        t0 = time.monotonic()
        records = measure_many([made[e] for e in entries], size, backend=backend, threads=key.threads,
                               rounds=RECORD_ROUNDS, min_sample_s=MIN_SAMPLE_S, store=store, progress=say)
        spent += time.monotonic() - t0
        estimated += run_cost_s(entries, vendor_s(size))
        taken += sum(r is not None for r in records)
        noisy = tuple(e for e, r in zip(entries, records) if r is not None and spread(r) > NOISY_SPREAD)
        if noisy and not why:
            later.insert(sum(w == RETAKE for _, _, w in later), (size, noisy, RETAKE))
        if size == REPEAT_SIZE and not why and repeat:
            later.append((REPEAT_SIZE, repeat, REPEAT))
    if progress:
        progress("records", done, done, "done")
    return taken


def _gemm_call(key: ModelKey, shape: Shape, layout: str = "contiguous") -> tuple[Callable[[], object], int]:
    """(call, products it runs) of the vendor gemm at ``shape`` on ``key``'s device: torch.mm of
    random operands into a preallocated C (``contiguous``), or, for ``leaf``, every block product
    C_ij += A_ik·B_kj of a LEAF_LAYOUT-fold larger product, on views of the parents as a level of
    a kernel takes them (codegen.costmodel, the leaf table)."""
    import torch

    dev = torch.device(key.device if key.device.startswith("cuda") else "cpu")
    dt = getattr(torch, key.dtype)
    M, K, N = shape
    if layout == "contiguous":
        A = torch.rand(M, K, dtype=dt, device=dev)
        B = torch.rand(K, N, dtype=dt, device=dev)
        C = torch.empty(M, N, dtype=dt, device=dev)
        return (lambda: torch.mm(A, B, out=C)), 1
    q = LEAF_LAYOUT
    PA = torch.rand(q * M, q * K, dtype=dt, device=dev)
    PB = torch.rand(q * K, q * N, dtype=dt, device=dev)
    PC = torch.zeros(q * M, q * N, dtype=dt, device=dev)
    blocks = [(PA[i * M:(i + 1) * M, k * K:(k + 1) * K], PB[k * K:(k + 1) * K, j * N:(j + 1) * N],
               PC[i * M:(i + 1) * M, j * N:(j + 1) * N]) for i in range(q) for j in range(q) for k in range(q)]

    def products() -> None:
        for a, b, c in blocks:
            torch.addmm(c, a, b, out=c)

    return products, len(blocks)


def measure_gemm(key: ModelKey, shape: Shape, reference: tuple[Shape, float] | None = None,
                 layout: str = "contiguous") -> float:
    """Seconds of one vendor gemm at ``shape`` in ``layout`` on ``key``'s device: its median
    alone, or, given a ``reference`` (shape, seconds of the contiguous gemm there), the median
    over interleaved pairs of its time over the reference's, times the reference's seconds."""
    import statistics

    from fmmforge.hardware.timing import compare, time_one

    fn, products = _gemm_call(key, shape, layout)
    if reference is None:
        t = time_one(fn, device=key.device, threads=key.threads, warmup=2, samples=9, min_sample_s=0.02).median
        return t / products
    ref_shape, ref_s = reference
    timing = compare(fn, _gemm_call(key, ref_shape)[0], device=key.device, threads=key.threads, pairs=7,
                     min_sample_s=0.02)
    ratios = [c / b for c, b in zip(timing.candidate.samples, timing.baseline.samples)]
    return statistics.median(ratios) * ref_s / products


def gemm_cost_s(shape: Shape, layout: str, table: GemmTable) -> float:
    """Estimated seconds of one :func:`measure_gemm` at ``shape``: about 9 samples each (warm-up
    and 7 interleaved pairs) of the gemm (its LEAF_LAYOUT³ block products for ``leaf``) and of the
    reference, each at least 0.02 s; the times read from ``table`` (0 while it is empty)."""
    if not table.points:
        return 0.0
    call = table.seconds(shape) * (LEAF_LAYOUT ** 3 if layout == "leaf" else 1)
    return 9 * (max(call, 0.02) + max(table.seconds(REFERENCE_GEMM), 0.02))


def _measure_gemms(key: ModelKey, needed: set[Shape], have: dict[Shape, float], deadline: float,
                   store: Store, progress: Progress | None, layout: str = "contiguous",
                   reference_s: float | None = None, floor: GemmTable | None = None) -> int:
    """Time the vendor gemm at the shapes in ``layout`` still missing (cheapest first), until
    ``deadline``: each interleaved with the contiguous reference gemm (timed alone first when
    ``reference_s`` is not given: the contiguous table's own reference point). A point below
    :data:`LEAF_FLOOR` times ``floor`` (the contiguous table) is measured once more, the slower
    reading kept."""
    from math import prod

    todo = sorted(needed - set(have), key=prod)
    if layout == "contiguous" and todo and REFERENCE_GEMM not in have:
        todo = [REFERENCE_GEMM] + [s for s in todo if s != REFERENCE_GEMM]
    taken = 0
    for i, shape in enumerate(todo):
        if time.monotonic() + gemm_cost_s(shape, layout, floor or GemmTable(have)) > deadline:
            break  # the shapes are cheapest first: none after it fits either
        if progress:
            progress("gemm", i, len(todo), f"torch.mm {'x'.join(map(str, shape))}" + (" as leaves" if layout == "leaf" else ""))
        ref_s = reference_s if layout != "contiguous" else have.get(REFERENCE_GEMM)
        reference = None if ref_s is None or (layout == "contiguous" and shape == REFERENCE_GEMM) else (REFERENCE_GEMM, ref_s)
        have[shape] = measure_gemm(key, shape, reference, layout)
        if floor is not None and floor.points and have[shape] < LEAF_FLOOR * floor.seconds(shape):
            have[shape] = max(have[shape], measure_gemm(key, shape, reference, layout))
        save_gemm_point(key, shape, have[shape], store, layout)
        taken += 1
    if progress:
        progress("gemm", len(todo), len(todo), "done")
    return taken


def gemm_table(key: ModelKey, usable: Sequence[Usable], store: Store) -> GemmTable:
    """Measured contiguous gemm timings, with each record's vendor baseline (the same torch.mm at
    the full size) filling a grid shape nobody timed alone."""
    points = load_gemm_points(key, store)
    for u in usable:
        points.setdefault(u.shape, u.record.baseline_median_s)
    return GemmTable(points)


def leaf_table(key: ModelKey, store: Store) -> GemmTable:
    """Measured gemm timings in the leaf layout (codegen.costmodel.LEAF_LAYOUT)."""
    return GemmTable(load_gemm_points(key, store, "leaf"))


def load_corrected_s(u: Usable, table: GemmTable) -> float:
    """The record's kernel time at the machine speed of the gemm table: the table's vendor time
    at its size over the record's speed-up against the vendor baseline measured interleaved
    with it. A shared machine's load slows both sides of a run alike (hardware.timing), so this
    removes what the model cannot know: how busy the machine was during that run. (For a record
    of codegen.bench.measure the speed-up is the ratio of the two medians; for one of
    measure_many, the median of the per-round ratios.)"""
    return table.seconds(u.shape) / u.record.speedup


def fit_best(key: ModelKey, usable: Sequence[Usable], table: GemmTable, leaf: GemmTable | None = None
             ) -> CalibratedModel:
    """The model with one bandwidth or two (passes that fit in the cores' L2 apart, on a CPU),
    whichever predicts the held-out records better (median error, then rank correlation)."""
    caches = (0, cache_bytes(key.threads)) if key.device == "cpu" else (0,)
    seconds = [load_corrected_s(u, table) for u in usable]
    models = []
    for cache in caches:
        rows: list[Features] = [features(u.decomps, u.cutoff, u.shape, key.dtype, table, cache, leaf, u.variant,
                                         u.remainder) for u in usable]
        models.append(fit(key, rows, seconds, [u.shape for u in usable], table, cache=cache, leaf=leaf))

    def held_out(m: CalibratedModel) -> tuple[float, float]:
        q = m.quality
        return (0.0, 0.0) if q is None else (q.median_ape, -(q.spearman or 0.0))

    return min(models, key=held_out)


def needed_shapes(plans: Iterable[tuple[Sequence[Decomposition], int, Shape, str, str]]) -> dict[str, set[Shape]]:
    """The gemm shapes each table needs for ``plans`` (decompositions, cutoff, shape, variant, remainder): the grid
    corners around every gemm the calls run, and those gemms' own shapes too (off the grid, e.g.
    341³, MKL runs slower than the corners suggest); the kernels' leaves in the leaf layout, the
    gemm of a plan that does not split contiguous."""
    out: dict[str, set[Shape]] = {"contiguous": set(), "leaf": set()}
    for decomps, cutoff, shape, variant, remainder in plans:
        for layout, inside in (("contiguous", False), ("leaf", True)):
            out[layout] |= leaf_shapes(decomps, cutoff, shape, inside=inside, variant=variant, remainder=remainder)
    return {layout: union_corners(shapes) | shapes for layout, shapes in out.items()}


def measure_tables(key: ModelKey, needed: dict[str, set[Shape]], store: Store, deadline: float,
                   progress: Progress | None = None) -> int:
    """Measure the shapes of ``needed`` (layout -> shapes, :func:`needed_shapes`) that the stored
    gemm tables lack, until ``deadline``: the contiguous one first (its reference point times the
    rest), then the leaf layout. Returns how many were measured."""
    points = load_gemm_points(key, store)
    taken = _measure_gemms(key, needed["contiguous"] | {REFERENCE_GEMM}, points, deadline, store, progress)
    if REFERENCE_GEMM not in points or not needed["leaf"]:
        return taken
    leaves = load_gemm_points(key, store, "leaf")
    return taken + _measure_gemms(key, needed["leaf"], leaves, deadline, store, progress, "leaf",
                                  points[REFERENCE_GEMM], GemmTable(points))


def _enough(usable: Sequence[Usable]) -> bool:
    return len(usable) >= MIN_RECORDS and len({u.shape for u in usable}) >= MIN_SIZES


def calibrate(key: ModelKey, *, backend: CodegenBackend, budget_s: float = DEFAULT_BUDGET_S,
              store: Store | None = None, progress: Progress | None = None) -> Calibration:
    """Fit, evaluate (leave-one-out) and store the model for ``key``, measuring what is missing
    within ``budget_s`` seconds. Too few usable records after that is one clear FmmforgeError."""
    store = store if store is not None else Store()
    if budget_s < 0:
        raise FmmforgeError(f"--budget must be >= 0 seconds, not {budget_s:g}")
    start = time.monotonic()
    usable, skipped = usable_records(key, store)
    measured = 0
    if not _enough(usable) and budget_s > 0:
        measured = _measure_records(key, usable, start + budget_s * (1 - GEMM_SHARE), backend, store, progress)
        usable, skipped = usable_records(key, store)
    if not _enough(usable):
        sizes = len({u.shape for u in usable})
        raise FmmforgeError(
            f"calibrate needs at least {MIN_RECORDS} benchmark records of low-memory or fused torch kernels at "
            f"{MIN_SIZES} sizes or more on {key.describe()}, the store has {len(usable)} at {sizes} size(s)"
            + (f" (and {skipped} it cannot use)" if skipped else "")
            + f"; give it time to measure them (--budget {DEFAULT_BUDGET_S:g}) or run `fmmforge bench --device {key.device}` first")
    needed = needed_shapes((u.decomps, u.cutoff, u.shape, u.variant, u.remainder) for u in usable)
    gemms = measure_tables(key, needed, store, start + budget_s, progress) if budget_s > 0 else 0
    model = fit_best(key, combined(usable), gemm_table(key, usable, store), leaf_table(key, store))
    floor, pairs = repeatability(usable)
    if model.quality is not None and floor is not None:
        model = replace(model, quality=replace(model.quality, repeat_pct=floor, repeat_pairs=pairs))
    save_model(model, store)
    return Calibration(model, measured, gemms, skipped)
