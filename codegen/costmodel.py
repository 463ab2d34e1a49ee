"""The calibrated cost model: the time of (decomposition(s), plan, M, K, N, dtype) on one device,
predicted from what the time is made of (docs/costmodel.md).

* **leaf gemms** -- the vendor matmul's time at each leaf block shape, read from a table of
  torch.mm timings measured on a grid of shapes (:data:`GRID`: 1, 2, 3, 4, 6, 8, 12, ... -- the
  powers of two and 1.5 times them) and interpolated piecewise linearly in log space (log time
  against log m, log k, log n); a corner never measured is estimated from the nearest measured
  one scaled by the flop ratio. A kernel's leaves run on blocks of larger matrices (views whose
  rows are the parent's, at offsets that need not be aligned, accumulating into blocks of C),
  which MKL runs up to 30 % slower than the same product on contiguous operands of their own
  (341³ blocks of a 1023² matrix, measured); so the leaves are read from a second table timed in
  that layout (:data:`LEAF_LAYOUT`), and only a plan that does not split (the vendor gemm itself)
  from the contiguous one;
* **element-wise passes** -- the bytes each pass of the schedule (codegen.schedule.schedule_level)
  reads and writes at its block size, over one of two effective bandwidths: a pass whose blocks
  fit in the cores' L2 caches together (:func:`cache_bytes`) runs from cache, a larger one
  streams from L3/memory; plus a per-pass overhead;
* **fused passes** -- for a plan of the *fused* variant (codegen.fused), the bytes each compiled pass
  of the level's fused schedule moves (a group's A-side sums, where the kernel forms them in one
  pass, reading each input block once, the same for B, and the C update over the products), at
  their own cost per byte: a tiled numba pass over many blocks does not stream like one torch
  addition; sums the kernel forms by torch passes are priced as element-wise passes;
* **per-call overhead** -- a constant.

``t = a·gemm_s + cached_bytes·c_cached + streamed_bytes·c_streamed + fused_bytes·c_fused + c_pass·passes
+ c_call``; the six are fitted by non-negative least squares on relative errors (:func:`fit`). The model is stored per
(device, machine key, threads, dtype) in this module's table (:data:`TABLES`) with
:data:`MODEL_FORMAT`; a model of another machine, library or format is never used.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from fmmforge.codegen import layouts as kernel_layouts
from fmmforge.codegen.plan import REMAINDERS
from fmmforge.codegen.schedule import Add2, Axpy, Product, Scale, columns, schedule_level
from fmmforge.core.contracts import RewardContext, RewardResult
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import OwnedTables, Store

if TYPE_CHECKING:
    from fmmforge.codegen.fused import FusedLevel

MODEL_FORMAT = 8  # 2: two bandwidths (cached and streamed passes) and the cache size; 3: a leaf-layout gemm table;
# 4: the fused variant's passes (their bytes at their own cost); 5: a fused level's sums are torch
# passes (cached or streamed bytes), only its C update is fused bytes; 6: a group's sums by the
# compiled pass (fused bytes) or torch passes, as the kernel forms them; 7: the torch passes of a
# fused kernel's sums have an extra cost per pass of their own; 8: the quality says whether the fit
# is good or poor (Quality.verdict)
# The formats this fmmforge reads: a format-7 model is the same model without the verdict, which
# is recomputed from its stored held-out error and repeat floor on reading (Quality.verdict).
READABLE_FORMATS = (7, 8)
ITEMSIZE = {"float32": 4, "float64": 8}
Shape = tuple[int, int, int]
FEATURES = ("gemm_s", "cached_bytes", "streamed_bytes", "fused_bytes", "passes", "fused_torch_passes", "calls")
PARAMETERS = ("gemm_scale", "s_per_cached_byte", "s_per_streamed_byte", "s_per_fused_byte", "s_per_pass",
              "s_per_fused_torch_pass", "s_per_call")
# the kernel layouts the model describes, each level priced by the function its codegen.layouts.Layout
# names (``passes``: lowmem_level, fused_level, parallel_level; _Walker._run calls it)
VARIANTS = kernel_layouts.modelled()
# the layouts whose records the fit uses (Layout.fitted): the parallel one runs level 0's products on
# single-threaded workers, whose leaves and passes overlap in a way these parameters do not price; it
# is predicted as its walk (level 0's per-product passes, the low-memory levels below) and the tuner's
# measured per-family correction (codegen.tune.policy.correction) scales it
FITTED_VARIANTS = kernel_layouts.fitted()
DEFAULT_L2_BYTES = 1 << 20  # per core, when the machine does not say (sysfs)


def _grid(limit: int = 1 << 24) -> list[int]:
    out, p = [], 1
    while p <= limit:
        out += [p] + ([p * 3 // 2] if p >= 2 else [])
        p *= 2
    return sorted(set(out))


GRID = _grid()  # block sides at which the vendor gemm is measured

TABLES = OwnedTables("codegen.costmodel", (
    """
        CREATE TABLE IF NOT EXISTS gemm_timings (
            device TEXT NOT NULL, machine TEXT NOT NULL, threads INTEGER NOT NULL, dtype TEXT NOT NULL,
            m INTEGER NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL,
            seconds REAL NOT NULL, created_at TEXT NOT NULL,
            PRIMARY KEY (device, machine, threads, dtype, m, k, n)
        );
        CREATE TABLE IF NOT EXISTS cost_models (
            device TEXT NOT NULL, machine TEXT NOT NULL, threads INTEGER NOT NULL, dtype TEXT NOT NULL,
            format INTEGER NOT NULL, model TEXT NOT NULL, created_at TEXT NOT NULL,
            PRIMARY KEY (device, machine, threads, dtype)
        );
        """,
    """
        CREATE TABLE IF NOT EXISTS leaf_gemm_timings (
            device TEXT NOT NULL, machine TEXT NOT NULL, threads INTEGER NOT NULL, dtype TEXT NOT NULL,
            m INTEGER NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL,
            seconds REAL NOT NULL, created_at TEXT NOT NULL,
            PRIMARY KEY (device, machine, threads, dtype, m, k, n)
        );
        """,
))
# How the leaf table's gemms are timed: each product of an m×k by k×n leaf is one block product
# C_ij += A_ik·B_kj of a LEAF_LAYOUT-fold larger product (views into the parents, as a level of a
# kernel takes them); a sample runs all LEAF_LAYOUT³ block products and counts their mean.
LEAF_LAYOUT = 2
GEMM_TABLES = {"contiguous": "gemm_timings", "leaf": "leaf_gemm_timings"}


@dataclass(frozen=True)
class ModelKey:
    """What a model is valid for: the device, the machine (CPU, cores, torch, BLAS), threads, dtype."""

    device: str
    machine: str
    threads: int
    dtype: str

    def describe(self) -> str:
        return f"{self.device} ({self.machine.split('|')[0]}, {self.threads} threads, {self.dtype})"


def current_key(device: str, dtype: str, threads: int | None = None) -> ModelKey:
    """The key of ``device`` on this machine now (threads: torch's current count unless given)."""
    import torch

    from fmmforge.codegen.bench import machine_for

    if dtype not in ITEMSIZE:
        raise FmmforgeError(f"unknown dtype {dtype!r}; use one of {', '.join(ITEMSIZE)}")
    return ModelKey(device, machine_for(device), int(threads or torch.get_num_threads()), dtype)


# ---------------------------------------------------------------------- the gemm table
def _bracket(x: int) -> tuple[int, int]:
    """The grid values just below and above ``x`` (equal when ``x`` is on the grid)."""
    i = bisect.bisect_left(GRID, x)
    if i < len(GRID) and GRID[i] == x:
        return x, x
    return GRID[max(i - 1, 0)], GRID[min(i, len(GRID) - 1)]


def corners(shape: Shape) -> set[Shape]:
    """The grid shapes whose gemm times interpolate the time at ``shape``."""
    return set(itertools.product(*(sorted(set(_bracket(x))) for x in shape)))


@dataclass
class GemmTable:
    """Measured vendor-gemm seconds at grid shapes; :meth:`seconds` interpolates in log space."""

    points: dict[Shape, float] = field(default_factory=dict)

    def _at(self, corner: Shape) -> float:
        t = self.points.get(corner)
        if t is not None:
            return t
        if not self.points:
            raise FmmforgeError("the cost model has no vendor-gemm timings; run `fmmforge calibrate` again")
        lc = [math.log(x) for x in corner]
        near = min(self.points, key=lambda s: sum((math.log(a) - b) ** 2 for a, b in zip(s, lc)))
        return self.points[near] * math.prod(corner) / math.prod(near)

    def seconds(self, shape: Shape) -> float:
        """The vendor gemm's time for an m×k by k×n product (0 for an empty one)."""
        if min(shape) <= 0:
            return 0.0
        if shape in self.points:
            return self.points[shape]
        log_t = 0.0
        brackets = [_bracket(x) for x in shape]
        for corner in corners(shape):
            weight = 1.0
            for x, c, (lo, hi) in zip(shape, corner, brackets):
                if lo == hi:
                    continue
                u = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
                weight *= u if c == hi else 1.0 - u
            if weight:
                log_t += weight * math.log(self._at(corner))
        return math.exp(log_t)


# ---------------------------------------------------------------------- features
def cache_bytes(threads: int, cpu_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The cache an element-wise pass on ``threads`` cores can run from: their L2 caches together
    (per-core L2 from sysfs, :data:`DEFAULT_L2_BYTES` when the machine does not say)."""
    from pathlib import Path

    per_core = DEFAULT_L2_BYTES
    for index in sorted(Path(cpu_dir).glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                text = (index / "size").read_text().strip().upper()
                units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
                per_core = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        except (OSError, ValueError, IndexError):
            continue
    return per_core * max(1, int(threads))


@dataclass(frozen=True)
class Features:
    """What one call is made of: leaf-gemm seconds (from the table), bytes the element-wise passes
    move (those whose blocks fit in cache and those that stream; the fused variant's compiled
    passes apart), the number of passes, how many of them are torch passes forming a fused
    kernel's sums (counted in ``passes`` too: they cost the same plus an extra of their own), and
    the number of calls (1)."""

    gemm_s: float = 0.0
    cached_bytes: float = 0.0
    streamed_bytes: float = 0.0
    fused_bytes: float = 0.0
    passes: int = 0
    fused_torch_passes: int = 0
    calls: int = 0

    @property
    def bytes(self) -> float:
        return self.cached_bytes + self.streamed_bytes + self.fused_bytes

    def __add__(self, other: "Features") -> "Features":
        return Features(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def times(self, k: int) -> "Features":
        return Features(*(a * k for a in self.astuple()))

    def astuple(self) -> tuple:
        return (self.gemm_s, self.cached_bytes, self.streamed_bytes, self.fused_bytes, self.passes,
                self.fused_torch_passes, self.calls)

    def vector(self) -> np.ndarray:
        return np.array(self.astuple(), dtype=float)


def pass_blocks(op: object) -> int:
    """Blocks one element-wise pass reads plus writes: dst = x + c·y and dst += c·x read two and
    write one; dst = c·x reads one and writes one; zeroing writes one."""
    if isinstance(op, (Add2, Axpy)):
        return 3
    if isinstance(op, Scale):
        return 1 if op.coef == 0 else 2
    return 0


def _block_elements(kind: str, bm: int, bk: int, bn: int) -> int:
    return {"A": bm * bk, "S": bm * bk, "B": bk * bn, "T": bk * bn, "C": bm * bn, "P": bm * bn}[kind]


def level_passes(d: Decomposition, mode: str, block: Shape, itemsize: int, cache: int,
                 split: bool = False) -> Features:
    """The passes of one level of ``d``'s schedule in ``mode`` at block size ``block`` = (bm, bk,
    bn), products excluded: a pass whose bytes (its blocks read and written) are at most
    ``cache`` counts as cached, a larger one as streamed. ``split``: the schedule for uneven
    blocks (codegen.runtime.runtime_split), priced at the full block size (its strips are a row or a
    column)."""
    return sum((element_pass(pass_blocks(op) * _block_elements(op.dst.kind, *block) * itemsize, cache)
                for op in schedule_level(d, mode, split=split).ops if not isinstance(op, Product)), Features())


def element_pass(moved: int, cache: int) -> Features:
    """One torch element-wise pass moving ``moved`` bytes: cached when they fit in ``cache``, else streamed."""
    return Features(cached_bytes=moved, passes=1) if moved <= cache else Features(streamed_bytes=moved, passes=1)


@functools.lru_cache(maxsize=1024)
def _fused_level(d: Decomposition, mode: str) -> FusedLevel:
    from fmmforge.codegen.fused import fused_level  # numba and torch: only when a fused plan is costed

    return fused_level(d, mode)


def fused_level_passes(d: Decomposition, mode: str, block: Shape, itemsize: int, cache: int
                       ) -> tuple[Features, dict[str, int]]:
    """The element-wise passes of one level of ``d``'s fused schedule (codegen.fused.fused_level) in
    ``mode`` at ``block`` = (bm, bk, bn), and its products' modes (mode -> count). A group's sums are
    formed as the kernel forms them (codegen.fused.Group.sums_pass): by the compiled pass, which
    reads each input block once and writes each sum once (``fused_bytes``), or by torch passes: a
    sum of one term is one pass moving two blocks, of t ≥ 2 terms t - 1 passes of three, each cached
    or streamed as a low-memory pass is, and each counted in ``fused_torch_passes`` too (inside a
    fused kernel a torch pass measured slower than the low-memory kernel's same pass: model format
    7). The C update is one compiled pass reading each product it combines (homed in C or in a
    workspace) once and writing each C block it reaches once (reading it too in ``acc`` mode): its
    bytes are ``fused_bytes``, at their own cost."""
    lv = _fused_level(d, mode)
    bm, bk, bn = block
    out = Features()
    for g in lv.groups:
        for side, formed, size in (("A", g.a_sums, bm * bk), ("B", g.b_sums, bk * bn)):
            if formed and g.sums_pass(side) == "numba":
                out = out + Features(fused_bytes=g.moved(side) * size * itemsize, passes=1)
                continue
            for f in formed:
                count, blocks = f.torch_passes
                torch_pass = element_pass(blocks * size * itemsize, cache) + Features(fused_torch_passes=1)
                out = out + torch_pass.times(count)
    for phase in lv.phases:
        outputs = [t for t in phase.combine if t is not None]
        if outputs:
            sources = {src for t in outputs for src, _ in t}
            elements = (len(sources) + len(outputs) * (2 if phase.accumulate else 1)) * bm * bn
            out = out + Features(fused_bytes=elements * itemsize, passes=1)
    counts: dict[str, int] = {}
    for g in lv.groups:
        for gemm in g.gemms:
            counts[gemm.mode] = counts.get(gemm.mode, 0) + 1
    return out, counts


def parallel_level_passes(d: Decomposition, block: Shape, itemsize: int, cache: int) -> tuple[Features, int]:
    """The torch passes of level 0 of a *parallel* kernel (codegen.runtime.runtime_parallel) at ``block`` and
    its product count: per product, a sum of k blocks is k - 1 passes (dst = x + c·y, then
    dst += c·x), and each C block it reaches one pass (the first writer dst = c·P, the later ones
    dst += c·P); a C block no product reaches is zeroed."""
    bm, bk, bn = block
    out, products, reached = Features(), 0, set()
    for sides in zip(*columns(d)):
        if not all(sides):
            continue
        products += 1
        for terms, size in ((sides[0], bm * bk), (sides[1], bk * bn)):
            out = out + element_pass(3 * size * itemsize, cache).times(len(terms) - 1)
        for c in sides[2]:
            out = out + element_pass((3 if c in reached else 2) * bm * bn * itemsize, cache)
            reached.add(c)
    n, m, p = d.format
    return out + element_pass(bm * bn * itemsize, cache).times(n * p - len(reached)), products


def level_format(d: Decomposition) -> Shape:
    """The <n,m,p> of a scheme that is a level of a plan (every plan's scheme has one)."""
    if d.format is None:
        raise FmmforgeError(f"{d.target.describe()} is not a matrix-multiplication scheme; a plan's levels must be")
    return d.format


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


def level_pass_bytes(d: Decomposition, mode: str, block: Shape, itemsize: int) -> tuple[int, int]:
    """(bytes read and written, passes) of one level of ``d``'s schedule in ``mode`` at ``block``."""
    f = level_passes(d, mode, block, itemsize, 0)
    return int(f.bytes), f.passes


# A layout's price of one level of its kernel (codegen.layouts.Layout.passes names it):
# (scheme, level, mode, block shape, itemsize, cache, remainder) -> (the level's passes, its products per mode).
LevelPrice = Callable[[Decomposition, int, str, Shape, int, int, str], tuple[Features, dict[str, int]]]


def lowmem_level(d: Decomposition, level: int, mode: str, block: Shape, itemsize: int, cache: int,
                 remainder: str) -> tuple[Features, dict[str, int]]:
    """The low-memory schedule's passes (:func:`level_passes`; uneven blocks for remainder "split")
    and its products by the mode each runs in."""
    split = remainder == "split"
    counts: dict[str, int] = {}
    for op in schedule_level(d, mode, split=split).ops:
        if isinstance(op, Product):
            counts[op.mode] = counts.get(op.mode, 0) + 1
    return level_passes(d, mode, block, itemsize, cache, split), counts


def fused_level(d: Decomposition, level: int, mode: str, block: Shape, itemsize: int, cache: int,
                remainder: str) -> tuple[Features, dict[str, int]]:
    """A fused level: its groups' compiled or torch passes (:func:`fused_level_passes`)."""
    return fused_level_passes(d, mode, block, itemsize, cache)


def parallel_level(d: Decomposition, level: int, mode: str, block: Shape, itemsize: int, cache: int,
                   remainder: str) -> tuple[Features, dict[str, int]]:
    """Level 0's per-product passes (:func:`parallel_level_passes`); below it the low-memory code runs."""
    if level > 0:
        return lowmem_level(d, level, mode, block, itemsize, cache, remainder)
    out, products = parallel_level_passes(d, block, itemsize, cache)
    return out, {"set": products}


class _Walker:
    """Follows the kernel's recursion (codegen.runtime.runtime_lowmem and the emitted level functions):
    leaf when a block would be under the cut-off, peel to the multiples of the levels that split,
    else one level's passes, priced by the function the layout names (codegen.layouts: ``passes``;
    :func:`lowmem_level`, :func:`fused_level` (codegen.fused, whose recursion and peeling are the
    same), :func:`parallel_level`), and its products one level deeper.
    Memoised per (level, mode, shape)."""

    def __init__(self, decomps: Sequence[Decomposition], cutoff: int, itemsize: int, gemm: GemmTable,
                 cache: int = 0, leaf: GemmTable | None = None, variant: str = "lowmem",
                 remainder: str = "peel") -> None:
        if variant not in VARIANTS:
            raise FmmforgeError(f"the cost model describes the {' and '.join(VARIANTS)} kernels, not {variant!r}")
        if remainder not in REMAINDERS:
            raise FmmforgeError(f"the cost model knows remainders {' and '.join(REMAINDERS)}, not {remainder!r}")
        self.decomps, self.cutoff, self.itemsize, self.gemm, self.cache = decomps, cutoff, itemsize, gemm, cache
        self.variant, self.remainder = variant, remainder
        self.leaf_table = leaf if leaf is not None and leaf.points else gemm
        self.memo: dict[tuple[int, str, Shape], Features] = {}

    def leaf(self, shape: Shape, inside: bool = True) -> Features:
        """A gemm of the kernel: on blocks of the operands (``inside``: the leaf table) or, for a
        plan that does not split at all, on the operands themselves (the contiguous table)."""
        return Features(gemm_s=(self.leaf_table if inside else self.gemm).seconds(shape))

    def pad_copies(self, shape: Shape, padded: Shape) -> Features:
        """The copies of a padded call (codegen.runtime.runtime_pad): A and B into their buffers (read,
        then written with the zero border) where their sizes grow, and C's part out of its buffer."""
        (M, K, N), (Mp, Kp, Np) = shape, padded
        moved = [M * K + Mp * Kp if (Mp, Kp) != (M, K) else 0, K * N + Kp * Np if (Kp, Np) != (K, N) else 0,
                 2 * M * N if (Mp, Np) != (M, N) else 0]
        return sum((element_pass(e * self.itemsize, self.cache) for e in moved if e), Features())

    def multiples(self, shape: Shape, level: int) -> Shape:
        M, K, N = shape
        dm = dk = dn = 1
        for d in self.decomps[level:]:
            n, m, p = d.format
            if M // dm < n * self.cutoff or K // dk < m * self.cutoff or N // dn < p * self.cutoff:
                break
            dm, dk, dn = dm * n, dk * m, dn * p
        return dm, dk, dn

    def top(self, shape: Shape) -> Features:
        """A call of the kernel: a padded plan's copies, then the call at the padded size; a fused
        one in strips of K where its workspaces would pass their bound (codegen.fused.k_width: the
        first strip sets C, the others accumulate)."""
        M, K, N = shape
        if self.remainder == "pad" and self.decomps:  # the kernel pads first (codegen.runtime.runtime_pad), then cuts
            from fmmforge.codegen.runtime.runtime_pad import pad_sizes

            padded = pad_sizes(M, K, N, [x.format for x in self.decomps], self.cutoff)
            if padded != shape:
                return self.pad_copies(shape, padded) + self.top(padded)
        if self.variant == "fused" and self.decomps:
            from fmmforge.codegen.fused import k_width  # numba and torch: only when a fused plan is costed

            width = k_width(list(self.decomps), self.cutoff, shape)
            if width < K:
                return sum((self.run(0, "acc" if k0 else "set", (M, min(width, K - k0), N))
                            for k0 in range(0, K, width)), Features())
        return self.run(0, "set", shape)

    def run(self, level: int, mode: str, shape: Shape) -> Features:
        key = (level, mode, shape)
        if key not in self.memo:
            self.memo[key] = self._run(level, mode, shape)
        return self.memo[key]

    def _run(self, level: int, mode: str, shape: Shape) -> Features:
        if level >= len(self.decomps):
            return self.leaf(shape, inside=level > 0)
        M, K, N = shape
        d = self.decomps[level]
        n, m, p = d.format
        if M < n * self.cutoff or K < m * self.cutoff or N < p * self.cutoff:
            return self.leaf(shape, inside=level > 0)
        dm, dk, dn = self.multiples(shape, level)
        if self.remainder == "split":  # uneven blocks: the rounded-up block size, no fix-ups
            dm = dk = dn = 1
            M, K, N = -(-M // n) * n, -(-K // m) * m, -(-N // p) * p
        if M % dm or K % dk or N % dn:
            Mc, Kc, Nc = M - M % dm, K - K % dk, N - N % dn
            out = self.run(level, mode, (Mc, Kc, Nc))
            for fix in ((Mc, K - Kc, Nc), (Mc, K, N - Nc), (M - Mc, K, N)):
                if min(fix) > 0:
                    out = out + self.leaf(fix)
            return out
        block = (M // n, K // m, N // p)
        price: LevelPrice = globals()[kernel_layouts.layout(self.variant).passes or ""]  # the layout names it
        out, counts = price(d, level, mode, block, self.itemsize, self.cache, self.remainder)
        for sub_mode, count in sorted(counts.items()):
            out = out + self.run(level + 1, sub_mode, block).times(count)
        return out


def leaf_shapes(decomps: Sequence[Decomposition], cutoff: int, shape: Shape, *,
                inside: bool | None = None, variant: str = "lowmem", remainder: str = "peel") -> set[Shape]:
    """Every gemm shape a call at ``shape`` runs (what the gemm tables must cover): with
    ``inside`` True only those on blocks of the operands (the leaf table's), False only the
    gemm of a plan that does not split (the contiguous table's), None both."""
    seen: dict[bool, set[Shape]] = {True: set(), False: set()}

    class _Collect(GemmTable):
        def __init__(self, where: bool) -> None:
            super().__init__({(1, 1, 1): 1.0})
            self.where = where

        def seconds(self, s: Shape) -> float:
            if min(s) > 0:
                seen[self.where].add(s)
            return 0.0

    _Walker(decomps, cutoff, 4, _Collect(False), leaf=_Collect(True), variant=variant,
            remainder=remainder).top(tuple(shape))
    return seen[inside] if inside is not None else seen[True] | seen[False]


def features(decomps: Sequence[Decomposition], cutoff: int, shape: Shape, dtype: str, gemm: GemmTable,
             cache: int = 0, leaf: GemmTable | None = None, variant: str = "lowmem",
             remainder: str = "peel") -> Features:
    """The features of one call C = A·B at ``shape`` = (M, K, N) by the plan ``decomps`` (one scheme
    per level; empty: the vendor gemm alone) in the kernel layout ``variant`` (:data:`VARIANTS`),
    a size that does not divide peeled or padded (``remainder``);
    passes of at most ``cache`` bytes count as cached; the kernel's leaves are read from ``leaf``
    (the leaf-layout table; ``gemm`` when it is empty)."""
    if dtype not in ITEMSIZE:
        raise FmmforgeError(f"the cost model knows dtypes {', '.join(ITEMSIZE)}, not {dtype!r}")
    walker = _Walker(decomps, cutoff, ITEMSIZE[dtype], gemm, cache, leaf, variant, remainder)
    return walker.top(tuple(int(x) for x in shape)) + Features(calls=1)


# ---------------------------------------------------------------------- fitting
def nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min ||X·θ - y|| over θ >= 0, exactly, by trying every set of free coefficients (X has few columns)."""
    cols = X.shape[1]
    best, best_res = np.zeros(cols), float(np.sum(y**2))
    for r in range(1, cols + 1):
        for subset in itertools.combinations(range(cols), r):
            theta_s, *_ = np.linalg.lstsq(X[:, subset], y, rcond=None)
            if np.any(theta_s < 0):
                continue
            theta = np.zeros(cols)
            theta[list(subset)] = theta_s
            res = float(np.sum((X @ theta - y) ** 2))
            if res < best_res - 1e-15 * max(best_res, 1e-300):
                best, best_res = theta, res
    return best


ROBUST_ROUNDS = 5  # reweighting rounds that shrink the pull of outliers (a busy machine's samples)


def fit_parameters(rows: Sequence[Features], seconds: Sequence[float]) -> np.ndarray:
    """The parameters (:data:`PARAMETERS`) minimising the squared relative error on ``rows``,
    robustly: records whose relative error is far above the typical one are down-weighted
    (Huber weights at twice the median error, at least 2 %) and the fit is repeated. A cost no
    row has (no fused plan among the records) cannot be fitted: the fused bytes then cost what a
    streamed byte costs, rather than nothing."""
    X = np.array([f.vector() for f in rows])
    y = np.asarray(seconds, dtype=float)
    if len(y) == 0:
        raise FmmforgeError("no measurements to fit the cost model to")
    scale = X.max(axis=0)
    scale[scale == 0] = 1.0
    Z = X / y[:, None] / scale
    weights = np.ones(len(y))
    for _ in range(ROBUST_ROUNDS):
        theta = nnls(Z * weights[:, None], weights)
        residual = np.abs(Z @ theta - 1.0)
        cut = max(0.02, 2.0 * float(np.median(residual)))
        weights = np.minimum(1.0, cut / np.maximum(residual, 1e-300))
    theta = theta / scale
    fused, streamed = FEATURES.index("fused_bytes"), FEATURES.index("streamed_bytes")
    if not X[:, fused].any():
        theta[fused] = theta[streamed]
    return theta


# A fit is poor when its held-out (leave-one-out) median error is above both of these: 15 % is twice
# the worst error of the fits this model makes on a busy 2-core host (7.16 %, docs/costmodel.md)
# and above the 2-20 % by which the plans a tune ranks differ, so a model that far off cannot rank
# them; and 3x the repeat floor (how far two readings of one plan disagree), so that on a machine
# too noisy for any model to do better the fit is not called poor for the noise. A model
# `calibrate --budget 0` fitted on a few records erred by 67 % and `tune` trusted its 3.1x.
POOR_ERROR_PCT = 15.0
POOR_OVER_FLOOR = 3.0


@dataclass(frozen=True)
class Quality:
    """Held-out error of a fit: leave-one-out median |error| (%) and the median over sizes of
    Spearman's rank correlation between predicted and measured times across plans at a size;
    beside them, when some plan was measured twice, how far its readings disagree (median %,
    codegen.calibrate.repeatability): the error no model can go below on those records."""

    median_ape: float
    spearman: float | None
    records: int
    sizes_ranked: int
    repeat_pct: float | None = None
    repeat_pairs: int = 0

    @property
    def verdict(self) -> str:
        """``poor`` when the held-out error is above :data:`POOR_ERROR_PCT` and above
        :data:`POOR_OVER_FLOOR` times the repeat floor (when one was measured), else ``good``:
        always computed from the numbers, so a stored model of format 7 is judged on reading."""
        return "poor" if self.median_ape > self.threshold_pct() else "good"

    @property
    def poor(self) -> bool:
        return self.verdict == "poor"

    def threshold_pct(self) -> float:
        """The held-out error above which the fit is poor (:attr:`verdict`)."""
        return max(POOR_ERROR_PCT, POOR_OVER_FLOOR * (self.repeat_pct or 0.0))

    def poor_line(self) -> str | None:
        """One line saying the fit is poor and what follows, or None for a good one."""
        if not self.poor:
            return None
        return (f"the fit is poor: its held-out error {self.median_ape:.1f} % is above {self.threshold_pct():.0f} % "
                f"(the larger of {POOR_ERROR_PCT:g} % and {POOR_OVER_FLOOR:g}x the repeat floor); `fmmforge tune` "
                "ranks by the prior model instead and the latency-model reward refuses it: measure more records "
                "(`fmmforge calibrate --budget 4m`, or `fmmforge bench` at 3 sizes or more) and calibrate again")

    def as_dict(self) -> dict[str, object]:
        """What is stored: the numbers and, for readers of the store, the verdict and its threshold
        (recomputed on reading, not read back)."""
        return {**self.__dict__, "verdict": self.verdict, "threshold_pct": self.threshold_pct()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "Quality":
        names = {f.name for f in dataclass_fields(cls)}
        known: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        return cls(**known)

    def repeat_line(self) -> str | None:
        """One line on how far records repeat, or None when no plan was measured twice."""
        if self.repeat_pct is None:
            return None
        return (f"two readings of one plan differ by a median {self.repeat_pct:.2f} % ({self.repeat_pairs} pair{'s' if self.repeat_pairs != 1 else ''}): "
                "the floor under any model's error on this machine now")


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import pandas as pd

    ra, rb = pd.Series(list(a)).rank().to_numpy(), pd.Series(list(b)).rank().to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def held_out_quality(rows: Sequence[Features], seconds: Sequence[float], sizes: Sequence[Shape]) -> Quality:
    """Leave-one-out: each record predicted by the model fitted on all the others."""
    y = np.asarray(seconds, dtype=float)
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        theta = fit_parameters([rows[j] for j in keep], y[keep])
        pred[i] = float(rows[i].vector() @ theta)
    ape = np.abs(pred - y) / y * 100
    rhos = []
    for size in sorted(set(sizes)):
        idx = [i for i, s in enumerate(sizes) if s == size]
        if len(idx) >= 3:
            rho = spearman(pred[idx], y[idx])
            if not math.isnan(rho):
                rhos.append(rho)
    return Quality(float(np.median(ape)), float(np.median(rhos)) if rhos else None, len(y), len(rhos))


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class CalibratedModel:
    """A fitted model for one :class:`ModelKey`. ``predict_s`` needs the plan's decompositions."""

    key: ModelKey
    parameters: tuple[float, ...]
    gemm: GemmTable
    quality: Quality | None = None
    fitted_on: int = 0
    cache: int = 0  # bytes: passes up to this size count as cached (features)
    leaf: GemmTable = field(default_factory=GemmTable)  # gemms timed as a kernel's leaves (LEAF_LAYOUT)
    format: int = MODEL_FORMAT

    def __post_init__(self) -> None:
        if len(self.parameters) != len(PARAMETERS):  # a caller's bug, not the user's input
            raise ValueError(f"a cost model has {len(PARAMETERS)} parameters ({', '.join(PARAMETERS)}), "
                             f"not {len(self.parameters)}")

    @property
    def name(self) -> str:
        return f"calibrated v{self.format} ({self.fitted_on} records)"

    @property
    def trusted(self) -> bool:
        """False for a fit whose held-out quality is poor (:attr:`Quality.verdict`); a model without
        a quality (unknown: fitted on fewer than 3 records) is trusted, as before the verdict."""
        return self.quality is None or not self.quality.poor

    def predict_features(self, f: Features) -> float:
        return float(f.vector() @ np.asarray(self.parameters))

    def predict_s(self, decomps: Sequence[Decomposition], cutoff: int, shape: Shape, variant: str = "lowmem",
                  remainder: str = "peel") -> float:
        """Predicted seconds of one call at ``shape`` by the plan ``decomps`` with ``cutoff`` in
        ``variant``, peeling or padding a size that does not divide (``remainder``)."""
        return self.predict_features(features(decomps, cutoff, shape, self.key.dtype, self.gemm, self.cache,
                                              self.leaf, variant, remainder))

    def estimate_s(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem") -> float:
        """A cheap stand-in for :meth:`predict_s` (no schedule is built): the leaf gemms at the divided
        shape, and each level's passes: for the low-memory layout :func:`side_passes` as one pass over
        its blocks (two read, one written) at this model's cost per byte of such passes, for the
        fused one the blocks of :func:`fused_units` at its cost per fused byte. The tuner uses it
        only to choose which plans :meth:`predict_s` ranks."""
        params = dict(zip(PARAMETERS, self.parameters))
        itemsize = ITEMSIZE.get(self.key.dtype, 4)
        block = list(shape)
        subproblems = 1
        pass_s = 0.0
        for d in decomps:
            n, m, p = level_format(d)
            block = [block[0] // n, block[1] // m, block[2] // p]
            bm, bk, bn = block
            sizes = (bm * bk, bk * bn, bm * bn)
            if variant == "fused":
                moved = sum(u * e for u, e in zip(fused_units(d), sizes)) * itemsize
                pass_s += subproblems * (moved * params["s_per_fused_byte"] + 3 * params["s_per_pass"])
            else:
                for adds, elements in zip(side_passes(d), sizes):
                    moved = 3 * elements * itemsize  # one pass: two blocks read, one written
                    per_byte = params["s_per_cached_byte" if moved <= self.cache else "s_per_streamed_byte"]
                    pass_s += subproblems * adds * (moved * per_byte + params["s_per_pass"])
            subproblems *= d.rank
        bm, bk, bn = block
        return params["gemm_scale"] * subproblems * self.gemm.seconds((bm, bk, bn)) + pass_s

    def with_tables(self, store: Store) -> "CalibratedModel":
        """This model with the gemm timings now in ``store`` added to its tables (the fitted
        parameters unchanged): what the tuner measures at a shape's leaves between fits."""
        tables = {}
        for layout, table in (("contiguous", self.gemm), ("leaf", self.leaf)):
            points = dict(table.points)
            points.update(load_gemm_points(self.key, store, layout))
            tables[layout] = GemmTable(points)
        return replace(self, gemm=tables["contiguous"], leaf=tables["leaf"])

    def to_json(self) -> str:
        q = self.quality
        return json.dumps({
            "format": self.format, "key": self.key.__dict__, "parameters": dict(zip(PARAMETERS, self.parameters)),
            "gemm": [[*s, t] for s, t in sorted(self.gemm.points.items())], "fitted_on": self.fitted_on,
            "leaf_gemm": [[*s, t] for s, t in sorted(self.leaf.points.items())],
            "cache_bytes": self.cache, "quality": None if q is None else q.as_dict(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> "CalibratedModel":
        """Read a stored model; anything malformed is one FmmforgeError naming ``where``."""
        bad = FmmforgeError(f"the cost model stored for {where} is unreadable; run `fmmforge calibrate` again")
        try:
            data = json.loads(text)
            if data.get("format") not in READABLE_FORMATS:
                raise FmmforgeError(f"the cost model stored for {where} has format {data.get('format')!r}, this "
                                    f"fmmforge reads format {MODEL_FORMAT}; run `fmmforge calibrate` again")
            params = tuple(float(data["parameters"][p]) for p in PARAMETERS)
            points = {(int(m), int(k), int(n)): float(t) for m, k, n, t in data["gemm"]}
            leaf = {(int(m), int(k), int(n)): float(t) for m, k, n, t in data["leaf_gemm"]}
            key = ModelKey(**data["key"])
            q = data.get("quality")
            quality = Quality.from_dict(q) if q else None
            fitted_on = int(data.get("fitted_on", 0))
            cache = int(data["cache_bytes"])
        except FmmforgeError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError):
            raise bad from None
        if cache < 0 or not all(math.isfinite(x) and x >= 0 for x in params) or not all(
                math.isfinite(t) and t > 0 and min(s) > 0 for s, t in [*points.items(), *leaf.items()]):
            raise bad
        return cls(key, params, GemmTable(points), quality, fitted_on, cache, GemmTable(leaf), int(data["format"]))


# ---------------------------------------------------------------------- storage
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def save_gemm_point(key: ModelKey, shape: Shape, seconds: float, store: Store, layout: str = "contiguous") -> None:
    """Store one gemm timing in the table of ``layout`` (:data:`GEMM_TABLES`)."""
    with store.writing(TABLES) as conn:
        conn.execute(f"INSERT OR REPLACE INTO {GEMM_TABLES[layout]} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (key.device, key.machine, key.threads, key.dtype, *shape, float(seconds), _now()))


def load_gemm_points(key: ModelKey, store: Store, layout: str = "contiguous") -> dict[Shape, float]:
    with store.reading(TABLES) as conn:
        if conn is None:
            return {}
        rows = conn.execute(f"SELECT m, k, n, seconds FROM {GEMM_TABLES[layout]} WHERE device = ? AND machine = ? "
                            "AND threads = ? AND dtype = ?",
                            (key.device, key.machine, key.threads, key.dtype)).fetchall()
    return {(int(m), int(k), int(n)): float(t) for m, k, n, t in rows if t and t > 0}


def save_model(model: CalibratedModel, store: Store) -> None:
    k = model.key
    with store.writing(TABLES) as conn:
        conn.execute("INSERT OR REPLACE INTO cost_models VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (k.device, k.machine, k.threads, k.dtype, model.format, model.to_json(), _now()))


def load_model(key: ModelKey, store: Store) -> CalibratedModel:
    """The model fitted for ``key``; one FmmforgeError saying what to run when there is none (or
    when what is stored belongs to another machine or model format)."""
    with store.reading(TABLES) as conn:
        row = None if conn is None else conn.execute(
            "SELECT model FROM cost_models WHERE device = ? AND machine = ? AND threads = ? AND dtype = ?",
            (key.device, key.machine, key.threads, key.dtype)).fetchone()
    if row is None:
        raise FmmforgeError(f"no cost model fitted for {key.describe()}; "
                            f"run `fmmforge calibrate --device {key.device} --dtype {key.dtype}`")
    model = CalibratedModel.from_json(row[0], key.describe())
    if model.key != key:
        raise FmmforgeError(f"the cost model stored for {key.describe()} was fitted for "
                            f"{model.key.describe()} ({model.key.machine}); "
                            f"run `fmmforge calibrate --device {key.device} --dtype {key.dtype}`")
    return model


def stored_keys(store: Store, device: str, machine: str) -> list[ModelKey]:
    """The keys of the models stored for ``device`` on ``machine`` (any threads, dtype)."""
    with store.reading(TABLES) as conn:
        rows = [] if conn is None else conn.execute(
            "SELECT threads, dtype FROM cost_models WHERE device = ? AND machine = ? ORDER BY threads, dtype",
            (device, machine)).fetchall()
    return [ModelKey(device, machine, int(t), str(dt)) for t, dt in rows]


@functools.lru_cache(maxsize=None)
def _prior_bandwidths(dtype: str, threads: int, cache: int) -> tuple[float, float]:
    """Bytes per second of a pass over blocks that stay in cache and over blocks that stream,
    measured once per process: a tune ranks by the prior model in every round while its records are
    too few (or its fit poor), and a fresh reading each round cost time and moved the prior's numbers."""
    from fmmforge.hardware.timing import pass_bandwidth

    small = max(64, int(math.sqrt(cache / (3 * ITEMSIZE.get(dtype, 4)))) // 2)  # three blocks well inside the cache
    return pass_bandwidth(dtype, threads, small), pass_bandwidth(dtype, threads, 2048)


def prior_model(key: ModelKey, store: Store) -> CalibratedModel:
    """The model before any fit: leaf gemms at their measured times, and the bytes of passes at
    the bandwidths measured now, of blocks that stay in cache and of blocks that stream (no
    per-pass or per-call cost); ``fitted_on`` 0."""
    cache = cache_bytes(key.threads)
    cached_bw, streamed_bw = _prior_bandwidths(key.dtype, key.threads, cache)
    values = {"gemm_scale": 1.0, "s_per_cached_byte": 1.0 / cached_bw, "s_per_streamed_byte": 1.0 / streamed_bw}
    values["s_per_fused_byte"] = values["s_per_streamed_byte"]  # a fused pass streams its blocks once
    return CalibratedModel(key, tuple(values.get(p, 0.0) for p in PARAMETERS), GemmTable(load_gemm_points(key, store)),
                           None, 0, cache=cache, leaf=GemmTable(load_gemm_points(key, store, "leaf")))


def find_model(key: ModelKey, store: Store) -> CalibratedModel | None:
    """:func:`load_model`, or None when nothing usable is stored."""
    try:
        return load_model(key, store)
    except FmmforgeError:
        return None


def fit(key: ModelKey, rows: Sequence[Features], seconds: Sequence[float], sizes: Sequence[Shape],
        gemm: GemmTable, *, evaluate: bool = True, cache: int = 0, leaf: GemmTable | None = None) -> CalibratedModel:
    """Fit the parameters to measured ``seconds`` (features computed with ``gemm``, ``leaf`` and ``cache``)."""
    theta = fit_parameters(rows, seconds)
    quality = held_out_quality(rows, seconds, sizes) if evaluate and len(rows) >= 3 else None
    return CalibratedModel(key, tuple(float(x) for x in theta), gemm, quality, len(rows), cache,
                           leaf if leaf is not None else GemmTable())


def union_corners(shapes: Iterable[Shape]) -> set[Shape]:
    out: set[Shape] = set()
    for s in shapes:
        out |= corners(s)
    return out


def row_shape(row: Mapping[str, Any]) -> Shape:
    return int(row["m"]), int(row["k"]), int(row["n"])


# ---------------------------------------------------------------------- the latency-model reward
@dataclass(frozen=True)
class LatencyModelReward:
    """The predicted speed-up over the vendor matmul from the calibrated model (no kernel runs).
    Needs --device, --size; dtype defaults to float32, levels to 1; cutoff as `fmmforge bench`."""

    name: str = "latency-model"
    description: str = ("predicted speed-up over the vendor matmul from the model `fmmforge calibrate` fitted "
                        "(--device cpu or cuda:N, --size); cheap, no kernel runs")
    cheap: bool = True
    cutoff: int = 64

    def score(self, d: Decomposition, context: RewardContext) -> RewardResult:
        from fmmforge.codegen.plan import check_decomposition
        from fmmforge.hardware.devices import get_device

        device = context.require_device(self.name, "cpu or cuda:N")
        size = context.require_size(self.name)
        check_decomposition(d, "the scheme")
        model = load_model(current_key(get_device(device).name, context.dtype or "float32"), Store())
        if not model.trusted and model.quality is not None:
            # a poor fit's predictions are not a score: one clear line instead (docs/costmodel.md)
            raise FmmforgeError(f"the cost model of {model.key.describe()} is poor (held-out error "
                                f"{model.quality.median_ape:.1f} %, above {model.quality.threshold_pct():.0f} %): "
                                "measure more records (`fmmforge calibrate --budget 4m`) and calibrate again, "
                                "or score with the measured `latency` reward")
        levels = context.levels
        kernel_s = model.predict_s([d] * levels, self.cutoff, size)
        vendor_s = model.predict_s([], self.cutoff, size)
        speedup = vendor_s / kernel_s
        return RewardResult(speedup, {"predicted speedup": round(speedup, 4),
                                      "predicted kernel ms": round(kernel_s * 1e3, 4),
                                      "predicted vendor ms": round(vendor_s * 1e3, 4),
                                      "model": model.name, "device": model.key.describe()})
