"""The tuner's policy: how the cost model's predictions become the plans each round measures, and
the finalists the choice is made among (docs/tuning.md). It sees the model only through
codegen.tune.models.CostModel.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from typing import Callable, Sequence

from fmmforge.codegen.costmodel import level_format
from fmmforge.codegen.tune.candidates import INNER_SCHEMES, Structure, layouts
from fmmforge.codegen.tune.models import CostModel
from fmmforge.codegen.tune.request import (
    Candidate, Family, Measured, Shape, TuneRequest, TuneResult, family, family_of, identity,
)
from fmmforge.core.decomposition import Decomposition

PROXY_KEEP = 8  # plans per measured one that the full model ranks after the proxy's first cut
CONFIRM = 3  # finalists measured again before the choice: the fastest plan of each of the 3 fastest families
Factor = Callable[[Family], float]  # a family's correction of the model's predicted time (correction)


def candidate(model: CostModel, decomps: tuple[Decomposition, ...], names: tuple[str, ...], shape: Shape,
              vendor_s: float, variant: str = "lowmem", remainder: str = "peel") -> Candidate:
    """The plan as a :class:`Candidate` with ``model``'s prediction (``vendor_s``: the vendor's time)."""
    t = model.predict_s(decomps, shape, variant, remainder)
    return Candidate(decomps, names, t, vendor_s / t, variant, remainder)


def rank_candidates(structures: Sequence[Structure], model: CostModel,
                    shape: Shape, variants: Sequence[str] = ("lowmem",)) -> tuple[list[Candidate], float]:
    """Every structure in each of its :func:`layouts`, best predicted first; and the vendor's time."""
    vendor = model.predict_s([], shape)
    out = []
    for levels in structures:
        decomps = tuple(d for _, d in levels)
        for variant, remainder in layouts(decomps, shape, variants, model.analytic):
            out.append(candidate(model, decomps, tuple(n for n, _ in levels), shape, vendor, variant, remainder))
    out.sort(key=lambda c: (c.predicted_s, c.names))
    return out, vendor


def rank(structures: Sequence[Structure], model: CostModel, request: TuneRequest, keep: int | None = None,
         factor: Factor | None = None) -> tuple[list[Candidate], float]:
    """The candidates ranked by the model, each scaled by its family's correction ``factor``; with
    ``keep``, only the ``keep`` best by the (corrected) estimate (CostModel.estimate_s) are ranked by the full model (a
    schedule costs up to a second for a large scheme)."""
    scale: Factor = factor or (lambda fam: 1.0)
    variants = request.variants or ("lowmem",)
    if keep is not None and len(structures) > keep:

        def proxy(s: Structure) -> float:  # the structure's best layout
            formats = [level_format(d) for _, d in s]
            return min(model.estimate_s([d for _, d in s], request.shape, v) * scale(family_of(formats, v))
                       for v in variants)

        structures = sorted(structures, key=proxy)[:keep]
    ranking, vendor = rank_candidates(structures, model, request.shape, variants)
    return corrected(ranking, scale), vendor


def correction(measured: Sequence[Measured], model: CostModel, request: TuneRequest) -> Factor:
    """What the measurements at this shape taught, as a factor on a plan's predicted time by its
    family: each measured plan's ratio of predicted (by the current model) to measured speed-up;
    a family's factor is the median ratio of its measured plans, any other family's the median
    over all. The model is fitted across sizes; this is the part of its error particular to this
    shape and family (e.g. a format that peels here). 1 before anything is measured."""
    vendor = model.predict_s([], request.shape)
    ratios: dict[Family, list[float]] = {}
    for m in measured:
        predicted = vendor / model.predict_s(m.candidate.decomps, request.shape, m.candidate.variant,
                                             m.candidate.remainder)
        ratios.setdefault(family(m.candidate), []).append(predicted / m.speedup)
    if not ratios:
        return lambda fam: 1.0
    overall = statistics.median(r for rs in ratios.values() for r in rs)
    per_family = {f: statistics.median(rs) for f, rs in ratios.items()}
    return lambda fam: per_family.get(fam, overall)


def corrected(ranking: list[Candidate], factor: Factor) -> list[Candidate]:
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
    seen: set[Family] = set()
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


def anchors(structures: Sequence[Structure], model: CostModel, request: TuneRequest,
            factor: Factor | None = None) -> list[Candidate]:
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

    def divides(levels: Structure) -> bool:
        return all(s % math.prod(level_format(d)[i] for _, d in levels) == 0 for i, s in enumerate(shape))

    classical = [s for s in structures if all(n == INNER_SCHEMES[0] for n, _ in s)]
    dividing = [s for s in structures if divides(s) and s not in classical]
    out = []
    for group, count, every_layout in ((classical, 2, True), (dividing, 1, False)):
        taken: dict[tuple[str, ...], set[str]] = {}  # distinct plans, best first -> the layouts taken
        if not group:
            continue
        for c in rank(group, model, request, PROXY_KEEP, factor)[0]:
            plan = identity(c.decomps, "lowmem")
            if plan not in taken and len(taken) < count:
                taken[plan] = set()
            if plan in taken and (c.variant not in taken[plan] if every_layout else not taken[plan]):
                taken[plan].add(c.variant)
                out.append(c)
    return out


def predicted(measured: Sequence[Measured], model: CostModel, request: TuneRequest) -> list[Measured]:
    """``measured`` with every candidate that has no prediction (a record of an earlier run,
    codegen.tune.loop.already_measured) predicted by ``model``."""
    vendor = model.predict_s([], request.shape)
    out = []
    for m in measured:
        c = m.candidate
        if math.isnan(c.predicted_s):
            m = replace(m, candidate=candidate(model, c.decomps, c.names, request.shape, vendor, c.variant, c.remainder))
        out.append(m)
    return out


def fits(result: TuneResult, deadline: float, wanted: int) -> int:
    """How many of ``wanted`` candidates one more round can measure and still leave the time of
    the finalists' re-measurement (every candidate counted at the typical cost so far)."""
    per = result.typical_measure_s()
    if per <= 0:
        return wanted
    left = deadline - time.monotonic() - confirm_s(result, wanted)
    return max(0, min(wanted, int(left // per)))


def confirm_s(result: TuneResult, more: int = 0) -> float:
    """Time the finalists' re-measurement needs: as many as there will be (at most CONFIRM)."""
    return min(CONFIRM, len(result.measured) + more) * result.typical_measure_s()


def finalists_of(measured: Sequence[Measured], k: int = CONFIRM) -> list[Measured]:
    """``k`` plans to measure again: the fastest measured plan of each of the ``k`` fastest families
    (:func:`family`), fastest first; where fewer families were measured, the next fastest plans
    fill the rest. Plans of one family (e.g. rank-49 <4,4,4> levels that differ in a few terms)
    measure within the noise of one another; measuring three of them again would compare
    near-copies and leave a plan of another family, read once in a slow moment, out of the choice."""
    ordered = sorted(measured, key=lambda m: -m.speedup)
    best: dict[Family, Measured] = {}
    for m in ordered:
        best.setdefault(family(m.candidate), m)
    chosen = list(best.values())[:k]
    return chosen + [m for m in ordered if all(m is not c for c in chosen)][:k - len(chosen)]
