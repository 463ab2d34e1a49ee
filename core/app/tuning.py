"""Hardware-aware tuning: the loop that turns measurements into the device's choice of kernel.

:func:`tune` does, for one (device, M×K×N, dtype), within a time budget:

1. **Schemes.** Every exactly verified scheme over Z of the formats that fit the shape (the
   built-ins, DeepMind's factorizations over Z turned to each orientation, Kronecker products of
   the 2×2×2 schemes, what the store holds), and many more found by the search engine: from each
   starting scheme it walks the flip graph at that rank and collects distinct schemes of the same
   rank (``SearchRequest.collect``), which differ in their additions and so in their cost.
2. **Candidates.** Plans of one to ``max_levels`` levels: any scheme at the top level, and below it
   the same scheme or one of the inner schemes (Strassen–Winograd, Strassen), each in every kernel
   layout (``variants``: on a CPU the low-memory, the fused (codegen.fused) and the parallel one
   (codegen.runtime.runtime_parallel)). Each is ranked by the
   calibrated cost model of the device (codegen.costmodel; on a spec-only chip such as ``tpu-v4``,
   by the analytic TPU model, and nothing is measured).
3. **Rounds.** The ``top_k`` best-predicted candidates not yet measured at this size are generated,
   validated and measured against the vendor matmul (codegen.bench.measure: checked at the size
   against a float64 product, timed interleaved, recorded in the store at once); the model is
   refitted on all records (the new ones included) and the candidates ranked again, until the
   budget ends or no candidate is left.
4. **Choice.** The fastest plan of each of the few fastest families (:func:`finalists_of`) is measured
   again, all of them in one run, and the choice is made on that run alone (winner's curse: the
   best of many noisy medians is biased up, and plans measured in different runs meet different
   machine states); the best confirmed speed-up, when it beats the vendor matmul by more than
   ``min_speedup``, is stored as the device's choice for the shape class (codegen.choices), with the
   model's prediction beside it. Otherwise the choice is the vendor matmul, said plainly, and any
   earlier choice for that class is removed.

Ctrl-C (KeyboardInterrupt) ends the loop: every record already measured stays in the store, and the
choice is made from them. Nothing here prints; ``progress`` receives :class:`TuneProgress`.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from fmmforge.core import catalogue, transforms
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Provenance, Store

Shape = tuple[int, int, int]
Format = tuple[int, int, int]

INNER_SCHEMES = ("strassen-winograd", "strassen")
DEFAULT_DIMS = (2, 3, 4)  # format sides tried by default (each n, m, p)
# the kernel layouts a CPU tune tries: which one wins depends on the shape (docs/tuning.md)
CPU_VARIANTS = ("lowmem", "fused", "parallel")
PER_FORMAT = 24  # schemes per format that become plans (lowest rank, then fewest additions)
FUSED_PER_FORMAT = 8  # and beside them, those of fewest blocks moved by the fused schedule
CONFIRM = 3  # finalists measured again before the choice: the fastest plan of each of the 3 fastest families


@dataclass(frozen=True)
class TuneRequest:
    """What to tune. ``budget_s`` covers everything (search, calibration, measuring)."""

    device: str = "cpu"
    shape: Shape = (4096, 4096, 4096)
    dtype: str = "float32"
    budget_s: float = 1200.0
    engine: str = "flip"
    formats: tuple[Format, ...] | None = None  # None: every n,m,p in DEFAULT_DIMS that fits the shape
    max_levels: int = 3
    top_k: int = 3
    pairs: int = 5
    cutoff: int = 64
    min_leaf: int = 256  # plans whose leaf blocks would be smaller than this are not candidates
    collect: int = 40  # schemes the engine collects from each starting scheme
    search_share: float = 0.15  # of the budget, for the engine
    calibrate_share: float = 0.3  # of the budget, for a first calibration when the device has no model
    min_speedup: float = 1.01  # a kernel must beat the vendor matmul by more than this to be chosen
    threads: int | None = None
    seed: int = 0
    store_choice: bool = True
    variants: tuple[str, ...] | None = None  # kernel layouts; None: every one the device's kernels have

    def variants_for(self, device_kind: str) -> tuple[str, ...]:
        """The kernel layouts candidates take on a device of ``device_kind`` (cpu, cuda, spec): the
        fused and parallel kernels are CPU torch kernels (a CPU tries all three unless told); a
        spec-only chip's analytic model has no layouts."""
        allowed = CPU_VARIANTS if device_kind == "cpu" else ("lowmem",)
        if self.variants is None:
            return allowed
        wrong = [v for v in self.variants if v not in allowed]
        if wrong:
            raise FmmforgeError(f"variant {wrong[0]!r} cannot be tuned on this device; use {', '.join(allowed)}")
        return tuple(dict.fromkeys(self.variants))

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in self.shape):
            raise FmmforgeError(f"the shape must be three positive whole numbers M, K, N, not {self.shape!r}")
        if not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise FmmforgeError(f"the budget must be a positive number of seconds, not {self.budget_s!r}")
        for name, value, low, high in (("max_levels", self.max_levels, 1, 4), ("top_k", self.top_k, 1, 100),
                                       ("pairs", self.pairs, 3, 100), ("collect", self.collect, 0, 10_000),
                                       ("cutoff", self.cutoff, 1, 1 << 20), ("min_leaf", self.min_leaf, 1, 1 << 20)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FmmforgeError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
        for name, value in (("search_share", self.search_share), ("calibrate_share", self.calibrate_share)):
            if not 0 <= value < 1:
                raise FmmforgeError(f"{name} must be a fraction from 0 to below 1, not {value!r}")
        if not (math.isfinite(self.min_speedup) and self.min_speedup >= 1):
            raise FmmforgeError(f"min_speedup must be at least 1, not {self.min_speedup!r}")
        if self.variants is not None and (not self.variants or not all(isinstance(v, str) for v in self.variants)):
            raise FmmforgeError(f"variants must name at least one kernel layout ({', '.join(CPU_VARIANTS)}), "
                                f"not {self.variants!r}")
        if self.formats is not None:
            for f in self.formats:
                if len(f) != 3 or min(f) < 1 or max(f) > 6 or math.prod(f) < 2:
                    raise FmmforgeError(f"format {f!r} cannot be tuned: give n,m,p from 1 to 6, not all 1")


def identity(decomps: Iterable[Decomposition], variant: str, remainder: str = "peel") -> tuple[str, ...]:
    """What a measurement is of: the levels' fingerprints, and the layout and remainder strategy
    where they are not the defaults (the identities of low-memory peeling plans are those earlier
    tunes recorded)."""
    fps = tuple(d.fingerprint for d in decomps)
    return fps + ((variant,) if variant != "lowmem" else ()) + ((remainder,) if remainder != "peel" else ())


# The layouts the tuner offers padded: the fused and parallel kernels hold up to 2×C of workspace
# (issue 14's bound, kept by codegen/fused.py), and padded copies of A, B and C add up to 3×C more
# (4.51×C measured for a fused Strassen-Winograd L2 at 4095), so a tune never picks them padded;
# `--remainder pad` still makes such a kernel by hand.
PADDED_LAYOUTS = ("lowmem",)


def layouts(decomps: Sequence[Decomposition], shape: Shape, variants: Sequence[str],
            spec: bool = False) -> list[tuple[str, str]]:
    """(variant, remainder) pairs a plan is a candidate in at ``shape``: every layout, and where
    the shape does not divide by the plan's levels every remainder strategy the layout has
    (peeling; padding, codegen.runtime.runtime_pad, for :data:`PADDED_LAYOUTS`; uneven blocks,
    codegen.runtime.runtime_split; not on a spec-only chip, whose model peels)."""
    divides = all(s % math.prod(d.format[i] for d in decomps) == 0 for i, s in enumerate(shape))  # type: ignore[index]
    from fmmforge.codegen.plan import DEFAULT_REMAINDER, REMAINDER_VARIANTS, REMAINDERS

    remainders = (DEFAULT_REMAINDER,) if divides or spec else REMAINDERS
    return [(v, r) for v in variants for r in remainders
            if v in REMAINDER_VARIANTS.get(r, (v,)) and (r != "pad" or v in PADDED_LAYOUTS)]


@dataclass(frozen=True)
class Candidate:
    """A plan the tuner may measure: one scheme per level, the model's prediction."""

    decomps: tuple[Decomposition, ...]
    names: tuple[str, ...]  # one per level: a catalogue name, or the store name tune gave the scheme
    predicted_s: float
    predicted_speedup: float
    variant: str = "lowmem"  # the kernel layout (codegen.plan.VARIANTS)
    remainder: str = "peel"  # a size that does not divide: peeled, padded or split (codegen.plan.REMAINDERS)

    @property
    def label(self) -> str:
        from fmmforge.codegen.plan import REMAINDER_WORDS

        layout = ("" if self.variant == "lowmem" else f", {self.variant}") + REMAINDER_WORDS.get(self.remainder, "")
        return "/".join(self.names) + f" ({len(self.names)} level{'s' if len(self.names) > 1 else ''}{layout})"

    @property
    def identity(self) -> tuple[str, ...]:
        return identity(self.decomps, self.variant, self.remainder)


@dataclass(frozen=True)
class Measured:
    """A candidate measured at the tuned size (``record`` as stored)."""

    candidate: Candidate
    speedup: float
    median_s: float
    baseline_median_s: float
    plan: object  # codegen.plan.Plan
    record_id: int | None


@dataclass(frozen=True)
class TuneProgress:
    """Where a tune stands: ``phase`` is search, calibrate, rank, measure, confirm or done."""

    phase: str
    done: int
    total: int
    text: str
    best_speedup: float | None
    elapsed_s: float


@dataclass
class TuneResult:
    request: TuneRequest
    schemes: int = 0  # distinct schemes considered
    found_by_engine: int = 0
    candidates: int = 0  # plans ranked
    rounds: int = 0
    measured: list[Measured] = field(default_factory=list)
    confirmed: list[Measured] = field(default_factory=list)  # the finalists measured again
    measure_seconds: list[float] = field(default_factory=list)  # wall time of each measurement

    def typical_measure_s(self) -> float:
        """Median wall time of one measurement so far (0 before the first)."""
        return statistics.median(self.measure_seconds) if self.measure_seconds else 0.0
    best: Measured | None = None  # the chosen kernel (None: the vendor matmul)
    choice: object | None = None  # the stored codegen.choices.Choice
    vendor_predicted_s: float | None = None
    ranking: list[Candidate] = field(default_factory=list)  # the final model ranking, best first
    model: str = ""
    interrupted: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    spec_only: bool = False  # a spec-only chip: ranked by its analytic model, nothing measured


Progress = Callable[[TuneProgress], None]


# ---------------------------------------------------------------------- schemes
def orient(d: Decomposition, fmt: Format) -> Decomposition | None:
    """``d`` turned into format ``fmt`` by rotations and a transposition, or None if it cannot be."""
    options = [d]
    for _ in range(2):
        options.append(transforms.rotate(options[-1]))
    options += [transforms.transpose(x) for x in options]
    for x in options:
        if x.format == fmt:
            return x
    return None


def formats_for(shape: Shape, request: TuneRequest) -> list[Format]:
    """The formats whose one level leaves blocks of at least ``min_leaf`` on ``shape``."""
    if request.formats is not None:
        return list(dict.fromkeys(request.formats))
    out = []
    for f in itertools.product(DEFAULT_DIMS, repeat=3):
        if all(s // x >= request.min_leaf for s, x in zip(shape, f)):
            out.append(f)
    return out


def starting_schemes(fmt: Format, store: Store) -> list[tuple[str, Decomposition]]:
    """Named Z schemes of format ``fmt`` known without searching: built-ins, DeepMind's over Z
    (any orientation), Kronecker products of 2×2×2 schemes with a half-size one, the store's best."""
    from fmmforge.core import alphatensor

    found: list[tuple[str, Decomposition]] = []
    for name in catalogue.BUILTIN_NAMES:
        own = catalogue.resolve(name)
        d = orient(own, fmt)
        if d is not None:
            found.append((name if d.format == own.format else f"{name}@{'x'.join(map(str, fmt))}", d))
    if tuple(sorted(fmt)) in alphatensor.available("Z"):
        d = orient(alphatensor.load(tuple(sorted(fmt)), "Z"), fmt)
        if d is not None:
            found.append((f"alphatensor:{','.join(map(str, fmt))}", d))
    if all(x % 2 == 0 for x in fmt) and fmt != (2, 2, 2):
        half = tuple(x // 2 for x in fmt)
        # the half-size factor: a fast scheme of that format if one is known, else the naive one
        # (strassen*naive:1,1,2 is two Strassens side by side: a <2,2,4;14> scheme)
        inner = [(n, d) for n, d in _known_z(half, store) if d.rank < math.prod(half)]
        if not inner:
            naive = f"naive:{','.join(map(str, half))}"
            inner = [(naive, catalogue.resolve(naive))]
        for outer in INNER_SCHEMES:
            for iname, idec in inner[:2]:
                found.append((f"{outer}*{iname}", transforms.kron(catalogue.resolve(outer), idec)))
    best = store.best(",".join(map(str, fmt)), "Z")
    if best is not None:
        found.append((best.label, best.decomposition))
    out, seen = [], set()
    for name, d in found:
        if d.field == "Z" and d.format == fmt and d.fingerprint not in seen and d.rank < math.prod(fmt):
            seen.add(d.fingerprint)
            out.append((name, d))
    return out


def _known_z(fmt: Format, store: Store) -> list[tuple[str, Decomposition]]:
    """Z schemes of ``fmt`` without Kronecker products (for the half-size factor of one)."""
    from fmmforge.core import alphatensor

    out = []
    for name in catalogue.BUILTIN_NAMES:
        d = catalogue.resolve(name)
        if d.format == fmt:
            out.append((name, d))
    if not out and tuple(sorted(fmt)) in alphatensor.available("Z"):
        d = orient(alphatensor.load(tuple(sorted(fmt)), "Z"), fmt)
        if d is not None:
            out.append((f"alphatensor:{','.join(map(str, fmt))}", d))
    return out


def collect_schemes(request: TuneRequest, formats: Sequence[Format], store: Store, deadline: float,
                    report: Callable[[str, int, int], None]) -> tuple[dict[str, tuple[str, Decomposition]], int]:
    """Every scheme per fingerprint (with a label): the starting schemes and what the engine
    finds from each of them within ``deadline``; and how many the engine found."""
    from fmmforge.core.contracts import Budget, SearchEvents, SearchRequest
    from fmmforge.plugins import get_engine

    schemes: dict[str, tuple[str, Decomposition]] = {}
    starts: list[tuple[str, Decomposition]] = []
    for fmt in formats:
        for name, d in starting_schemes(fmt, store):
            schemes.setdefault(d.fingerprint, (name, d))
            starts.append((name, d))
    found_total = 0
    if request.collect == 0 or not starts:
        return schemes, 0
    engine = get_engine(request.engine)
    for i, (name, start) in enumerate(starts):
        left = deadline - time.monotonic()
        if left <= 0.5:
            break
        report(f"{request.engine}: distinct rank-{start.rank} schemes from {name}", i, len(starts))
        share = left / (len(starts) - i)
        found: list[Decomposition] = []
        search = SearchRequest(start, field="Z", target_rank=start.rank, budget=Budget(seconds=share),
                               collect=request.collect, seed=request.seed + i, start_label=name, workers=1,
                               checkpoint_every=1e9)
        try:
            engine.run(search, SearchEvents(found=lambda f: found.append(f.decomposition)))
        except FmmforgeError:
            continue  # an engine that cannot walk this start (e.g. too large) is skipped
        for d in found:
            if d.field == "Z" and d.format == start.format and d.verify().valid and d.fingerprint not in schemes:
                schemes[d.fingerprint] = (f"{name}~{d.fingerprint[:8]}", d)
                found_total += 1
    report("search done", len(starts), len(starts))
    return schemes, found_total


# ---------------------------------------------------------------------- candidates
def _shortlist(schemes: Iterable[tuple[str, Decomposition]], per_format: int,
               fused_per_format: int | None = None) -> list[tuple[str, Decomposition]]:
    """Per format, the ``per_format`` schemes of the lowest rank, then fewest element-wise passes
    of the low-memory schedule the kernels use (:func:`side_passes`), and beside them the
    ``fused_per_format`` (default :data:`FUSED_PER_FORMAT`) of the lowest rank, then fewest blocks
    moved by the fused schedule (:func:`fused_units`): the two layouts cost a scheme's additions
    differently, and the fused one is the faster at 8192 on the Intel Xeon (docs/costmodel.md)."""
    fused_per_format = FUSED_PER_FORMAT if fused_per_format is None else fused_per_format
    by_format: dict[Format, list[tuple[str, Decomposition]]] = {}
    for name, d in schemes:
        by_format.setdefault(d.format, []).append((name, d))  # type: ignore[arg-type]
    out = []
    for fmt in sorted(by_format):
        group = sorted(by_format[fmt], key=lambda x: (x[1].rank, sum(side_passes(x[1])), x[0]))
        kept = group[:per_format]
        have = {name for name, _ in kept}
        fused = sorted(by_format[fmt], key=lambda x: (x[1].rank, sum(fused_units(x[1])), x[0]))
        kept += [x for x in fused if x[0] not in have][:fused_per_format]
        out += kept
    return out


def top_schemes(schemes: Iterable[tuple[str, Decomposition]], inner: Sequence[tuple[str, Decomposition]],
                formats: Sequence[Format]) -> list[tuple[str, Decomposition]]:
    """The schemes plans start from: the :func:`_shortlist` of each format, and the inner
    (classical) schemes of those formats whatever the shortlist's estimate says: Strassen–Winograd's
    passes come out lowest only with the schedule's order search, and the first round's anchors
    measure the classical recursion."""
    top = _shortlist(schemes, PER_FORMAT)
    have = {d.fingerprint for _, d in top}
    return top + [x for x in inner if x[1].format in formats and x[1].fingerprint not in have]


def level_structures(top: Sequence[tuple[str, Decomposition]], inner: Sequence[tuple[str, Decomposition]],
                     shape: Shape, request: TuneRequest) -> list[tuple[tuple[str, Decomposition], ...]]:
    """Plans: a top scheme, then 0..max_levels-1 more levels of it or of an inner scheme, while the
    leaf blocks stay at least ``min_leaf``."""
    plans = []
    for t in top:
        below = [t] + [x for x in inner if x[1].fingerprint != t[1].fingerprint]
        for depth in range(1, request.max_levels + 1):
            for rest in (itertools.product(below, repeat=depth - 1) if depth > 1 else [()]):
                levels = (t, *rest)
                dims = [math.prod(d.format[i] for _, d in levels) for i in range(3)]  # type: ignore[index]
                if all(s // x >= request.min_leaf for s, x in zip(shape, dims)):
                    plans.append(levels)
    return plans


class Ranker:
    """Predicts a plan's time on the device: the calibrated model (CPU, CUDA) or the TPU model."""

    def __init__(self, device: str, dtype: str, cutoff: int, model: object | None = None,
                 chip: object | None = None) -> None:
        self.device, self.dtype, self.cutoff, self.model, self.chip = device, dtype, cutoff, model, chip

    def seconds(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem",
                remainder: str = "peel") -> float:
        if self.chip is not None:
            from fmmforge.plugins.tpu_model import predict_plan, standard_matmul

            if not decomps:
                return standard_matmul(shape, self.chip, self.dtype).seconds  # type: ignore[arg-type]
            return predict_plan(list(decomps), self.chip, shape, self.dtype).algorithm_s  # type: ignore[arg-type]
        return self.model.predict_s(list(decomps), self.cutoff, shape, variant, remainder)  # type: ignore[union-attr]

    def candidate(self, decomps: tuple[Decomposition, ...], names: tuple[str, ...], shape: Shape, vendor_s: float,
                  variant: str = "lowmem", remainder: str = "peel") -> "Candidate":
        """The plan as a :class:`Candidate` with this ranker's prediction (``vendor_s``: the vendor's time)."""
        t = self.seconds(decomps, shape, variant, remainder)
        return Candidate(decomps, names, t, vendor_s / t, variant, remainder)

    @property
    def name(self) -> str:
        return f"analytic TPU model of {self.chip.name}" if self.chip is not None else self.model.name  # type: ignore[union-attr]


def rank_candidates(structures: Sequence[tuple[tuple[str, Decomposition], ...]], ranker: Ranker,
                    shape: Shape, variants: Sequence[str] = ("lowmem",)) -> tuple[list[Candidate], float]:
    """Every structure in each of its :func:`layouts`, best predicted first; and the vendor's time."""
    vendor = ranker.seconds([], shape)
    out = []
    for levels in structures:
        decomps = tuple(d for _, d in levels)
        for variant, remainder in layouts(decomps, shape, variants, ranker.chip is not None):
            out.append(ranker.candidate(decomps, tuple(n for n, _ in levels), shape, vendor, variant, remainder))
    out.sort(key=lambda c: (c.predicted_s, c.names))
    return out, vendor


# ---------------------------------------------------------------------- measuring
def plan_name(name: str, d: Decomposition, store: Store) -> str:
    """A name ``make_plan`` resolves to exactly ``d``: the catalogue's when it is that scheme, else a
    store name (the scheme is stored, verified again by the store, with tune's provenance)."""
    try:
        if catalogue.resolve(name, store).fingerprint == d.fingerprint:
            return name
    except FmmforgeError:
        pass
    label = f"tune-{'x'.join(map(str, d.format))}-r{d.rank}-{d.fingerprint[:10]}"  # type: ignore[arg-type]
    store.add(d, Provenance(source="tune", params={"from": name}), name=label)
    return label


def _plan(c: Candidate, request: TuneRequest, store: Store):  # -> (Plan, names)
    from fmmforge.codegen.plan import Plan

    names = tuple(plan_name(n, d, store) for n, d in zip(c.names, c.decomps))
    return Plan(names, tuple(d.fingerprint for d in c.decomps), "torch", request.dtype, request.device, request.cutoff,
                c.variant, c.remainder)


def _measure(cands: Sequence[Candidate], request: TuneRequest, store: Store, notes: list[str],
             say: Callable[[str], None] | None = None) -> list[Measured]:
    """The candidates measured in one run (codegen.bench.measure_many: one float64 reference,
    every kernel checked against it, all timed round-robin with one vendor run), each recorded at
    once; a candidate that fails is left out with a note."""
    from fmmforge.codegen.bench import measure_many
    from fmmforge.plugins import get_backend

    plans = [_plan(c, request, store) for c in cands]
    recs = measure_many([(p, list(c.decomps)) for p, c in zip(plans, cands)], request.shape,
                        backend=get_backend("torch"), threads=request.threads, rounds=request.pairs,
                        min_sample_s=0.05, store=store, progress=say,
                        on_error=lambda plan, exc: notes.append(f"{plan.describe()}: {exc}"))
    return [Measured(c, r.speedup, r.median_s, r.baseline_median_s, p, r.id)
            for c, p, r in zip(cands, plans, recs) if r is not None]


def _ensure_gemm_points(key: object, candidates: Sequence[Candidate], shape: Shape, request: TuneRequest,
                        store: Store, deadline: float) -> int:
    """Time the vendor gemm at the leaf shapes of the best candidates that the model's tables lack
    (as leaves: codegen.costmodel's leaf layout) and at the shape itself, so the prediction at this
    size rests on measured leaves rather than on extrapolation."""
    from fmmforge.codegen.calibrate import measure_tables, needed_shapes

    needed = needed_shapes((c.decomps, request.cutoff, shape, c.variant, c.remainder) for c in candidates)
    needed["contiguous"] = {shape}  # the vendor gemm here; no corners around it
    return measure_tables(key, needed, store, deadline)  # type: ignore[arg-type]


def prior_model(key: object, request: TuneRequest, store: Store) -> object:
    """The model before any fit: leaf gemms at their measured times, and the bytes of passes at
    the bandwidths measured now, of blocks that stay in cache and of blocks that stream (no
    per-pass or per-call cost)."""
    from fmmforge.codegen.calibrate import leaf_table
    from fmmforge.codegen.costmodel import ITEMSIZE, PARAMETERS, CalibratedModel, GemmTable, cache_bytes, load_gemm_points
    from fmmforge.hardware.timing import pass_bandwidth

    threads = key.threads  # type: ignore[attr-defined]
    cache = cache_bytes(threads)
    item = ITEMSIZE.get(request.dtype, 4)
    small = max(64, int(math.sqrt(cache / (3 * item))) // 2)  # three blocks well inside the cache
    values = {"gemm_scale": 1.0, "s_per_cached_byte": 1.0 / pass_bandwidth(request.dtype, request.threads, small),
              "s_per_streamed_byte": 1.0 / pass_bandwidth(request.dtype, request.threads, 2048)}
    values["s_per_fused_byte"] = values["s_per_streamed_byte"]  # a fused pass streams its blocks once
    return CalibratedModel(key, tuple(values.get(p, 0.0) for p in PARAMETERS),  # type: ignore[arg-type]
                           GemmTable(load_gemm_points(key, store)), None, 0, cache=cache,  # type: ignore[arg-type]
                           leaf=leaf_table(key, store))  # type: ignore[arg-type]


def _fit(key: object, request: TuneRequest, store: Store, budget_s: float, progress: Callable | None,
         notes: list[str]) -> object:
    """The device's model fitted on every usable record (measuring within ``budget_s`` what is
    missing); the prior model, with a note, while there are too few records to fit one."""
    from fmmforge.codegen.calibrate import calibrate
    from fmmforge.plugins import get_backend

    try:
        return calibrate(key, backend=get_backend("torch"), budget_s=budget_s, store=store,  # type: ignore[arg-type]
                         progress=progress).model
    except FmmforgeError as exc:
        if not any(n.startswith(PRIOR) for n in notes):
            notes.append(f"{PRIOR}: {exc}")
        return prior_model(key, request, store)


PRIOR = "ranked by the prior model (measured gemm times, streaming bandwidth)"


def model_name(model: object) -> str:
    return "the prior model" if model.fitted_on == 0 else model.name  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- the loop
def tune(request: TuneRequest, *, store: Store | None = None, progress: Progress | None = None) -> TuneResult:
    """Run the tuning loop (module docstring); the result says what was measured and chosen."""
    from fmmforge.codegen.plan import DTYPES
    from fmmforge.hardware.devices import get_device

    store = store if store is not None else Store()
    started = time.monotonic()
    deadline = started + request.budget_s
    device = get_device(request.device, runnable=False)
    if device.kind != "spec" and request.dtype not in DTYPES:
        raise FmmforgeError(f"unknown dtype {request.dtype!r}; use one of {', '.join(DTYPES)}")
    request = replace(request, device=device.name, variants=request.variants_for(device.kind))
    result = TuneResult(request)
    best: list[float | None] = [None]

    def say(phase: str, done: int, total: int, text: str) -> None:
        if progress is not None:
            progress(TuneProgress(phase, done, total, text, best[0], time.monotonic() - started))

    shape = request.shape
    formats = formats_for(shape, request)
    if not formats:
        raise FmmforgeError(f"no format <n,m,p> with sides in {DEFAULT_DIMS} leaves blocks of at least "
                            f"{request.min_leaf} at {'x'.join(map(str, shape))}; tune a larger shape or lower min_leaf")
    try:
        schemes, result.found_by_engine = collect_schemes(
            request, formats, store, started + request.budget_s * request.search_share,
            lambda text, d, t: say("search", d, t, text))
        result.schemes = len(schemes)
        inner = [(n, catalogue.resolve(n)) for n in INNER_SCHEMES]
        top = top_schemes(schemes.values(), inner, formats)
        structures = level_structures(top, inner, shape, request)
        if device.kind == "spec":
            from fmmforge.hardware.chips import load_chip

            chip = load_chip(device.name)
            chip.peak_flops(request.dtype)  # a dtype the chip has no rate for: one clear error
            ranker = Ranker(device.name, request.dtype, request.cutoff, chip=chip)
            result.ranking, result.vendor_predicted_s = rank_candidates(structures, ranker, shape,
                                                                        request.variants_for(device.kind))
            result.candidates, result.model, result.spec_only = len(result.ranking), ranker.name, True
            result.seconds = time.monotonic() - started
            say("done", 1, 1, "ranked by the analytic model; nothing is measured on a spec-only chip")
            return _finish_spec(result, store)
        _measure_rounds(request, result, structures, store, deadline, say, best)
    except KeyboardInterrupt:
        result.interrupted = True
    _finish_measured(result, store, deadline, say, best)
    result.seconds = time.monotonic() - started
    return result


def _measure_rounds(request: TuneRequest, result: TuneResult, structures: list, store: Store, deadline: float,
                    say: Callable[[str, int, int, str], None], best: list) -> None:
    """Rank, measure the top k, refit, repeat until the deadline (Ctrl-C propagates)."""
    from fmmforge.codegen.costmodel import current_key, find_model

    key = current_key(request.device, request.dtype, request.threads)
    model = find_model(key, store)
    if model is None:
        say("calibrate", 0, 1, "no cost model for this device yet: calibrating")
        left = max(0.0, deadline - time.monotonic())
        model = _fit(key, request, store, left * request.calibrate_share,
                     lambda phase, d, t, text: say("calibrate", d, t, f"{phase}: {text}"), result.notes)
    earlier = _already_measured(request, key.threads, structures, store)
    result.measured += earlier
    measured_ids = {m.candidate.identity for m in earlier}
    if earlier:
        best[0] = max(m.speedup for m in earlier)
        result.notes.append(f"{len(earlier)} candidate(s) measured at this shape before are not measured again")
    _ensure_gemm_points(key, [], request.shape, request, store, math.inf)  # at least the vendor time at the shape
    model = _with_table(model, key, store)
    if earlier:  # their predictions, by the model as it stands now (for the finalists' table)
        result.measured[:] = predicted(result.measured, model, request)
    while time.monotonic() < deadline and _fits(result, deadline, 1):
        say("rank", 0, 1, f"ranking {len(structures)} plans")
        fresh = [s for s in structures if any(
            identity([d for _, d in s], v, r) not in measured_ids
            for v, r in layouts([d for _, d in s], request.shape, request.variants or ("lowmem",)))]
        if not fresh:
            break
        keep = PROXY_KEEP * request.top_k
        factor = correction(result.measured, model, request)
        ranking = _rank(fresh, model, request, keep, factor)[0]
        head = ranking[:3 * request.top_k]
        _ensure_gemm_points(key, head, request.shape, request, store, deadline)  # measured leaves, then rank again
        model = _with_table(model, key, store)
        factor = correction(result.measured, model, request)
        ranking, result.vendor_predicted_s = _rank(fresh, model, request, keep, factor)
        result.ranking, result.model = ranking, model_name(model)
        result.candidates = len(structures)
        todo = diverse([c for c in ranking if c.identity not in measured_ids], request.top_k)
        if not result.rounds:  # the first round also measures the anchors
            taken = measured_ids | {c.identity for c in todo}
            todo += [c for c in anchors(structures, model, request, factor) if c.identity not in taken]
        fits = _fits(result, deadline, len(todo))  # the finalists are measured again at the end: leave time
        if result.measured and fits < 1:
            break
        todo = todo[:max(fits, 1)]
        result.rounds += 1
        for c in todo:
            measured_ids.add(c.identity)
        names = ", ".join(f"{c.label} ({c.predicted_speedup:.3f}x predicted)" for c in todo)
        say("measure", 0, len(todo), f"round {result.rounds}: {names}")
        t0 = time.monotonic()
        got = _measure(todo, request, store, result.notes,
                       lambda text: say("measure", 0, len(todo), f"round {result.rounds}: {text}"))
        result.measure_seconds += [(time.monotonic() - t0) / len(todo)] * len(todo)
        result.measured += got
        if got:
            best[0] = max(best[0] or 0.0, *(m.speedup for m in got))
        model = _fit(key, request, store, 0.0, None, result.notes)  # the new records refit the model


def anchors(structures: Sequence[tuple[tuple[str, Decomposition], ...]], model: object, request: TuneRequest,
            factor: Callable[[tuple], float] | None = None) -> list[Candidate]:
    """Plans the first round measures whatever the rest of the ranking says, so that a model that
    is wrong about whole families at this shape (a format that peels here, a scheme whose
    additions cost more than predicted) is corrected by measurement (:func:`correction`) before
    it steers the later rounds: the model's best two depths of the classical recursion
    (Strassen–Winograd at every level), and its best plan among those whose levels divide the
    shape (no peeling) and that are not classical. The classical depths are measured in every
    layout (each in its best-predicted remainder), the other plan in its best-predicted layout:
    the layouts of one plan differ by a few percent, less than the model's error at a shape it
    was not calibrated at (at 8192 on the Intel Xeon, 2026-12-03, it predicted Strassen–Winograd
    at two levels best low-memory, measured 1.145x, and the tune never timed the fused kernel,
    which measured 1.162x in the final comparison: the tuned choice lost to that hand-picked
    plan by 3 %)."""
    shape = request.shape

    def divides(levels: tuple) -> bool:
        return all(s % math.prod(d.format[i] for _, d in levels) == 0 for i, s in enumerate(shape))  # type: ignore[index]

    classical = [s for s in structures if all(n == INNER_SCHEMES[0] for n, _ in s)]
    dividing = [s for s in structures if divides(s) and s not in classical]
    out = []
    for group, count, every_layout in ((classical, 2, True), (dividing, 1, False)):
        taken: dict[tuple[str, ...], set[str]] = {}  # distinct plans, best first -> the layouts taken
        if not group:
            continue
        for c in _rank(group, model, request, PROXY_KEEP, factor)[0]:
            plan = identity(c.decomps, "lowmem")
            if plan not in taken and len(taken) < count:
                taken[plan] = set()
            if plan in taken and (c.variant not in taken[plan] if every_layout else not taken[plan]):
                taken[plan].add(c.variant)
                out.append(c)
    return out


def _fits(result: TuneResult, deadline: float, wanted: int) -> int:
    """How many of ``wanted`` candidates one more round can measure and still leave the time of
    the finalists' re-measurement (every candidate counted at the typical cost so far)."""
    per = result.typical_measure_s()
    if per <= 0:
        return wanted
    left = deadline - time.monotonic() - _confirm_s(result, wanted)
    return max(0, min(wanted, int(left // per)))


PROXY_KEEP = 8  # plans per measured one that the full model ranks after the proxy's first cut


@functools.lru_cache(maxsize=4096)
def side_passes(d: Decomposition) -> tuple[int, int, int]:
    """Passes of the A side, the B side and the outputs of the low-memory schedule the kernels
    use, estimated in the scheme's own product order (codegen.schedule.estimate_side_passes: the
    order search costs about a second per rank-49 scheme, and a tune shortlists hundreds; the full
    model, which ranks the plans kept, uses the kernel's own schedule). Not the additions left
    after common-subexpression elimination: the schedule keeps one workspace per side, so it
    cannot reuse most shared sums. At <4,4,4;49> the flip walks from Strassen–Winograd⊗itself
    find schemes with 170 such additions against Strassen⊗Strassen's 206, but their kernels make
    348 passes against 303 and measured slower; ranking by eliminated additions put them first."""
    from fmmforge.codegen.schedule import estimate_side_passes

    return estimate_side_passes(d)


@functools.lru_cache(maxsize=4096)
def fused_units(d: Decomposition) -> tuple[int, int, int]:
    """Blocks the fused schedule's passes of one level of ``d`` move at least, per side (A, B, the
    C update): each input block a sum uses read once and each distinct sum written once; each
    product with several outputs read once and each C block they reach written once
    (codegen.fused.traffic_bytes, per block)."""
    from fmmforge.codegen.fused import side_units

    return side_units(d)


def proxy_seconds(decomps: Sequence[Decomposition], shape: Shape, model: object, itemsize: int,
                  variant: str = "lowmem") -> float:
    """A cheap stand-in for the model's prediction: the leaf gemms at the divided shape, and each
    level's passes: for the low-memory layout :func:`side_passes` as one pass over its blocks (two
    read, one written) at the model's cost per byte of such passes, for the fused one the blocks
    of :func:`fused_units` at its cost per fused byte. Used only to choose which plans the full
    model ranks."""
    from fmmforge.codegen.costmodel import PARAMETERS

    params = dict(zip(PARAMETERS, model.parameters))  # type: ignore[attr-defined]
    block = list(shape)
    subproblems = 1
    pass_s = 0.0
    for d in decomps:
        n, m, p = d.format  # type: ignore[misc]
        block = [block[0] // n, block[1] // m, block[2] // p]
        bm, bk, bn = block
        sizes = (bm * bk, bk * bn, bm * bn)
        if variant == "fused":
            moved = sum(u * e for u, e in zip(fused_units(d), sizes)) * itemsize
            pass_s += subproblems * (moved * params.get("s_per_fused_byte", 0.0) + 3 * params.get("s_per_pass", 0.0))
        else:
            for adds, elements in zip(side_passes(d), sizes):
                moved = 3 * elements * itemsize  # one pass: two blocks read, one written
                cached = moved <= model.cache  # type: ignore[attr-defined]
                per_byte = params.get("s_per_cached_byte" if cached else "s_per_streamed_byte", 0.0)
                pass_s += subproblems * adds * (moved * per_byte + params.get("s_per_pass", 0.0))
        subproblems *= d.rank
    gemm = subproblems * model.gemm.seconds(tuple(block))  # type: ignore[attr-defined]
    return params.get("gemm_scale", 1.0) * gemm + pass_s


def _confirm_s(result: TuneResult, more: int = 0) -> float:
    """Time the finalists' re-measurement needs: as many as there will be (at most CONFIRM)."""
    return min(CONFIRM, len(result.measured) + more) * result.typical_measure_s()


def family(c: Candidate) -> tuple:
    """The formats of a plan's levels and its layout: plans of one family share how the shape
    divides and peels, and what their element-wise passes are like."""
    return family_of((d.format for d in c.decomps), c.variant, c.remainder)  # type: ignore[misc]


def family_of(formats: Iterable[Format], variant: str, remainder: str = "peel") -> tuple:
    return (*formats, variant) + ((remainder,) if remainder != "peel" else ())


def correction(measured: Sequence[Measured], model: object, request: TuneRequest) -> Callable[[tuple], float]:
    """What the measurements at this shape taught, as a factor on a plan's predicted time by its
    family: each measured plan's ratio of predicted (by the current model) to measured speed-up;
    a family's factor is the median ratio of its measured plans, any other family's the median
    over all. The model is fitted across sizes; this is the part of its error particular to this
    shape and family (e.g. a format that peels here). 1 before anything is measured."""
    ranker = Ranker(request.device, request.dtype, request.cutoff, model=model)
    vendor = ranker.seconds([], request.shape)
    ratios: dict[tuple, list[float]] = {}
    for m in measured:
        predicted = vendor / ranker.seconds(m.candidate.decomps, request.shape, m.candidate.variant,
                                            m.candidate.remainder)
        ratios.setdefault(family(m.candidate), []).append(predicted / m.speedup)
    if not ratios:
        return lambda fam: 1.0
    overall = statistics.median(r for rs in ratios.values() for r in rs)
    per_family = {f: statistics.median(rs) for f, rs in ratios.items()}
    return lambda fam: per_family.get(fam, overall)


def corrected(ranking: list[Candidate], factor: Callable[[tuple], float]) -> list[Candidate]:
    """The ranking with each prediction scaled by its family's :func:`correction` factor."""
    out = []
    for c in ranking:
        r = factor(family(c))
        out.append(replace(c, predicted_s=c.predicted_s * r, predicted_speedup=c.predicted_speedup / r))
    out.sort(key=lambda c: (c.predicted_s, c.names))
    return out


def diverse(ranking: Sequence[Candidate], k: int) -> list[Candidate]:
    """The ``k`` best, at most one per family while other families remain (a round explores
    k families instead of k near-copies of one, which one measurement would already judge)."""
    picked: list[Candidate] = []
    seen: set[tuple] = set()
    for c in ranking:
        if len(picked) == k:
            break
        if family(c) not in seen:
            picked.append(c)
            seen.add(family(c))
    for c in ranking:
        if len(picked) == k:
            break
        if c not in picked:
            picked.append(c)
    return picked


def _rank(structures: list, model: object, request: TuneRequest, keep: int | None = None,
          factor: Callable[[tuple], float] | None = None) -> tuple[list[Candidate], float]:
    """The candidates ranked by the model, each scaled by its family's correction ``factor``; with
    ``keep``, only the ``keep`` best by the (corrected) proxy are ranked by the full model (a
    schedule costs up to a second for a large scheme)."""
    factor = factor or (lambda fam: 1.0)
    variants = request.variants or ("lowmem",)
    if keep is not None and len(structures) > keep:
        from fmmforge.codegen.costmodel import ITEMSIZE

        item = ITEMSIZE.get(request.dtype, 4)

        def proxy(s: tuple) -> float:  # the structure's best layout
            formats = [d.format for _, d in s]
            return min(proxy_seconds([d for _, d in s], request.shape, model, item, v) * factor(family_of(formats, v))
                       for v in variants)

        structures = sorted(structures, key=proxy)[:keep]
    ranking, vendor = rank_candidates(structures, Ranker(request.device, request.dtype, request.cutoff, model=model),
                                      request.shape, variants)
    return corrected(ranking, factor), vendor


def _with_table(model: object, key: object, store: Store) -> object:
    """``model`` with the gemm timings now in the store (the fitted parameters unchanged)."""
    from fmmforge.codegen.costmodel import GemmTable, load_gemm_points

    tables = {}
    for layout, table in (("contiguous", model.gemm), ("leaf", model.leaf)):  # type: ignore[attr-defined]
        points = dict(table.points)
        points.update(load_gemm_points(key, store, layout))  # type: ignore[arg-type]
        tables[layout] = GemmTable(points)
    return replace(model, gemm=tables["contiguous"], leaf=tables["leaf"])  # type: ignore[type-var]


def _already_measured(request: TuneRequest, threads: int, structures: list, store: Store) -> list[Measured]:
    """This machine's records of candidate plans at exactly this shape, dtype and threads (an
    earlier or interrupted tune, or `fmmforge bench`): not measured again, counted for the choice."""
    import json

    from fmmforge.codegen.bench import machine_for
    from fmmforge.codegen.plan import DEFAULT_VARIANT, plan_from_dict
    from fmmforge.codegen.records import current_records

    M, K, N = request.shape
    by_identity = {tuple(d.fingerprint for _, d in s): s for s in structures}
    latest: dict[tuple[str, ...], Measured] = {}
    for r in current_records(store, device=request.device, machine=machine_for(request.device), m=M, k=K, n=N,
                             dtype=request.dtype):
        try:
            plan = plan_from_dict(json.loads(r.plan))
        except (FmmforgeError, ValueError):
            continue
        if (not plan.algorithms or r.threads != threads or plan.backend != "torch"
                or plan.variant not in (request.variants or (DEFAULT_VARIANT,)) or plan.cutoff != request.cutoff):
            continue
        levels = by_identity.get(plan.fingerprints) or _resolved(plan, store)
        if levels is None:
            continue
        c = Candidate(tuple(d for _, d in levels), tuple(n for n, _ in levels), math.nan, math.nan, plan.variant,
                      plan.remainder)
        latest[c.identity] = Measured(c, r.speedup, r.median_s, r.baseline_median_s, plan, r.id)
    return list(latest.values())


def predicted(measured: Sequence[Measured], model: object, request: TuneRequest) -> list[Measured]:
    """``measured`` with every candidate that has no prediction (a record of an earlier run,
    :func:`_already_measured`) predicted by ``model``."""
    ranker = Ranker(request.device, request.dtype, request.cutoff, model=model)
    vendor = ranker.seconds([], request.shape)
    out = []
    for m in measured:
        c = m.candidate
        if math.isnan(c.predicted_s):
            m = replace(m, candidate=ranker.candidate(c.decomps, c.names, request.shape, vendor, c.variant, c.remainder))
        out.append(m)
    return out


def _resolved(plan: object, store: Store) -> tuple[tuple[str, Decomposition], ...] | None:
    """A recorded plan's (name, scheme) levels, resolved by name and matching its fingerprints (a
    plan this run did not collect again, e.g. one of a walk with another seed); None if not."""
    try:
        levels = tuple((n, catalogue.resolve(n, store)) for n in plan.algorithms)  # type: ignore[attr-defined]
    except FmmforgeError:
        return None
    same = tuple(d.fingerprint for _, d in levels) == tuple(plan.fingerprints)  # type: ignore[attr-defined]
    return levels if same else None


def finalists_of(measured: Sequence[Measured], k: int = CONFIRM) -> list[Measured]:
    """``k`` plans to measure again: the fastest measured plan of each of the ``k`` fastest families
    (:func:`family`), fastest first; where fewer families were measured, the next fastest plans
    fill the rest. Plans of one family (e.g. rank-49 <4,4,4> levels that differ in a few terms)
    measure within the noise of one another; measuring three of them again would compare
    near-copies and leave a plan of another family, read once in a slow moment, out of the choice."""
    ordered = sorted(measured, key=lambda m: -m.speedup)
    best: dict[tuple, Measured] = {}
    for m in ordered:
        best.setdefault(family(m.candidate), m)
    chosen = list(best.values())[:k]
    return chosen + [m for m in ordered if all(m is not c for c in chosen)][:k - len(chosen)]


def _finish_measured(result: TuneResult, store: Store, deadline: float, say: Callable, best: list) -> TuneResult:
    """Confirm the finalists, choose, store the choice (or clear it: the vendor matmul)."""
    from fmmforge.codegen.bench import machine_for
    from fmmforge.codegen.choices import clear_choice, shape_class, store_choice

    request = result.request
    finalists = finalists_of(result.measured)
    confirmed = []
    if not result.interrupted and finalists:
        per = result.typical_measure_s()
        fit = len(finalists) if per <= 0 else int((deadline - time.monotonic()) // per)
        if fit < len(finalists):
            result.notes.append(f"budget spent: {len(finalists) - max(fit, 0)} finalist(s) not measured again")
            finalists = finalists[:max(fit, 0)]
        try:
            if finalists:
                say("confirm", 0, len(finalists), f"measuring the {len(finalists)} finalist(s) again, in one run")
                # the finalists were chosen for their first readings (biased up) in different runs:
                # the choice is made on the run that measured them together
                confirmed = _measure([m.candidate for m in finalists], request, store, result.notes)
                result.confirmed += confirmed
        except KeyboardInterrupt:
            result.interrupted = True
    pool = confirmed or finalists
    winner = max(pool, key=lambda m: m.speedup) if pool else None
    cls = shape_class(*request.shape)
    result.best = winner if winner is not None and winner.speedup > request.min_speedup else None
    if request.store_choice and cls is not None and (result.measured or result.best is not None):
        machine = machine_for(request.device)
        if result.best is not None:
            result.choice = store_choice(result.best.plan, machine=machine, shape=cls, speedup=result.best.speedup,
                                         baseline_median_s=result.best.baseline_median_s,
                                         predicted_speedup=result.best.candidate.predicted_speedup, store=store)
        else:
            clear_choice(request.device, machine, request.dtype, cls, store=store)
    elif cls is None:
        result.notes.append(f"{'x'.join(map(str, request.shape))} is below the smallest shape class; "
                            "fmmforge.matmul sends it to the vendor matmul whatever is measured")
    best[0] = result.best.speedup if result.best else best[0]
    say("done", 1, 1, "done")
    return result


def _finish_spec(result: TuneResult, store: Store) -> TuneResult:
    """A spec-only chip: the ranking is the result. Nothing runs there, so nothing is stored as a
    choice (choices are what fmmforge.matmul runs); the best-predicted plan is ``result.ranking[0]``."""
    top = result.ranking[0] if result.ranking else None
    if top is not None and top.predicted_speedup <= result.request.min_speedup:
        result.notes.append("no plan is predicted faster than the standard matmul on this chip")
    return result


# ---------------------------------------------------------------------- a model's shapes
def load_model_callable(spec: str) -> object:
    """``package.module:name``: the torch module ``name`` is, or returns when called with no arguments."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FmmforgeError(f"--for-model {spec!r} is not module:callable; write it like mypkg.models:build")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any failure to import it is their input, said in one line
        raise FmmforgeError(f"cannot import {module_name!r} for --for-model ({type(exc).__name__}: {exc})") from None
    target = getattr(module, attr, None)
    if target is None:
        raise FmmforgeError(f"{module_name!r} has no {attr!r}; give module:callable returning a torch.nn.Module")
    import torch

    if not isinstance(target, torch.nn.Module):
        if not callable(target):
            raise FmmforgeError(f"{spec} is neither a torch.nn.Module nor callable")
        try:
            target = target()
        except Exception as exc:
            raise FmmforgeError(f"calling {spec}() failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(target, torch.nn.Module):
        raise FmmforgeError(f"{spec} gave a {type(target).__name__}, not a torch.nn.Module")
    return target


def linear_shapes(model: object, rows: int) -> list[Shape]:
    """The distinct M×K×N products of the model's nn.Linear layers (x @ W.T) for ``rows`` input
    rows (batch × tokens), largest first: what fmmforge.nn.accelerate would send to fmmforge.matmul."""
    import torch

    shapes = {(rows, m.in_features, m.out_features) for m in model.modules()  # type: ignore[attr-defined]
              if isinstance(m, torch.nn.Linear)}
    return sorted(shapes, key=lambda s: (-math.prod(s), s))
