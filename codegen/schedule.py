"""One recursion level of a fast algorithm as a straight-line program over blocks.

A level splits A (M×K) into n×m blocks ``A_a``, B (K×N) into m×p blocks ``B_b`` and C (M×N)
into n×p blocks ``C_c`` and computes ``C_c (+)= alpha · Σ_r W[c,r]·M_r`` with
``M_r = (Σ_a U[a,r]·A_a)·(Σ_b V[b,r]·B_b)``. The schedule is written for *low memory*:

* one workspace ``S`` for the A-side sum, one ``T`` for the B-side sum and (only when some
  product needs it) one ``P`` for a product: three blocks per level, whatever the rank;
* a product is accumulated into C as soon as it is ready: a product with one output goes
  straight into its C block (the recursive call or the leaf gemm does ``C += α·S·T``); a product
  with several outputs is written into one output that is still empty and copied/added from
  there into the others; only when all its outputs already hold data does it go through ``P``;
* scalar coefficients never cost a pass: a single-block side is used as a view with its
  coefficient folded into the product's alpha, and a sum is normalised so that its first term
  has coefficient 1 (the scale goes into alpha as well);
* shared sub-expressions of the linear combinations are reused through the workspace: when
  the next product's A-side sum equals λ·(current S) plus a few blocks, S is updated in place
  (one pass per differing block) instead of being rebuilt. The product order is chosen to
  make such reuse and direct writes into C frequent (greedy start, then a deterministic
  local search on the pass count).

Two variants exist per level: ``set`` (C's previous content is ignored; empty C blocks may
serve as scratch) and ``acc`` (C += ...; every C block already holds data).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

Mode = Literal["set", "acc"]

# Cost of a pass in units of "one block read or written" (a memory-bound model).
COST_ADD2 = 3  # dst = x + c·y
COST_AXPY = 3  # dst += c·x
COST_SCALE = 2  # dst = c·x


@dataclass(frozen=True)
class Operand:
    """A block of an input (``A``/``B`` with its index), a workspace (``S``/``T``/``P``) or ``C``."""

    kind: str  # "A", "B", "C", "S", "T", "P"
    index: int = -1


@dataclass(frozen=True)
class Add2:
    """dst = x + coef·y"""

    dst: Operand
    x: Operand
    coef: Fraction
    y: Operand


@dataclass(frozen=True)
class Axpy:
    """dst += coef·x"""

    dst: Operand
    coef: Fraction
    x: Operand


@dataclass(frozen=True)
class Scale:
    """dst = coef·x (a copy when coef is 1)"""

    dst: Operand
    coef: Fraction
    x: Operand


@dataclass(frozen=True)
class Product:
    """dst (=|+=) alpha·coef·a·b, by the next level (or the leaf gemm). ``mode`` is set or acc."""

    dst: Operand
    a: Operand
    b: Operand
    coef: Fraction
    mode: Mode
    term: int  # which product M_r (0-based) of the decomposition


Op = Add2 | Axpy | Scale | Product


@dataclass
class LevelSchedule:
    fmt: tuple[int, int, int]
    mode: Mode
    order: list[int]
    ops: list[Op] = field(default_factory=list)
    uses_p: bool = False

    @property
    def passes(self) -> int:
        """Element-wise passes over a block (additions, copies, scalings)."""
        return sum(1 for op in self.ops if not isinstance(op, Product))


def _ops_cost(ops: list[Op]) -> int:
    total = 0
    for op in ops:
        if isinstance(op, Add2):
            total += COST_ADD2
        elif isinstance(op, Axpy):
            total += COST_AXPY
        elif isinstance(op, Scale):
            total += COST_SCALE
    return total


Coef = int | Fraction  # an integral coefficient is kept as an int: the search below runs on them


def _exact(x: object) -> Coef:
    f = Fraction(x)  # type: ignore[arg-type]
    return f.numerator if f.denominator == 1 else f


def _ratio(a: Coef, b: Coef) -> Coef:
    """a / b exactly, as an int when it is one (Fraction arithmetic is the schedule search's cost)."""
    if type(a) is int and type(b) is int:
        q, r = divmod(a, b)
        return q if r == 0 else Fraction(a, b)
    return _exact(Fraction(a) / b)


def columns(d: Decomposition) -> tuple[list[dict[int, Coef]], list[dict[int, Coef]], list[dict[int, Fraction]]]:
    """Per product r of ``d``: its nonzero A-side, B-side and C-side coefficients, {block: coefficient}
    in block order (used by the schedules, the parallel layout's products table and its cost walk)."""
    U, V, W = d.factors()
    R = d.rank
    us = [{a: _exact(U[a, r]) for a in range(U.shape[0]) if U[a, r] != 0} for r in range(R)]
    vs = [{b: _exact(V[b, r]) for b in range(V.shape[0]) if V[b, r] != 0} for r in range(R)]
    ws = [{c: Fraction(W[c, r]) for c in range(W.shape[0]) if W[c, r] != 0} for r in range(R)]
    return us, vs, ws


def _side(state: dict[int, Coef] | None, terms: dict[int, Coef], kind: str, ws: str,
          ops: list[Op]) -> tuple[Operand, Fraction, dict[int, Coef] | None]:
    """Emit the ops computing one side's sum; return (operand, scale folded into alpha, new state)."""
    if len(terms) == 1:
        ((idx, coef),) = terms.items()
        return Operand(kind, idx), Fraction(coef), state
    dst = Operand(ws)
    fresh = len(terms) - 1
    best: tuple[int, Coef, dict[int, Coef]] | None = None
    if state:
        union = terms.keys() | state.keys()
        for idx, coef in terms.items():
            if idx not in state:
                continue
            lam = _ratio(coef, state[idx])
            diff = {}
            for i in union:
                c = _ratio(terms.get(i, 0), lam) - state.get(i, 0)
                if c:
                    diff[i] = c
            if best is None or len(diff) < len(best[2]):
                best = (len(diff), lam, diff)
    if best is not None and best[0] < fresh:
        _, lam, diff = best
        for idx in sorted(diff):
            ops.append(Axpy(dst, Fraction(diff[idx]), Operand(kind, idx)))
        return dst, Fraction(lam), {i: _ratio(c, lam) for i, c in terms.items()}
    items = sorted(terms.items())
    lam = items[0][1]
    ops.append(Add2(dst, Operand(kind, items[0][0]), Fraction(_ratio(items[1][1], lam)), Operand(kind, items[1][0])))
    for idx, coef in items[2:]:
        ops.append(Axpy(dst, Fraction(_ratio(coef, lam)), Operand(kind, idx)))
    return dst, Fraction(lam), {i: _ratio(c, lam) for i, c in terms.items()}


class _Emitter:
    """Writes the ops product by product; its state (workspace contents, filled C blocks) is small."""

    def __init__(self, cols, n_c: int, mode: Mode, split_p: int = 0) -> None:
        self.cols = cols
        self.split_p = split_p  # uneven blocks (codegen.runtime.runtime_split): C's block columns, else 0
        self.ops: list[Op] = []
        self.s_state: dict[int, Coef] | None = None
        self.t_state: dict[int, Coef] | None = None
        self.filled = [mode == "acc"] * n_c
        self.uses_p = False

    def copy(self, with_ops: bool = True) -> "_Emitter":
        """A copy to try a step on; ``with_ops=False`` starts it with no ops (only its new ones)."""
        other = _Emitter.__new__(_Emitter)
        other.cols, other.ops, other.split_p = self.cols, list(self.ops) if with_ops else [], self.split_p
        other.s_state, other.t_state = self.s_state, self.t_state
        other.filled, other.uses_p = list(self.filled), self.uses_p
        return other

    def step(self, r: int) -> None:
        us, vs, ws = self.cols
        ops, filled = self.ops, self.filled
        a_op, su, self.s_state = _side(self.s_state, us[r], "A", "S", ops)
        b_op, sv, self.t_state = _side(self.t_state, vs[r], "B", "T", ops)
        scale = su * sv
        outs = [(c, w * scale) for c, w in sorted(ws[r].items())]
        if not outs:
            return  # a product nobody uses (never in a reduced scheme)
        if len(outs) == 1:
            c, w = outs[0]
            ops.append(Product(Operand("C", c), a_op, b_op, w, "acc" if filled[c] else "set", r))
            filled[c] = True
            return
        empty = [(c, w) for c, w in outs if not filled[c] and self._holds(c, outs)]
        if empty:
            c0, w0 = empty[0]
            ops.append(Product(Operand("C", c0), a_op, b_op, w0, "set", r))
            filled[c0] = True
            for c, w in outs:
                if c == c0:
                    continue
                if filled[c]:
                    ops.append(Axpy(Operand("C", c), w / w0, Operand("C", c0)))
                else:
                    ops.append(Scale(Operand("C", c), w / w0, Operand("C", c0)))
                    filled[c] = True
        else:
            self.uses_p = True
            ops.append(Product(Operand("P"), a_op, b_op, Fraction(1), "set", r))
            for c, w in outs:  # (an output still empty only with uneven blocks: no empty one could hold it)
                ops.append((Axpy if filled[c] else Scale)(Operand("C", c), w, Operand("P")))
                filled[c] = True

    def _holds(self, c0: int, outs) -> bool:
        """Whether C block ``c0`` can hold a product for its other outputs: always with even blocks;
        with uneven ones (the last row and column of blocks may be shorter) only when no other
        output lies above or left of it, so that its extent covers theirs."""
        if not self.split_p:
            return True
        i0, j0 = divmod(c0, self.split_p)
        return all(divmod(c, self.split_p)[0] >= i0 and divmod(c, self.split_p)[1] >= j0 for c, _ in outs)

    def finish(self) -> None:
        for c, done in enumerate(self.filled):
            if not done:  # an output no product touches (degenerate tensors only): zero it
                self.ops.append(Scale(Operand("C", c), Fraction(0), Operand("C", c)))
                self.filled[c] = True


def _emit(cols, order: list[int], n_c: int, mode: Mode, split_p: int = 0) -> tuple[list[Op], bool]:
    e = _Emitter(cols, n_c, mode, split_p)
    for r in order:
        e.step(r)
    e.finish()
    return e.ops, e.uses_p


def _greedy_order(cols, n_c: int, mode: Mode, split_p: int = 0) -> list[int]:
    """Multi-output products first (they can claim empty C blocks), then by shared sides."""
    us, vs, ws = cols
    remaining = list(range(len(us)))
    order: list[int] = []
    state = _Emitter(cols, n_c, mode, split_p)
    while remaining:
        best = None
        for r in remaining:
            trial = state.copy(with_ops=False)
            trial.step(r)
            cost = _ops_cost(trial.ops) - 4 * len(ws[r])  # many outputs early
            if best is None or cost < best[0]:
                best = (cost, r, trial)
        order.append(best[1])
        remaining.remove(best[1])
        best[2].ops = state.ops + best[2].ops
        state = best[2]
    return order


def side_passes(ops: list[Op]) -> tuple[int, int, int]:
    """A program's element-wise passes by the blocks they run over: A-side (into S), B-side
    (into T) and C-side (into C or P)."""
    counts = {"S": 0, "T": 0, "C": 0, "P": 0}
    for op in ops:
        if not isinstance(op, Product):
            counts[op.dst.kind] += 1
    return counts["S"], counts["T"], counts["C"] + counts["P"]


def estimate_side_passes(d: Decomposition, mode: Mode = "set") -> tuple[int, int, int]:
    """:func:`side_passes` of the program written in the scheme's own product order, without the
    order search of :func:`schedule_level`: within about 15 % of its pass count on the built-in
    and DeepMind schemes, at a fiftieth of its cost for rank 49 (a tuner ranks hundreds of them)."""
    if d.format is None or d.field != "Z":
        raise FmmforgeError("codegen needs a matrix-multiplication scheme over Z (rationals)")
    n, _, p = d.format
    ops, _ = _emit(columns(d), list(range(d.rank)), n * p, mode)
    return side_passes(ops)


_CACHE: dict[tuple[str, str, int, int], "LevelSchedule"] = {}


def schedule_level(d: Decomposition, mode: Mode, search_steps: int = 400, seed: int = 0,
                   split: bool = False) -> LevelSchedule:
    """The straight-line program for one level of ``d`` (see the module docstring); memoised.
    ``split``: for uneven blocks (codegen.runtime.runtime_split), where a C block holds a product for
    other C blocks only if it is at least as large as each of them."""
    exact = hashlib.sha256(repr((d.target.describe(), d.denominators(),
                                 [(x.shape, x.tobytes()) for x in d.numerators()])).encode()).hexdigest()
    key = (exact, mode, search_steps, seed, split)
    if key not in _CACHE:
        _CACHE[key] = _schedule_level(d, mode, search_steps, seed, split)
    return _CACHE[key]


def _schedule_level(d: Decomposition, mode: Mode, search_steps: int, seed: int, split: bool = False) -> LevelSchedule:
    if d.format is None or d.field != "Z":
        raise FmmforgeError("codegen needs a matrix-multiplication scheme over Z (rationals)")
    n, m, p = d.format
    cols = columns(d)
    n_c = n * p
    split_p = p if split else 0
    order = _greedy_order(cols, n_c, mode, split_p) if d.rank <= 64 else list(range(d.rank))
    ops, uses_p = _emit(cols, order, n_c, mode, split_p)
    best = (_ops_cost(ops) + (1 if uses_p else 0), order, ops, uses_p)
    rng = random.Random(seed)
    R = d.rank
    if R > 1:
        for _ in range(search_steps if R <= 32 else search_steps // 4 if R <= 64 else 0):
            cand = list(best[1])
            i, j = rng.randrange(R), rng.randrange(R)
            if i == j:
                continue
            if rng.random() < 0.5:
                cand[i], cand[j] = cand[j], cand[i]
            else:
                cand.insert(j, cand.pop(i))
            ops, uses_p = _emit(cols, cand, n_c, mode, split_p)
            cost = _ops_cost(ops) + (1 if uses_p else 0)
            if cost < best[0]:
                best = (cost, cand, ops, uses_p)
    return LevelSchedule((n, m, p), mode, best[1], best[2], best[3])
