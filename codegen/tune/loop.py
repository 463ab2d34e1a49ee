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

The loop is a subsystem of codegen: it sees its cost model through one interface
(codegen.tune.models.CostModel: the calibrated, the prior and the analytic TPU model), and is
handed what lies above codegen: the search ``engine`` (a ``core.contracts.Engine``), the codegen
``backend`` calibration measures with, and the ``measure`` function that times candidates
(:func:`bench_measure` by default). The application (core.app.tune_commands.tune) hands them in.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Callable, Protocol, Sequence

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.costmodel import current_key, find_model, level_format
from fmmforge.codegen.plan import DEFAULT_VARIANT, DTYPES, Plan
from fmmforge.codegen.tune.candidates import (
    INNER_SCHEMES, Named, Structure, collect_schemes, formats_for, layouts, level_structures, top_schemes,
)
from fmmforge.codegen.tune.models import CostModel, FittedModel, fit_model, measure_leaves, trusted_or_prior
from fmmforge.codegen.tune.policy import (
    PROXY_KEEP, anchors, correction, diverse, finalists_of, fits, predicted, rank, rank_candidates,
)
from fmmforge.codegen.tune.request import (
    DEFAULT_DIMS, Candidate, Measured, Progress, TuneProgress, TuneRequest, TuneResult, identity,
)
from fmmforge.core import catalogue
from fmmforge.core.contracts import Engine
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Provenance, Store

Say = Callable[[str, int, int, str], None]  # phase, done, total, text


class Measure(Protocol):
    """Times candidates at the request's shape in one run and records them; a candidate that fails
    is left out with a note in ``notes``; ``say`` hears the run's steps."""

    def __call__(self, cands: Sequence[Candidate], request: TuneRequest, store: Store, notes: list[str],
                 say: Callable[[str], None] | None = None) -> list[Measured]: ...


def tune(request: TuneRequest, *, engine: Engine | None, backend: CodegenBackend | None,
         measure: Measure | None = None, store: Store | None = None, progress: Progress | None = None) -> TuneResult:
    """Run the tuning loop (module docstring) with ``engine`` collecting schemes (None: only the
    known ones), calibration measuring with ``backend`` and candidates timed by ``measure``
    (default :func:`bench_measure` with ``backend``); the result says what was measured and chosen."""
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
            lambda text, d, t: say("search", d, t, text), engine)
        result.schemes = len(schemes)
        inner = [(n, catalogue.resolve(n)) for n in INNER_SCHEMES]
        top = top_schemes(schemes.values(), inner, formats)
        structures = level_structures(top, inner, shape, request)
        if device.kind == "spec":
            from fmmforge.hardware.chips import load_chip

            from fmmforge.hardware.tpu_model import TpuCostModel

            chip = load_chip(device.name)
            chip.peak_flops(request.dtype)  # a dtype the chip has no rate for: one clear error
            analytic = TpuCostModel(chip, request.dtype)
            result.ranking, result.vendor_predicted_s = rank_candidates(structures, analytic, shape,
                                                                        request.variants_for(device.kind))
            result.candidates, result.model, result.spec_only = len(result.ranking), analytic.name, True
            result.seconds = time.monotonic() - started
            say("done", 1, 1, "ranked by the analytic model; nothing is measured on a spec-only chip")
            return _finish_spec(result)
        if backend is None:
            raise ValueError("a tune on a device that runs kernels needs the codegen backend to measure with")
        measure = measure or bench_measure(backend)
        _measure_rounds(request, result, structures, store, deadline, say, best, backend, measure)
    except KeyboardInterrupt:
        result.interrupted = True
    finish(result, store, deadline, say, best, measure)
    result.seconds = time.monotonic() - started
    return result


def _measure_rounds(request: TuneRequest, result: TuneResult, structures: Sequence[Structure], store: Store,
                    deadline: float, say: Say, best: list[float | None], backend: CodegenBackend,
                    measure: Measure) -> None:
    """Rank, measure the top k, refit, repeat until the deadline (Ctrl-C propagates). A stored
    model whose fit is poor does not rank: the prior model does, with a note (codegen.tune.models)."""
    key = current_key(request.device, request.dtype, request.threads)
    stored = find_model(key, store)
    model: CostModel
    if stored is None:
        say("calibrate", 0, 1, "no cost model for this device yet: calibrating")
        left = max(0.0, deadline - time.monotonic())
        model = fit_model(key, store, request.cutoff, backend, left * request.calibrate_share,
                          lambda phase, d, t, text: say("calibrate", d, t, f"{phase}: {text}"), result.notes)
    else:
        model = trusted_or_prior(stored, store, request.cutoff, result.notes)
    earlier = already_measured(request, key.threads, structures, store)
    result.measured += earlier
    measured_ids = {m.candidate.identity for m in earlier}
    if earlier:
        best[0] = max(m.speedup for m in earlier)
        result.notes.append(f"{len(earlier)} candidate(s) measured at this shape before are not measured again")
    measure_leaves(key, [], request.shape, request.cutoff, store, math.inf)  # at least the vendor time at the shape
    model = model.with_tables(store)
    if earlier:  # their predictions, by the model as it stands now (for the finalists' table)
        result.measured[:] = predicted(result.measured, model, request)
    while time.monotonic() < deadline and fits(result, deadline, 1):
        say("rank", 0, 1, f"ranking {len(structures)} plans")
        fresh = [s for s in structures if any(
            identity([d for _, d in s], v, r) not in measured_ids
            for v, r in layouts([d for _, d in s], request.shape, request.variants or ("lowmem",)))]
        if not fresh:
            break
        keep = PROXY_KEEP * request.top_k
        factor = correction(result.measured, model, request)
        ranking = rank(fresh, model, request, keep, factor)[0]
        head = [(c.decomps, c.variant, c.remainder) for c in ranking[:3 * request.top_k]]
        measure_leaves(key, head, request.shape, request.cutoff, store, deadline)  # measured leaves, then rank again
        model = model.with_tables(store)
        factor = correction(result.measured, model, request)
        ranking, result.vendor_predicted_s = rank(fresh, model, request, keep, factor)
        result.ranking, result.model = ranking, model.name
        result.candidates = len(structures)
        todo = diverse([c for c in ranking if c.identity not in measured_ids], request.top_k)
        if not result.rounds:  # the first round also measures the anchors
            taken = measured_ids | {c.identity for c in todo}
            todo += [c for c in anchors(structures, model, request, factor) if c.identity not in taken]
        room = fits(result, deadline, len(todo))  # the finalists are measured again at the end: leave time
        if result.measured and room < 1:
            break
        todo = todo[:max(room, 1)]
        result.rounds += 1
        for c in todo:
            measured_ids.add(c.identity)
        names = ", ".join(f"{c.label} ({c.predicted_speedup:.3f}x predicted)" for c in todo)
        say("measure", 0, len(todo), f"round {result.rounds}: {names}")
        t0 = time.monotonic()
        got = measure(todo, request, store, result.notes,
                      lambda text: say("measure", 0, len(todo), f"round {result.rounds}: {text}"))
        result.measure_seconds += [(time.monotonic() - t0) / len(todo)] * len(todo)
        result.measured += got
        if got:
            best[0] = max(best[0] or 0.0, *(m.speedup for m in got))
        model = fit_model(key, store, request.cutoff, backend, 0.0, None, result.notes)  # the new records refit it


def bench_measure(backend: CodegenBackend) -> Measure:
    """The measuring function of a tune: the candidates measured in one run with ``backend``
    (codegen.bench.measure_many: one float64 reference, every kernel checked against it, all timed
    round-robin with one vendor run), each recorded at once; a candidate that fails is left out
    with a note."""

    def measure(cands: Sequence[Candidate], request: TuneRequest, store: Store, notes: list[str],
                say: Callable[[str], None] | None = None) -> list[Measured]:
        from fmmforge.codegen.bench import measure_many

        plans = [plan_of(c, request, store) for c in cands]
        recs = measure_many([(p, list(c.decomps)) for p, c in zip(plans, cands)], request.shape,
                            backend=backend, threads=request.threads, rounds=request.pairs,
                            min_sample_s=0.05, store=store, progress=say,
                            on_error=lambda plan, exc: notes.append(f"{plan.describe()}: {exc}"))
        return [Measured(c, r.speedup, r.median_s, r.baseline_median_s, p, r.id)
                for c, p, r in zip(cands, plans, recs) if r is not None]

    return measure


def plan_name(name: str, d: Decomposition, store: Store) -> str:
    """A name ``make_plan`` resolves to exactly ``d``: the catalogue's when it is that scheme, else a
    store name (the scheme is stored, verified again by the store, with tune's provenance)."""
    try:
        if catalogue.resolve(name, store).fingerprint == d.fingerprint:
            return name
    except FmmforgeError:
        pass
    label = f"tune-{'x'.join(map(str, level_format(d)))}-r{d.rank}-{d.fingerprint[:10]}"
    store.add(d, Provenance(source="tune", params={"from": name}), name=label)
    return label


def plan_of(c: Candidate, request: TuneRequest, store: Store) -> Plan:
    """The torch plan that runs ``c`` (its schemes named so that the plan resolves them exactly)."""
    names = tuple(plan_name(n, d, store) for n, d in zip(c.names, c.decomps))
    return Plan(names, tuple(d.fingerprint for d in c.decomps), "torch", request.dtype, request.device, request.cutoff,
                c.variant, c.remainder)


def already_measured(request: TuneRequest, threads: int, structures: Sequence[Structure], store: Store
                     ) -> list[Measured]:
    """This machine's records of candidate plans at exactly this shape, dtype and threads (an
    earlier or interrupted tune, or `fmmforge bench`): not measured again, counted for the choice."""
    from fmmforge.codegen.bench import machine_for
    from fmmforge.codegen.plan import plan_from_dict
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


def _resolved(plan: Plan, store: Store) -> tuple[Named, ...] | None:
    """A recorded plan's (name, scheme) levels, resolved by name and matching its fingerprints (a
    plan this run did not collect again, e.g. one of a walk with another seed); None if not."""
    try:
        levels = tuple((n, catalogue.resolve(n, store)) for n in plan.algorithms)
    except FmmforgeError:
        return None
    same = tuple(d.fingerprint for _, d in levels) == tuple(plan.fingerprints)
    return levels if same else None


def finish(result: TuneResult, store: Store, deadline: float, say: Say, best: list[float | None],
           measure: Measure | None = None) -> TuneResult:
    """Confirm the finalists (by ``measure``; none when interrupted or nothing measures), choose,
    store the choice (or clear it: the vendor matmul)."""
    from fmmforge.codegen.bench import machine_for
    from fmmforge.codegen.choices import clear_choice, shape_class, store_choice

    request = result.request
    finalists = finalists_of(result.measured)
    confirmed: list[Measured] = []
    if not result.interrupted and finalists and measure is not None:
        per = result.typical_measure_s()
        fit = len(finalists) if per <= 0 else int((deadline - time.monotonic()) // per)
        again = finalists[:max(fit, 0)]
        if len(again) < len(finalists):
            result.notes.append(f"budget spent: {len(finalists) - len(again)} finalist(s) not measured again"
                                + ("" if again else "; the choice rests on the first readings"))
        try:
            if again:
                say("confirm", 0, len(again), f"measuring the {len(again)} finalist(s) again, in one run")
                # the finalists were chosen for their first readings (biased up) in different runs:
                # the choice is made on the run that measured them together
                confirmed = measure([m.candidate for m in again], request, store, result.notes)
                result.confirmed += confirmed
        except KeyboardInterrupt:
            result.interrupted = True
    # none confirmed (no time left, interrupted, nothing to measure with): the first readings decide
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


def _finish_spec(result: TuneResult) -> TuneResult:
    """A spec-only chip: the ranking is the result. Nothing runs there, so nothing is stored as a
    choice (choices are what fmmforge.matmul runs); the best-predicted plan is ``result.ranking[0]``."""
    top = result.ranking[0] if result.ranking else None
    if top is not None and top.predicted_speedup <= result.request.min_speedup:
        result.notes.append("no plan is predicted faster than the standard matmul on this chip")
    return result
