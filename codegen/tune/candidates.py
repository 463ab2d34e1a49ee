"""The candidates of a tune: the schemes of the formats that fit the shape (known ones and what a
search engine collects from them), the shortlist of each format, and the plans built from them,
each in every kernel layout and remainder strategy it can take at the shape (docs/tuning.md).

The engine comes in from the caller (a ``core.contracts.Engine``): codegen does not look plugins up.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Iterable, Sequence

from fmmforge.codegen import layouts as kernel_layouts
from fmmforge.codegen.costmodel import fused_units, level_format, side_passes
from fmmforge.codegen.plan import DEFAULT_REMAINDER, REMAINDERS
from fmmforge.codegen.tune.request import DEFAULT_DIMS, Format, Shape, TuneRequest
from fmmforge.core import catalogue, transforms
from fmmforge.core.contracts import Engine
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store

__all__ = ["INNER_SCHEMES", "PER_FORMAT", "FUSED_PER_FORMAT", "PADDED_LAYOUTS", "Named", "Structure", "orient",
           "formats_for", "starting_schemes", "collect_schemes", "top_schemes", "level_structures", "layouts",
           "side_passes", "fused_units"]

INNER_SCHEMES = ("strassen-winograd", "strassen")
PER_FORMAT = 24  # schemes per format that become plans (lowest rank, then fewest additions)
FUSED_PER_FORMAT = 8  # and beside them, those of fewest blocks moved by the fused schedule
Named = tuple[str, Decomposition]  # a scheme with its label (a catalogue name, or where tune found it)
Structure = tuple[Named, ...]  # a plan's levels, top first


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


def starting_schemes(fmt: Format, store: Store) -> list[Named]:
    """Named Z schemes of format ``fmt`` known without searching: built-ins, DeepMind's over Z
    (any orientation), Kronecker products of 2×2×2 schemes with a half-size one, the store's best."""
    from fmmforge.core import alphatensor

    found: list[Named] = []
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
        inner = [(n, d) for n, d in _known_z(half) if d.rank < math.prod(half)]
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


def _known_z(fmt: Format) -> list[Named]:
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
                    report: Callable[[str, int, int], None], engine: Engine | None) -> tuple[dict[str, Named], int]:
    """Every scheme per fingerprint (with a label): the starting schemes and what ``engine`` (None:
    no search) finds from each of them within ``deadline``; and how many the engine found."""
    from fmmforge.core.contracts import Budget, SearchEvents, SearchRequest

    schemes: dict[str, Named] = {}
    starts: list[Named] = []
    for fmt in formats:
        for name, d in starting_schemes(fmt, store):
            schemes.setdefault(d.fingerprint, (name, d))
            starts.append((name, d))
    found_total = 0
    if request.collect == 0 or not starts or engine is None:
        return schemes, 0
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


def _shortlist(schemes: Iterable[Named], per_format: int,
               fused_per_format: int | None = None) -> list[Named]:
    """Per format, the ``per_format`` schemes of the lowest rank, then fewest element-wise passes
    of the low-memory schedule the kernels use (:func:`side_passes`), and beside them the
    ``fused_per_format`` (default :data:`FUSED_PER_FORMAT`) of the lowest rank, then fewest blocks
    moved by the fused schedule (:func:`fused_units`): the two layouts cost a scheme's additions
    differently, and the fused one is the faster at 8192 on the Intel Xeon (docs/costmodel.md)."""
    fused_per_format = FUSED_PER_FORMAT if fused_per_format is None else fused_per_format
    by_format: dict[Format, list[Named]] = {}
    for name, d in schemes:
        by_format.setdefault(level_format(d), []).append((name, d))
    out = []
    for fmt in sorted(by_format):
        group = sorted(by_format[fmt], key=lambda x: (x[1].rank, sum(side_passes(x[1])), x[0]))
        kept = group[:per_format]
        have = {name for name, _ in kept}
        fused = sorted(by_format[fmt], key=lambda x: (x[1].rank, sum(fused_units(x[1])), x[0]))
        kept += [x for x in fused if x[0] not in have][:fused_per_format]
        out += kept
    return out


def top_schemes(schemes: Iterable[Named], inner: Sequence[Named],
                formats: Sequence[Format]) -> list[Named]:
    """The schemes plans start from: the :func:`_shortlist` of each format, and the inner
    (classical) schemes of those formats whatever the shortlist's estimate says: Strassen–Winograd's
    passes come out lowest only with the schedule's order search, and the first round's anchors
    measure the classical recursion."""
    top = _shortlist(schemes, PER_FORMAT)
    have = {d.fingerprint for _, d in top}
    return top + [x for x in inner if level_format(x[1]) in formats and x[1].fingerprint not in have]


def level_structures(top: Sequence[Named], inner: Sequence[Named],
                     shape: Shape, request: TuneRequest) -> list[Structure]:
    """Plans: a top scheme, then 0..max_levels-1 more levels of it or of an inner scheme, while the
    leaf blocks stay at least ``min_leaf``."""
    plans = []
    for t in top:
        below = [t] + [x for x in inner if x[1].fingerprint != t[1].fingerprint]
        for depth in range(1, request.max_levels + 1):
            for rest in (itertools.product(below, repeat=depth - 1) if depth > 1 else [()]):
                levels = (t, *rest)
                dims = [math.prod(level_format(d)[i] for _, d in levels) for i in range(3)]
                if all(s // x >= request.min_leaf for s, x in zip(shape, dims)):
                    plans.append(levels)
    return plans


# The layouts the tuner offers padded (codegen.layouts.Layout.tune_padded, and why)
PADDED_LAYOUTS = tuple(x.name for x in kernel_layouts.LAYOUTS if x.tune_padded)


def layouts(decomps: Sequence[Decomposition], shape: Shape, variants: Sequence[str],
            spec: bool = False) -> list[tuple[str, str]]:
    """(variant, remainder) pairs a plan is a candidate in at ``shape``: every layout, and where
    the shape does not divide by the plan's levels every remainder strategy the layout has
    (peeling; padding, codegen.runtime.runtime_pad, for :data:`PADDED_LAYOUTS`; uneven blocks,
    codegen.runtime.runtime_split; not on a spec-only chip, whose model peels)."""
    divides = all(s % math.prod(level_format(d)[i] for d in decomps) == 0 for i, s in enumerate(shape))
    remainders = (DEFAULT_REMAINDER,) if divides or spec else REMAINDERS
    return [(v, r) for v in variants for r in remainders
            if (r == DEFAULT_REMAINDER or v in kernel_layouts.with_remainder(r)) and (r != "pad" or v in PADDED_LAYOUTS)]
