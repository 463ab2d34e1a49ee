"""Additions of a decomposition after common-subexpression elimination (CSE).

A rank-R scheme computes three families of linear forms: the left operands
``Σ_a U[a,r]·A_a`` (one per product), the right operands ``Σ_b V[b,r]·B_b`` and the outputs
``C_c = Σ_r W[c,r]·M_r``. Written out naively a form with k terms costs k-1 additions.
Forms often share pairs of terms (Winograd's variant of Strassen is the classical example:
24 naive additions, 15 with reuse), so a code generator should compute each shared pair
once into a temporary.

:func:`eliminate` finds such temporaries with Paar's greedy heuristic: repeatedly take the
pair of operands that occurs most often, with the same coefficient ratio, across the forms
of one side (``x + y``, ``-x - y`` and ``2x + 2y`` all match ``t = x + y``), define a
temporary for it and substitute it wherever it occurs. The plain greedy is often a few
additions short (Laderman: 70, where other choices give 66), so it is followed by randomized
restarts (ties broken at random, sometimes a pair one occurrence short of the most frequent),
the same is done on each side's transposed forms, whose program is run backwards (Tellegen's
principle; Laderman's outputs: 34 -> 30), and each side keeps its cheapest program.
``restarts`` trades time for additions (:data:`FAST_RESTARTS` by default,
:data:`THOROUGH_RESTARTS` for reports), and a seed gives the same result everywhere. The count is additions of the three sides U, V and W together,
each side's forms computed once (docs/additions.md). Everything is exact (Fractions, or
integers mod 2 for Z2 schemes), and :meth:`SideAdditions.expand` rebuilds every form from
the temporaries, so the result can be checked against the factor matrices.

The result is meant for code generators as well as for the additions reward: the
temporaries are in evaluation order (each uses inputs or earlier temporaries only) and each
form is a short list of (coefficient, operand) terms.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

# what the operands of each side's forms are: blocks of A, blocks of B, the products M_r
INPUT_KIND = {"U": "A", "V": "B", "W": "M"}
TEMP_KIND = "t"


@dataclass(frozen=True, order=True)
class Operand:
    """An input of a side (``A``/``B`` entry or product ``M``, 0-based index) or a temporary ``t``."""

    kind: str
    index: int

    @property
    def is_temporary(self) -> bool:
        return self.kind == TEMP_KIND

    def __str__(self) -> str:
        return f"{self.kind}{self.index}"


Term = tuple[Fraction, Operand]


@dataclass(frozen=True)
class Temporary:
    """``t<index> = coef1·operand1 + coef2·operand2``: one addition, computed once."""

    index: int
    coef1: Fraction
    operand1: Operand
    coef2: Fraction
    operand2: Operand

    @property
    def operand(self) -> Operand:
        return Operand(TEMP_KIND, self.index)

    def as_tuple(self) -> tuple[Fraction, Operand, Fraction, Operand]:
        return (self.coef1, self.operand1, self.coef2, self.operand2)

    def __str__(self) -> str:
        return f"t{self.index} = {_term_text(self.coef1, self.operand1, True)} {_term_text(self.coef2, self.operand2, False)}"


@dataclass(frozen=True)
class SideAdditions:
    """The linear forms of one side after CSE.

    ``forms[i]`` is form i (product i for U and V, output entry i for W) as terms over the
    side's inputs and temporaries; ``temporaries`` are in evaluation order.
    """

    side: str
    naive: int
    temporaries: tuple[Temporary, ...]
    forms: tuple[tuple[Term, ...], ...]
    modulus: int | None = None

    @property
    def eliminated(self) -> int:
        """Additions with reuse: one per temporary plus (terms - 1) per form."""
        return len(self.temporaries) + sum(max(len(f) - 1, 0) for f in self.forms)

    @property
    def saved(self) -> int:
        return self.naive - self.eliminated

    def expand(self) -> list[dict[int, Fraction]]:
        """Every form rewritten over the side's inputs only (input index -> coefficient)."""
        temps: list[dict[int, Fraction]] = []
        for t in self.temporaries:
            acc: dict[int, Fraction] = {}
            for coef, op in ((t.coef1, t.operand1), (t.coef2, t.operand2)):
                _accumulate(acc, coef, op, temps, self.modulus)
            temps.append(acc)
        out = []
        for form in self.forms:
            acc = {}
            for coef, op in form:
                _accumulate(acc, coef, op, temps, self.modulus)
            out.append(acc)
        return out


@dataclass(frozen=True)
class Additions:
    """Naive and CSE addition counts of a scheme, side by side, with the temporaries."""

    U: SideAdditions
    V: SideAdditions
    W: SideAdditions

    @property
    def sides(self) -> tuple[SideAdditions, SideAdditions, SideAdditions]:
        return (self.U, self.V, self.W)

    @property
    def naive(self) -> int:
        return sum(s.naive for s in self.sides)

    @property
    def eliminated(self) -> int:
        return sum(s.eliminated for s in self.sides)


FAST_RESTARTS = 16  # the default: the kernels' tables and the additions reward (every search step)
THOROUGH_RESTARTS = 2000  # reports (benchmarks/additions.py --thorough)
DETOUR = 0.15  # chance, in every other restart, of taking a pair one occurrence short of the most frequent


def eliminate(d: Decomposition, restarts: int = FAST_RESTARTS, seed: int = 0,
              transpose: bool = True) -> Additions:
    """CSE of the three sides of ``d``: Paar's greedy (sign- and scale-aware), then ``restarts``
    randomized greedy runs per side, keeping the fewest additions (never more than the plain greedy).
    With ``transpose`` each side is also eliminated through its transposed forms (Tellegen's
    principle, :func:`_transposed`) and the cheaper program is kept.

    Deterministic for a (``restarts``, ``seed``); ``restarts=0, transpose=False`` is the plain greedy.
    """
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise FmmforgeError(f"restarts must be a whole number >= 0, not {restarts!r}")
    U, V, W = d.numerators()
    du, dv, dw = d.denominators()
    modulus = 2 if d.field == "Z2" else None
    return Additions(
        _side("U", U, du, modulus, restarts, seed, transpose),
        _side("V", V, dv, modulus, restarts, seed, transpose),
        _side("W", np.asarray(W).T, dw, modulus, restarts, seed, transpose),
    )


# ---------------------------------------------------------------------------- internals
# Inside the search a side's operands are ints (input i is i, temporary k is n_inputs + k, so
# inputs sort before temporaries as Operands do) and coefficients are the integer numerators
# (1 mod 2): hashing and comparing ints instead of Operands and Fractions is what makes many
# restarts affordable. A pair key is (x, y, p, q) with x < y and cy/cx = p/q in lowest terms.
IntForm = dict[int, int]
PairKey = tuple[int, int, int, int]


def _column_forms(num: np.ndarray, modulus: int | None) -> list[IntForm]:
    """Column r of ``num`` as {row: numerator} (nonzero entries only; mod 2 for Z2)."""
    forms = []
    for col in np.asarray(num).T.tolist():
        form = {}
        for i, x in enumerate(col):
            x = int(x) % modulus if modulus is not None else int(x)
            if x:
                form[i] = x
        forms.append(form)
    return forms


def _side(side: str, num: np.ndarray, den: int, modulus: int | None, restarts: int,
          seed: int, transpose: bool) -> SideAdditions:
    """The cheaper of eliminating the side's forms directly and of transposing the elimination of
    the transposed forms, rebuilt from its temporaries and compared with the factor matrix exactly
    before it is returned (a mismatch is a bug here, never a result)."""
    num = np.asarray(num)
    want = [{i: Fraction(1) if modulus is not None else Fraction(c, den) for i, c in f.items()}
            for f in _column_forms(num, modulus)]
    best = _direct_side(side, num, den, modulus, restarts, seed)
    if transpose and num.size:
        dual = _transposed(side, _direct_side(side, num.T, den, modulus, restarts, seed), num.shape[0], best)
        if dual.eliminated < best.eliminated and dual.expand() == want:
            return dual  # rebuilt and compared just now
    if best.expand() != want:
        raise RuntimeError(f"internal error: the eliminated {side} side does not rebuild its forms")
    return best


def _direct_side(side: str, num: np.ndarray, den: int, modulus: int | None, restarts: int,
                 seed: int) -> SideAdditions:
    inputs = _column_forms(num, modulus)
    n = np.asarray(num).shape[0]
    naive = sum(max(len(f) - 1, 0) for f in inputs)
    pairs, forms = _best_of(inputs, n, modulus, restarts, seed, side)
    kind = INPUT_KIND[side]

    def operand(i: int) -> Operand:
        return Operand(kind, i) if i < n else Operand(TEMP_KIND, i - n)

    def coef(c: int) -> Fraction:
        return Fraction(1) if modulus is not None else Fraction(c, den)

    temporaries = tuple(Temporary(k, Fraction(1), operand(x), Fraction(p, q), operand(y))
                        for k, (x, y, p, q) in enumerate(pairs))
    final = tuple(tuple((coef(c), operand(i)) for i, c in sorted(f.items())) for f in forms)
    return SideAdditions(side, naive, temporaries, final, modulus)


def _key(x: int, cx: int, y: int, cy: int, modulus: int | None) -> PairKey:
    """The pair key of terms cx·x and cy·y: (smaller operand, larger operand, ratio p/q)."""
    if y < x:
        x, cx, y, cy = y, cy, x, cx
    if modulus is not None or cx == cy:
        return (x, y, 1, 1)
    g = math.gcd(cx, cy)
    p, q = cy // g, cx // g
    return (x, y, -p, -q) if q < 0 else (x, y, p, q)


def _pairs(form: IntForm, modulus: int | None) -> Iterator[PairKey]:
    items = list(form.items())
    for i, (x, cx) in enumerate(items):
        for y, cy in items[i + 1:]:
            yield _key(x, cx, y, cy, modulus)


def _key_order(key: PairKey) -> tuple[int, int, Fraction]:
    """The order of the plain greedy's ties: operands, then the ratio's value."""
    return (key[0], key[1], Fraction(key[2], key[3]))


class _PairIndex:
    """Which forms hold each pair key, with the keys bucketed by how many forms hold them.

    A substitution only changes the pairs that involve the two replaced operands or the new
    temporary, so the index is kept up to date incrementally and large schemes stay fast.
    """

    def __init__(self, forms: list[IntForm], modulus: int | None) -> None:
        self.where: dict[PairKey, set[int]] = {}
        for idx, form in enumerate(forms):
            for key in _pairs(form, modulus):
                self.where.setdefault(key, set()).add(idx)
        self.buckets: dict[int, set[PairKey]] = {}
        for key, users in self.where.items():
            if len(users) > 1:
                self.buckets.setdefault(len(users), set()).add(key)

    def _move(self, key: PairKey, old: int, new: int) -> None:
        if old > 1:
            bucket = self.buckets[old]
            bucket.discard(key)
            if not bucket:
                del self.buckets[old]
        if new > 1:
            self.buckets.setdefault(new, set()).add(key)

    def add(self, key: PairKey, idx: int) -> None:
        users = self.where.setdefault(key, set())
        if idx not in users:
            users.add(idx)
            self._move(key, len(users) - 1, len(users))

    def remove(self, key: PairKey, idx: int) -> None:
        users = self.where[key]
        if idx in users:
            users.discard(idx)
            self._move(key, len(users) + 1, len(users))
        if not users:
            del self.where[key]


def _greedy_pairs(forms: list[IntForm], modulus: int | None, first_temp: int,
                  rng: random.Random | None = None, detour: float = 0.0) -> list[PairKey]:
    """Replace a most frequent pair by a temporary until no pair occurs twice (in place).

    Returns the temporaries' pairs in evaluation order (temporary k is operand first_temp + k).
    Without ``rng`` ties go to the smallest key (Paar's greedy, deterministic). With ``rng``
    ties are broken at random and, with probability ``detour``, a pair one occurrence short
    of the most frequent is taken instead (when it still occurs twice): a restart explores
    choices the plain greedy never makes, and :func:`_best_of` keeps the cheapest outcome.
    """
    index = _PairIndex(forms, modulus)
    chosen: list[PairKey] = []
    while index.buckets:
        count = max(index.buckets)
        if rng is not None and detour and count - 1 in index.buckets and rng.random() < detour:
            count -= 1
        bucket = index.buckets[count]
        key = min(bucket, key=_key_order) if rng is None else rng.choice(sorted(bucket))
        x, y = key[0], key[1]
        t = first_temp + len(chosen)
        chosen.append(key)
        for idx in sorted(index.where[key]):
            form = forms[idx]
            cx, cy = form.pop(x), form.pop(y)
            index.remove(key, idx)
            for z, cz in form.items():
                index.remove(_key(x, cx, z, cz, modulus), idx)
                index.remove(_key(y, cy, z, cz, modulus), idx)
            for z, cz in form.items():
                index.add(_key(t, cx, z, cz, modulus), idx)
            form[t] = cx
    return chosen


def _best_of(forms: list[IntForm], first_temp: int, modulus: int | None, restarts: int, seed: int,
             side: str) -> tuple[list[PairKey], list[IntForm]]:
    """The plain greedy, then ``restarts`` randomized runs; the fewest additions wins (first on ties).

    Every run starts from a copy of ``forms``; run i draws from ``Random(f"{seed}:{side}:{i}")``,
    so a seed gives the same result on every machine and Python version.
    """
    best: tuple[int, list[PairKey], list[IntForm]] | None = None
    for i in range(restarts + 1):
        work = [dict(f) for f in forms]
        rng = None if i == 0 else random.Random(f"{seed}:{side}:{i}")
        temps = _greedy_pairs(work, modulus, first_temp, rng, detour=0.0 if i % 2 else DETOUR)
        cost = len(temps) + sum(max(len(f) - 1, 0) for f in work)
        if best is None or cost < best[0]:
            best = (cost, temps, work)
    assert best is not None
    return best[1], best[2]


Node = tuple[str, int]  # ("x", i): input i of the side; ("t", m): temporary m of the transposed program


def _transposed(side: str, dual: SideAdditions, n_inputs: int, direct: SideAdditions) -> SideAdditions:
    """Tellegen's transposition: a program for the transposed forms, run backwards, computes the forms.

    ``dual`` computes, for every input i of the side, the form ``Σ_j M[i,j]·y_j`` over the side's
    forms j. Reversing its edges, every node becomes the sum of its users: the forms j come out as
    ``y_j``'s users, with (users - 1) additions per node instead of (terms - 1) per form. A node
    with one user is that user scaled (no addition); merged duplicates are added up exactly.
    """
    modulus, kind = dual.modulus, INPUT_KIND[side]
    uses: dict[Node, list[tuple[Fraction, Node]]] = {}

    def node(op: Operand) -> Node:
        return ("t", op.index) if op.is_temporary else ("y", op.index)

    for i, form in enumerate(dual.forms):
        for c, op in form:
            uses.setdefault(node(op), []).append((c, ("x", i)))
    for t in dual.temporaries:
        for c, op in ((t.coef1, t.operand1), (t.coef2, t.operand2)):
            uses.setdefault(node(op), []).append((c, ("t", t.index)))
    value: dict[Node, tuple[Fraction, Operand] | None] = {("x", i): (Fraction(1), Operand(kind, i))
                                                          for i in range(n_inputs)}
    temporaries: list[Temporary] = []

    def users_sum(n: Node) -> dict[Operand, Fraction]:
        acc: dict[Operand, Fraction] = {}
        for c, user in uses.get(n, []):
            v = value[user]
            if v is not None:
                acc[v[1]] = acc.get(v[1], Fraction(0)) + c * v[0]
        if modulus is not None:
            acc = {op: Fraction(int(c) % modulus) for op, c in acc.items()}
        return {op: c for op, c in acc.items() if c}

    for t in reversed(dual.temporaries):
        terms = sorted(users_sum(("t", t.index)).items())
        if not terms:
            value[("t", t.index)] = None
            continue
        (operand, scale), rest = terms[0], terms[1:]
        for op, c in rest:
            ratio = c / scale if modulus is None else Fraction(1)
            temp = Temporary(len(temporaries), Fraction(1), operand, ratio, op)
            temporaries.append(temp)
            operand = temp.operand
        value[("t", t.index)] = (scale, operand)
    forms = tuple(tuple((c, op) for op, c in sorted(users_sum(("y", j)).items())) for j in range(len(direct.forms)))
    return SideAdditions(side, direct.naive, tuple(temporaries), forms, modulus)


def _accumulate(acc: dict[int, Fraction], coef: Fraction, op: Operand,
                temps: list[dict[int, Fraction]], modulus: int | None) -> None:
    source = temps[op.index] if op.is_temporary else {op.index: Fraction(1)}
    for i, c in source.items():
        value = acc.get(i, Fraction(0)) + coef * c
        if modulus is not None:
            value = Fraction(int(value) % modulus)
        if value:
            acc[i] = value
        else:
            acc.pop(i, None)


def _term_text(coef: Fraction, op: Operand, first: bool) -> str:
    sign = "-" if coef < 0 else ("" if first else "+")
    mag = abs(coef)
    body = str(op) if mag == 1 else f"{mag}·{op}"
    return f"{sign}{body}" if first else f"{sign} {body}"
