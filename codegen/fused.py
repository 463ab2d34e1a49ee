"""The *fused* torch CPU kernels: per level, the element-wise work in a few compiled passes.

For any decomposition (written from its factor matrices U, V, W, nothing hand-scheduled), a level
``C (+)= alpha·A·B`` runs as:

* the products are split into a few groups so that one group's sums fit the workspace budget
  (:func:`slot_budget` blocks per side, so S and T together hold at most one C of the level); per
  group one pass set per side forms all its sums (the compiled one tile by tile, so every row
  segment of the input blocks is read once from memory and stays in L1 while all sums that use it
  are formed); a one-block side is a view and its
  coefficient, like the first coefficient of every sum, is folded into the product's alpha; the
  workspace slots keep their sums across the groups of a call, so a sum still held is not formed
  again and a new one may extend a held one (S4 = A12 - S2 of Winograd, reading two blocks, not
  four), and a sum may extend one formed earlier in the same pass. A group's sums are formed by
  whichever moves less (:meth:`Group.sums_pass`): the compiled pass (all its sums, tile by tile,
  each input block read once) or torch, one pass per term after the first two. On the project's
  Intel Xeon (2 cores) the compiled pass ran ~1.2x slower per block than torch's inside a kernel
  (between MKL gemms), so for Strassen-Winograd's 2x2 levels, whose sums have two terms, torch's
  passes win (W L2 at 8192 1.181x against 1.157x, W L3 at 8192 1.150x against 1.104x, W L2 at 4096
  1.036x against 1.020x; benchmarks/cpu_breakdown.py --variant lowmem,fused,fused-numba,
  2026-12-03), and for a <4,4,4;49> level, whose sums have four terms over few blocks, the compiled
  pass does (:data:`NUMBA_BLOCK_COST`); the kernel's ``SUMS_PASS`` can force either;
* ``set`` (C = ...): a product with several outputs is computed straight into one of its C blocks
  that nobody else claimed (its *home*; no workspace) or else into a workspace slot of P; then ONE
  numba pass over the products writes every C block (the homed products are read, tile by tile,
  before any C block of the tile is written). A product with one output that was not homed is
  added by the gemm itself afterwards (``addmm`` with beta 1 and the coefficient in alpha: no pass);
* ``acc`` (C += ...): the products with several outputs go to P, ONE pass adds them to C, and the
  one-output products are accumulated by the gemm.
* P is bounded (:func:`product_budget`: half a C of the level in ``set``, one in ``acc``): where more
  products than that need it (Strassen⊗Strassen as one <4,4,4> level: 29 in ``set``, which held
  2.8 C), they are taken in phases of that many, each followed by its own C update (C += the
  phase's products), so a level never holds more than S, T and that P.

The leaves are torch.mm/addmm on views; the recursion, peeling and workspaces are the low-memory
kernel's (:mod:`.runtime.runtime_lowmem`, :mod:`.runtime.runtime_caches`); the passes themselves
are :mod:`.runtime.runtime_fused`. :func:`traffic_bytes` is the bytes a plan's additions must
move at least (each input block of a sum read once, each sum written once, each product with
several outputs read once and each C block it reaches written once).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from fractions import Fraction

from fmmforge.codegen.runtime import (inline, runtime_caches as caches, runtime_fused, runtime_lowmem as lowmem,
                                      runtime_pad, runtime_parallel, runtime_torch)
from fmmforge.codegen.emit_python import (_alpha, _num, backend_runtime, block_name, function_names,
                                          level_functions, level_prologue, product_comments, thread_caches)
from fmmforge.codegen.plan import Plan
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.version import __version__

# The compiled sums pass moves a block ~1.2x slower than torch's element-wise passes inside a kernel
# (between MKL gemms) on the project's Intel Xeon, with row segments of TILE = 256 (1.3-1.4x with
# 512): at 4096, Strassen⊗Strassen as one level, its A side 114 blocks of 4 MiB in 21.7 ms by the
# compiled pass against 213 in 33.1 ms by torch's (1.22x per block), and Strassen-Winograd at two
# levels 88 blocks in 21.8 ms against 96 in 20.8 ms (1.14x) (benchmarks/cpu_breakdown.py --cases
# strassen*strassen:1:4096,strassen-winograd:2:4096 --variant fused,fused-numba,fused-torch,
# 2026-12-07). A group's sums take the compiled pass where its blocks, at that cost, are fewer than
# torch's: the <4,4,4;49> and <3,3,3;23> levels, whose sums have many terms over few blocks; not
# Strassen-Winograd's 2x2 levels (11 blocks against 12).
NUMBA_BLOCK_COST = 1.2


# Sum blocks per side and group: n·p/2, so S and T together hold at most one C of the level (square).
def slot_budget(n: int, p: int) -> int:
    return max(1, n * p // 2)


def product_budget(n: int, p: int, mode: str) -> int:
    """Workspace slots of P (products with several outputs that wait for a C update): n·p/2 in
    ``set`` (half a C of the level: at the top, beside S and T, the level holds at most 1.5 C) and
    n·p in ``acc`` (below the top, where the blocks are a quarter of C's or smaller). More such
    products than that are combined in several phases, each a C update of its own."""
    return max(1, n * p // 2 if mode == "set" else n * p)

Terms = tuple[tuple[int, Fraction], ...]


@dataclass(frozen=True)
class Side:
    """One side of a product: a block view (``slot`` None) or ``slot`` of the side's workspace;
    ``scale`` is folded into the product's alpha."""

    block: int
    slot: int | None
    scale: Fraction


Source = tuple[str, int]  # ("X", block of the operand) or ("W", slot of the workspace, as it is then)


@dataclass(frozen=True)
class Formed:
    """A sum written into workspace ``slot``: Σ coef · source, the sources read as they are when the
    sum is formed (a slot written earlier in the same pass holds its new value); a term reading
    ``slot`` itself comes first (the pass writes the slot over it, element by element)."""

    slot: int
    terms: tuple[tuple[Source, Fraction], ...]

    @property
    def torch_passes(self) -> tuple[int, int]:
        """(passes, blocks each reads and writes) when torch forms the sum (``_combination``): one
        term is one pass reading a block and writing one, t ≥ 2 terms t - 1 passes reading two and
        writing one."""
        return (1, 2) if len(self.terms) == 1 else (len(self.terms) - 1, 3)


@dataclass(frozen=True)
class Gemm:
    """``dst`` (=|+=) alpha·coef·a·b by the next level: ``dst`` is ("C", block) or ("P", slot)."""

    term: int
    a: Side
    b: Side
    dst: tuple[str, int]
    coef: Fraction
    mode: str


@dataclass(frozen=True)
class Group:
    """Sums formed in one pass per side (their values normalised: first coefficient 1; a sum that a
    slot still holds from an earlier group of the call is not formed again), then the gemms."""

    a_sums: tuple[Formed, ...]
    b_sums: tuple[Formed, ...]
    gemms: tuple[Gemm, ...]

    def moved(self, side: str) -> int:
        """Blocks the side's pass reads from memory and writes: each operand block and each slot
        value from before the pass that it reads once (a row segment stays in L1 while every sum
        of the pass that uses it is formed), each sum once."""
        formed = self.a_sums if side == "A" else self.b_sums
        written: set[int] = set()
        read: set[Source] = set()
        for f in formed:
            read |= {src for src, _ in f.terms if src[0] == "X" or src[1] not in written}
            written.add(f.slot)
        return len(read) + len(formed) if formed else 0

    def torch_moved(self, side: str) -> int:
        """Blocks the side's sums move as torch passes (:attr:`Formed.torch_passes`)."""
        formed = self.a_sums if side == "A" else self.b_sums
        return sum(count * blocks for count, blocks in (f.torch_passes for f in formed))

    def sums_pass(self, side: str) -> str:
        """How the kernel forms the side's sums: "numba" (one compiled pass over the group, each input
        block read once) where that moves fewer blocks by more than its measured cost per block, else
        "torch" (:data:`NUMBA_BLOCK_COST`)."""
        return "numba" if self.moved(side) * NUMBA_BLOCK_COST < self.torch_moved(side) else "torch"


@dataclass(frozen=True)
class Phase:
    """Groups of products, then one C update: ``combine`` per C block is None (left as it is) or its
    terms ((source, coefficient), ...), a source being ("C", home block) or ("P", slot); ``homes``:
    the C blocks holding a product when the update starts; ``accumulate``: C += the terms (every
    phase but a ``set`` level's first)."""

    groups: tuple[Group, ...]
    combine: tuple[tuple[tuple[tuple[str, int], Fraction], ...] | None, ...]
    homes: tuple[int, ...]
    accumulate: bool

    @property
    def updates(self) -> bool:
        return any(c is not None for c in self.combine)


@dataclass(frozen=True)
class FusedLevel:
    """A level's fused schedule: its phases (products, then a C update each), then ``after``: the
    one-output products accumulated by the gemm once every C block has its first value."""

    mode: str
    phases: tuple[Phase, ...]
    after: tuple[Group, ...]
    p_slots: int

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(g for ph in self.phases for g in ph.groups) + self.after

    def slots(self, side: str) -> int:
        return 1 + max((f.slot for g in self.groups for f in (g.a_sums if side == "A" else g.b_sums)), default=-1)

    def passes(self) -> int:
        """Compiled element-wise passes of the level (each over several blocks at once)."""
        sums = sum(bool(g.a_sums) + bool(g.b_sums) for g in self.groups)
        return sums + sum(ph.updates for ph in self.phases)


def _column(mat, r: int) -> Terms:
    return tuple((i, Fraction(mat[i, r])) for i in range(mat.shape[0]) if mat[i, r] != 0)


def _normalised(terms: Terms) -> tuple[Terms, Fraction]:
    lead = terms[0][1]
    return tuple((i, c / lead) for i, c in terms), lead


def _side_key(col: Terms) -> tuple[int | Terms, Fraction]:
    """(block, coefficient) of a one-block side, else (normalised sum, its first coefficient)."""
    if len(col) == 1:
        return col[0]
    return _normalised(col)


def _match(stored: list[int], outs: list[Terms]) -> dict[int, int]:
    """C block -> product: as many products with several outputs homed in distinct C blocks as
    possible (augmenting paths), so that as few as possible need a workspace slot."""
    homes: dict[int, int] = {}

    def place(r: int, seen: set[int]) -> bool:
        for c, _ in outs[r]:
            if c in seen:
                continue
            seen.add(c)
            if c not in homes or place(homes[c], seen):
                homes[c] = r
                return True
        return False

    for r in stored:
        place(r, set())
    return homes


def fused_level(d: Decomposition, mode: str) -> FusedLevel:
    """The fused schedule of one level of ``d`` (see the module docstring)."""
    n, m, p = d.format
    U, V, W = d.factors()
    R = d.rank
    outs = [_column(W, r) for r in range(R)]
    stored = [r for r in range(R) if len(outs[r]) > 1]
    homes: dict[int, int] = {}  # C block -> product
    if mode == "set":
        homes.update(_match(stored, outs))
        for c in range(n * p):  # a block no stored product reaches: its first one-output product
            if c not in homes and not any(c == o for r in stored for o, _ in outs[r]):
                first = next((r for r in range(R) if outs[r] and outs[r][0][0] == c and len(outs[r]) == 1), None)
                if first is not None:
                    homes[c] = first
    home_of = {r: c for c, r in homes.items()}
    in_p = [r for r in stored if r not in home_of]
    # P holds at most product_budget products: the rest wait for a later phase (C += its products)
    chunk = product_budget(n, p, mode)
    chunks = [in_p[i:i + chunk] for i in range(0, len(in_p), chunk)] or [[]]
    slot_of = {r: k % chunk for k, r in enumerate(in_p)}

    def combine_of(products: set[int], first: bool) -> tuple:
        combine: list = []
        for c in range(n * p):
            terms = tuple((("C", home_of[r]) if r in home_of else ("P", slot_of[r]), w)
                          for r in sorted(products) for o, w in outs[r] if o == c)
            if first and mode == "set" and terms == ((("C", c), Fraction(1)),):
                combine.append(None)  # already holds its value
            elif (not first or mode == "acc") and not terms:
                combine.append(None)
            else:
                combine.append(terms)
        return tuple(combine)

    budget = slot_budget(n, p)

    def gemm(r: int, a: Side, b: Side) -> Gemm:
        if r in home_of:
            return Gemm(r, a, b, ("C", home_of[r]), Fraction(1), "set")
        if r in slot_of:
            return Gemm(r, a, b, ("P", slot_of[r]), Fraction(1), "set")
        ((c, w),) = outs[r]
        return Gemm(r, a, b, ("C", c), w, "acc")

    keys = {r: [_side_key(_column(mat, r)) for mat in (U, V)] for r in range(R)}

    def partition(products: list[int]) -> list[list[int]]:
        """Products in order, cut into groups whose distinct sums per side fit ``budget``."""
        found: list[list[int]] = [[]]
        sums: tuple[set, set] = (set(), set())
        for r in products:
            need = [{k} if not isinstance(k, int) else set() for k, _ in keys[r]]
            if found[-1] and max(len(have | k) for k, have in zip(need, sums)) > budget:
                found.append([])
                sums = (set(), set())
            found[-1].append(r)
            for k, have in zip(need, sums):
                have |= k
        return found if found[-1] else []

    rest = [r for r in range(R) if r not in home_of and r not in slot_of and outs[r]]
    phase_products = [sorted(set(home_of) | set(chunks[0]))] + chunks[1:]
    if mode == "acc":  # no homes: the one-output products may run in the last phase
        phase_products[-1] = phase_products[-1] + rest
    phase_parts = [partition(products) for products in phase_products]
    after = partition(rest) if mode == "set" else []
    parts = [part for ps in phase_parts for part in ps] + after
    sides = [_slot_plan([[keys[r][s][0] for r in part] for part in parts]) for s in (0, 1)]
    built = []
    for g, part in enumerate(parts):
        gemms = []
        for r in part:
            made = []
            for s in (0, 1):
                key, lead = keys[r][s]
                made.append(Side(key, None, lead) if isinstance(key, int) else Side(-1, sides[s][g][1][key], lead))
            gemms.append(gemm(r, made[0], made[1]))
        built.append(Group(sides[0][g][0], sides[1][g][0], tuple(gemms)))
    phases, at = [], 0
    for k, (products, ps) in enumerate(zip(phase_products, phase_parts)):
        first = k == 0
        combined = {r for r in products if r in home_of or r in slot_of}
        phases.append(Phase(tuple(built[at:at + len(ps)]), combine_of(combined, first),
                            tuple(sorted(homes)) if first and mode == "set" else (), not first or mode == "acc"))
        at += len(ps)
    return FusedLevel(mode, tuple(phases), tuple(built[at:]), min(chunk, len(in_p)))


def _expression(want: Terms, values: list[Terms | None], fresh: set[int], read: set[Source]
                ) -> tuple[tuple[Source, Fraction], ...]:
    """The cheapest way to form the sum ``want`` (terms over blocks) in a pass that has already read
    ``read``: from blocks alone, or c·(a slot's value) plus blocks. Cost: (new sources read from
    memory, terms); a slot in ``fresh`` was written earlier in this pass (its value is in L1)."""
    target = dict(want)
    best = tuple((("X", i), c) for i, c in want)

    def cost(terms) -> tuple[int, int]:
        new = {src for src, _ in terms if src not in read and not (src[0] == "W" and src[1] in fresh)}
        return len(new), len(terms)

    best_cost = cost(best)
    for k, value in enumerate(values):
        if value is None:
            continue
        held = dict(value)
        for i in held.keys() & target.keys():
            c = target[i] / held[i]
            rest = {j: target.get(j, 0) - c * held.get(j, 0) for j in target.keys() | held.keys()}
            terms = ((("W", k), c),) + tuple((("X", j), v) for j, v in sorted(rest.items()) if v != 0)
            if cost(terms) < best_cost:
                best, best_cost = terms, cost(terms)
    return best


def _slot_plan(groups: list[list[int | Terms]]) -> list[tuple[tuple[Formed, ...], dict[Terms, int]]]:
    """For one side of a level, per group (the side keys of its products in order: a block index or
    a normalised sum): the sums its pass forms and the slot each sum of the group is read from.

    The workspace keeps as many slots as the largest group needs; a slot keeps its value across the
    groups of a call, so a sum still held is not formed again, and a new sum may be formed from a
    held one (c·S + blocks) where that reads fewer blocks from memory (as the low-memory schedule's
    chained sums do, here inside one pass). A slot about to be overwritten is, where there is a
    choice, the one whose value the later groups can use least."""
    wanted = [list(dict.fromkeys(k for k in keys if not isinstance(k, int))) for keys in groups]
    cap = max((len(w) for w in wanted), default=0)
    values: list[Terms | None] = [None] * cap
    plan = []

    def future_use(value: Terms, after: int) -> int:
        """Blocks the later groups' sums would save by being formed from ``value``."""
        saved = 0
        for later in wanted[after:]:
            if value in later:
                return 1 << 20  # needed as it is: worth keeping above all
            for s in later:
                direct = len(s)
                via = len(_expression(s, [value], set(), set()))
                saved += max(0, direct - via)
        return saved

    for g, sums in enumerate(wanted):
        slot_of = {s: k for k, s in enumerate(values) if s in sums}
        free = [k for k in range(cap) if values[k] not in sums]
        formed: list[Formed] = []
        fresh: set[int] = set()
        read: set[Source] = set()
        for s in sums:
            if s in slot_of:
                continue
            terms = _expression(s, values, fresh, read)
            own = [k for k in free if terms[0][0] == ("W", k)]  # in place over the value it extends
            others_needed = {src[1] for src, _ in terms if src[0] == "W"}
            choice = own or sorted((k for k in free if k not in others_needed),
                                   key=lambda k: (values[k] is not None, future_use(values[k], g + 1) if values[k] else 0, k))
            k = choice[0]
            free.remove(k)
            formed.append(Formed(k, terms))
            read |= {src for src, _ in terms}
            values[k] = s
            fresh.add(k)
            slot_of[s] = k
        plan.append((tuple(formed), slot_of))
    return plan


def _csr(sums: tuple[Terms, ...]) -> str:
    """(indptr, idx, coef) of sums, as the text of three tuples."""
    indptr, idx, coef = [0], [], []
    for terms in sums:
        for i, c in terms:
            idx.append(i)
            coef.append(_num(c))
        indptr.append(len(idx))
    return f"({tuple(indptr)!r}, {tuple(idx)!r}, ({', '.join(coef)}{',' if len(coef) == 1 else ''}))"


def _sums_table(sums: tuple[Formed, ...], n_blocks: int) -> str:
    """(slots, (indptr, idx, coef)) of a pass's sums, as text: sum o is written into slot slots[o];
    a source below ``n_blocks`` is that block of the operand, ``n_blocks + k`` is slot k as it is then."""
    csr = _csr(tuple(tuple((src[1] if src[0] == "X" else n_blocks + src[1], c) for src, c in f.terms) for f in sums))
    return f"({tuple(f.slot for f in sums)!r}, {csr})"


def _grid(rows: int, cols: int) -> str:
    br = tuple(i // cols for i in range(rows * cols))
    bc = tuple(i % cols for i in range(rows * cols))
    return f"({br!r}, {bc!r})"


def _combine_table(ph: Phase) -> str:
    """(outputs, homes, (indptr, src, coef)) of a phase's C update, as text."""
    outputs = [c for c, t in enumerate(ph.combine) if t is not None]
    home_index = {c: h for h, c in enumerate(ph.homes)}
    terms = tuple(tuple((home_index[i] if kind == "C" else len(ph.homes) + i, w) for (kind, i), w in ph.combine[c])
                  for c in outputs)
    return f"({tuple(outputs)!r}, {tuple(ph.homes)!r}, {_csr(terms)})"


@functools.lru_cache(maxsize=256)
def level_slots(d: Decomposition) -> tuple[int, int, int, int]:
    """(S, T, P of the set function at the top, P below the top) slots a level of ``d`` allocates:
    below the top the same for its set and acc functions, so that the workspaces they share at a
    depth are never reallocated between them. Cached: the emitter, the workspace figures and the
    cost model's strip rule all ask for it, and a level's schedule takes a while at rank 49."""
    lvs = [fused_level(d, mode) for mode in ("set", "acc")]
    return (max(lv.slots("A") for lv in lvs), max(lv.slots("B") for lv in lvs), lvs[0].p_slots,
            max(lv.p_slots for lv in lvs))


def workspace_slots(d: Decomposition) -> tuple[int, int, int]:
    """Slots of S, T and P that a level's set and acc functions allocate below the top."""
    s_slots, t_slots, _, p_slots = level_slots(d)
    return s_slots, t_slots, p_slots


def _level_function(stem: str, label: str, d: Decomposition, lv: FusedLevel, comments: list[str]) -> list[str]:
    n, m, p = d.format
    s_slots, t_slots, p_slots = workspace_slots(d)
    used = {("C", c) for c in range(n * p)}
    for g in lv.groups:
        for gm in g.gemms:
            used |= {("A", gm.a.block), ("B", gm.b.block)}
    name = f"{stem}_{lv.mode}"
    L = level_prologue(name, lv.mode, label, d, used)
    for ws, count, shape, needed in (("S", s_slots, "bm, bk", lv.slots("A")), ("T", t_slots, "bk, bn", lv.slots("B")),
                                     ("P", p_slots, "bm, bn", lv.p_slots)):
        if needed:  # P: below the top (where only set runs) as many slots as either mode uses
            slots = f"{needed} if level == 0 else {p_slots}" if ws == "P" and lv.mode == "set" else count
            L.append(f"    {ws} = _ws((level, {ws!r}), ({slots}, {shape}), A)")
    tables = []

    def side(s: Side, kind: str, ws: str, rows: int, cols: int) -> str:
        return block_name(kind, s.block, cols, rows) if s.slot is None else f"{ws}[{s.slot}]"

    def dst(t: tuple[str, int]) -> str:
        return block_name("C", t[1], p, n) if t[0] == "C" else f"P[{t[1]}]"

    def group_lines(g: Group, k: int, where: str) -> None:
        for sums, X, ws, dims, grid in ((g.a_sums, "A", "S", "bm, bk", _grid(n, m)),
                                        (g.b_sums, "B", "T", "bk, bn", _grid(m, p))):
            if sums:
                tname = f"{name.upper()}_{where}{k}_{X}"
                how = g.sums_pass(X)
                tables.append(f"{tname} = ({grid}, {_sums_table(sums, n * m if X == 'A' else m * p)}, {how!r})  "
                              f"# {len(sums)} sums of {X}'s blocks")
                L.append(f"    _fused_sums({X}, {dims}, {ws}, {tname})  # {len(sums)} {X}-side sums, "
                         + ("one compiled pass" if how == "numba" else "torch passes"))
        for gm in g.gemms:
            L.append(f"    # {comments[gm.term]}")
            coef = gm.coef * gm.a.scale * gm.b.scale
            L.append(f"    sub_{gm.mode}({side(gm.a, 'A', 'S', n, m)}, {side(gm.b, 'B', 'T', m, p)}, {dst(gm.dst)}, "
                     f"{_alpha(coef)}, deeper)")

    k = 0
    for i, ph in enumerate(lv.phases):
        for g in ph.groups:
            group_lines(g, k, "G")
            k += 1
        if ph.updates:
            tname = f"{name.upper()}_C" + (str(i) if len(lv.phases) > 1 else "")
            what = "the C update" if len(lv.phases) == 1 else f"C update {i + 1} of {len(lv.phases)}"
            tables.append(f"{tname} = ({_grid(n, p)}, {_combine_table(ph)})  # {what}")
            L.append(f"    _fused_combine(C, bm, bn, {'P' if lv.p_slots else 'None'}, {tname}, "
                     f"{ph.accumulate})  # {'every C block' if i == 0 else 'their C blocks'} from the products, one pass")
    for k, g in enumerate(lv.after):
        group_lines(g, k, "AFTER")
    return tables + ["", ""] + L


# The workspaces a fused kernel holds at most, × the size of C: a call whose shape would make them
# larger (K much longer than M and N) runs in strips of K (codegen.runtime.runtime_fused._k_width).
WORKSPACE_BOUND = 2.0


def k_width(decomps: list[Decomposition], cutoff: int, shape: tuple[int, int, int]) -> int:
    """The strip width of K a fused kernel of ``decomps`` and ``cutoff`` runs a call at ``shape`` in
    (:func:`codegen.runtime.runtime_fused._k_width`, the kernel's own rule; K when it is not cut)."""
    return _strip_rule(tuple(decomps), cutoff)(*shape)


@functools.lru_cache(maxsize=256)
def _strip_rule(decomps: tuple[Decomposition, ...], cutoff: int):
    """The kernel's ``_k_width`` bound to a plan's constants, made once per plan (the cost model asks
    for it at every shape of every fused candidate it ranks)."""
    from fmmforge.codegen.runtime.runtime_pad import _rebind

    scope = {"FORMATS": [d.format for d in decomps], "CUTOFF": cutoff, "WORKSPACE_BOUND": WORKSPACE_BOUND,
             "SLOTS": tuple(level_slots(d) for d in decomps)}
    for fn in (lowmem._multiples, runtime_fused._workspace, runtime_fused._k_width):
        scope[fn.__name__] = _rebind(fn, scope)
    return scope["_k_width"]


def fused_workspace_fraction(decomps: list[Decomposition]) -> float:
    """Workspace elements / (M·N) for M = K = N: per depth the S, T and P of :func:`workspace_slots`
    (at the top only the set function's P)."""
    ws = 0.0
    sm = sk = sn = 1.0
    for level, d in enumerate(decomps):
        n, m, p = d.format
        sm, sk, sn = sm / n, sk / m, sn / p
        s_slots, t_slots, p_top, p_slots = level_slots(d)
        if level == 0:  # the top level runs only its set function
            p_slots = p_top
        ws += s_slots * sm * sk + t_slots * sk * sn + p_slots * sm * sn
    return ws


def traffic_bytes(decomps: list[Decomposition], size: tuple[int, int, int], itemsize: int, cutoff: int) -> int:
    """The bytes a plan's additions must move at least at ``size`` (levels that split there): per level
    and subproblem, each input block used by a sum read once and each distinct sum written once (A and
    B side), each product with several outputs read once and each C block those reach written once."""
    M, K, N = size
    total = 0
    calls = 1
    for d in decomps:
        n, m, p = d.format
        if M < n * cutoff or K < m * cutoff or N < p * cutoff:
            break
        M, K, N = M // n, K // m, N // p
        a, b, c = side_units(d)
        total += calls * (a * M * K + b * K * N + c * M * N) * itemsize
        calls *= d.rank
    return total


def side_units(d: Decomposition) -> tuple[int, int, int]:
    """Blocks one level of ``d`` must move at least, per side: (A: input blocks its sums use plus
    distinct sums, B: the same, C: products with several outputs plus the C blocks they reach)."""
    U, V, W = d.factors()
    units = []
    for mat in (U, V):
        sums = {_normalised(_column(mat, r))[0] for r in range(d.rank) if len(_column(mat, r)) > 1}
        units.append(len({i for s in sums for i, _ in s}) + len(sums))
    multi = [r for r in range(d.rank) if len(_column(W, r)) > 1]
    reached = {c for r in multi for c, _ in _column(W, r)}
    return units[0], units[1], len(multi) + len(reached)


def emit_fused(plan: Plan, decomps: list[Decomposition]) -> tuple[str, dict]:
    """(module source, facts) for a torch CPU plan with ``variant="fused"``."""
    stems = function_names(plan, decomps)
    ws = fused_workspace_fraction(decomps)
    fused_source = inline(runtime_fused._sums_py, runtime_fused._combine_py, runtime_fused._compile)
    # the passes are compiled once per process per source: TILE, a global of theirs, is part of it
    digest = hashlib.sha256(f"{fused_source}\nTILE = {runtime_fused.TILE}".encode()).hexdigest()[:16]
    lines = ['"""fmmforge kernel: C = A·B with ' + plan.describe() + ".", "",
             f"Generated by fmmforge {__version__}. Standalone: imports only torch, numpy, numba (and threading,",
             "os, sys, types); copy it anywhere. Usage: C = matmul(A, B) for any M×K and K×N CPU tensors of dtype",
             "DTYPE; threads may call it at once.", "",
             "Fused layout: per level, all A-side sums of a group of products in ONE compiled (numba) pass over",
             "A's blocks, tile by tile, all B-side sums in one, and every C block in one pass over the",
             "products; one-output products accumulate through addmm (coefficient in alpha). The numba",
             "kernels are compiled on the first call of a process (a few seconds per dtype) and shared by the",
             "fused kernels of the process; numba's thread count follows torch's during a call and is",
             "restored after it. Unless OMP_WAIT_POLICY is set, numba's OpenMP pool is started with it PASSIVE",
             "(its workers sleep after a pass instead of spinning against MKL's gemm); the variable is",
             "removed again at once.",
             f"Workspace for M=K=N: {ws:.3f} × size of C (cached per thread; clear_workspaces()).", ""]
    if plan.remainder == "pad":
        ws += 3.0  # at most one padded A, B and C (codegen.runtime.runtime_pad)
    facts: dict = {"variant": "fused", "levels": [], "workspace_fraction_square": ws}
    for level, d in enumerate(decomps):
        lvs = {mode: fused_level(d, mode) for mode in ("set", "acc")}
        n, m, p = d.format
        lines.append(f"Level {level}: {plan.algorithms[level]} <{n},{m},{p}> rank {d.rank}; compiled passes "
                     f"{lvs['set'].passes()} (set), {lvs['acc'].passes()} (accumulate).")
        facts["levels"].append({"algorithm": plan.algorithms[level], "format": d.format, "rank": d.rank,
                                "passes_set": lvs["set"].passes(), "passes_acc": lvs["acc"].passes()})
    lines += ['"""', "", "import os", "import sys", "import threading", "import types", "", "import numba",
              "import numpy as np", "import torch", "", f"DTYPE = torch.{plan.dtype}",
              f"CUTOFF = {plan.cutoff}  # blocks smaller than this go to the vendor gemm",
              f"FORMATS = {[tuple(x.format) for x in decomps]!r}  # <n,m,p> block counts of each level",
              f"TILE = {runtime_fused.TILE}  # columns of a row segment formed at once",
              f"SUMS_PASS = {runtime_fused.SUMS_PASS!r}  # the sums: as each group's table says ('auto'), or all 'torch'"
              " passes, or all 'numba' (one compiled pass per group)",
              f"SLOTS = {tuple(level_slots(d) for d in decomps)!r}  # (S, T, P at the top, P below) slots of each level",
              f"WORKSPACE_BOUND = {WORKSPACE_BOUND!r}  # workspaces held at most, × the size of C (strips of K else)",
              "", "# The compiled passes: their source, compiled once per process and shared by every kernel with it.",
              f"_FUSED_NAME = 'fmmforge_fused_{digest}'", f"_FUSED_SOURCE = {fused_source!r}",
              "", "", thread_caches(False).rstrip(), "", "", backend_runtime(runtime_torch).rstrip(), "", "",
              inline(lowmem._level, lowmem._multiples, lowmem._peel, runtime_fused._flat, runtime_fused._passes,
                     runtime_fused._sleeping_pool, runtime_fused._rows_contiguous,
                     runtime_parallel._combination, runtime_fused._fused_sums, runtime_fused._fused_combine,
                     runtime_fused._workspace, runtime_fused._k_width, runtime_fused._top).rstrip()]
    if plan.remainder == "pad":
        lines += ["", "", runtime_pad.source().rstrip()]
    lines += level_functions(plan, decomps, stems, lambda stem, label, d, mode, comments: _level_function(
        stem, label, d, fused_level(d, mode), comments))
    return "\n".join(lines) + "\n", facts

