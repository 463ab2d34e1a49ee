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
temporary for it and substitute it wherever it occurs. Everything is exact (Fractions, or
integers mod 2 for Z2 schemes), and :meth:`SideAdditions.expand` rebuilds every form from
the temporaries, so the result can be checked against the factor matrices.

The result is meant for code generators as well as for the additions reward: the
temporaries are in evaluation order (each uses inputs or earlier temporaries only) and each
form is a short list of (coefficient, operand) terms.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from fmmforge.core.decomposition import Decomposition

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


def eliminate(d: Decomposition) -> Additions:
    """Greedy CSE (Paar's heuristic, sign- and scale-aware) on the three sides of ``d``."""
    U, V, W = d.numerators()
    du, dv, dw = d.denominators()
    modulus = 2 if d.field == "Z2" else None
    return Additions(
        _side("U", _column_forms(U, du, modulus), modulus),
        _side("V", _column_forms(V, dv, modulus), modulus),
        _side("W", _column_forms(W.T, dw, modulus), modulus),
    )


# ---------------------------------------------------------------------------- internals
def _column_forms(num: np.ndarray, den: int, modulus: int | None) -> list[dict[int, Fraction]]:
    """Column r of ``num``/``den`` as {row: coefficient} (nonzero entries only)."""
    forms = []
    for col in np.asarray(num).T.tolist():
        form = {}
        for i, x in enumerate(col):
            if modulus is not None:
                x %= modulus
            if x:
                form[i] = Fraction(1) if modulus is not None else Fraction(int(x), den)
        forms.append(form)
    return forms


def _side(side: str, inputs: list[dict[int, Fraction]], modulus: int | None) -> SideAdditions:
    kind = INPUT_KIND[side]
    naive = sum(max(len(f) - 1, 0) for f in inputs)
    forms: list[dict[Operand, Fraction]] = [{Operand(kind, i): c for i, c in f.items()} for f in inputs]
    temporaries = _greedy_pairs(forms, modulus)
    final = tuple(tuple((c, op) for op, c in sorted(f.items())) for f in forms)
    return SideAdditions(side, naive, tuple(temporaries), final, modulus)


PairKey = tuple[Operand, Operand, Fraction]


def _key(x: Operand, cx: Fraction, y: Operand, cy: Fraction, modulus: int | None) -> PairKey:
    """The pair key of terms cx·x and cy·y: (smaller operand, larger operand, ratio)."""
    if y < x:
        x, cx, y, cy = y, cy, x, cx
    return (x, y, Fraction(1) if modulus is not None else cy / cx)


def _pairs(form: dict[Operand, Fraction], modulus: int | None) -> Iterator[PairKey]:
    items = list(form.items())
    for i, (x, cx) in enumerate(items):
        for y, cy in items[i + 1:]:
            yield _key(x, cx, y, cy, modulus)


def _greedy_pairs(forms: list[dict[Operand, Fraction]], modulus: int | None) -> list[Temporary]:
    """Replace the most frequent pair by a temporary until no pair occurs twice (in place).

    Pair occurrences are kept incrementally (a substitution only changes the pairs that
    involve the two replaced operands or the new temporary), with a lazy max-heap, so large
    schemes stay fast. Ties go to the smallest key, which makes the result deterministic.
    """
    where: dict[PairKey, set[int]] = {}
    for idx, form in enumerate(forms):
        for key in _pairs(form, modulus):
            where.setdefault(key, set()).add(idx)
    heap = [(-len(s), key) for key, s in where.items() if len(s) > 1]
    heapq.heapify(heap)
    temporaries: list[Temporary] = []
    while heap:
        negcount, key = heapq.heappop(heap)
        current = where.get(key)
        if current is None or len(current) < 2:
            continue
        if len(current) != -negcount:  # stale entry: the count dropped since it was pushed
            heapq.heappush(heap, (-len(current), key))
            continue
        x, y, ratio = key
        temp = Temporary(len(temporaries), Fraction(1), x, ratio, y)
        temporaries.append(temp)
        t = temp.operand
        touched: set[PairKey] = set()
        for idx in sorted(current):
            form = forms[idx]
            cx, cy = form.pop(x), form.pop(y)
            gone = [_key(x, cx, y, cy, modulus)]
            for z, cz in form.items():
                gone.append(_key(x, cx, z, cz, modulus))
                gone.append(_key(y, cy, z, cz, modulus))
            for old in gone:
                users = where[old]
                users.discard(idx)
                if not users:
                    del where[old]
            for z, cz in form.items():
                new = _key(t, cx, z, cz, modulus)
                where.setdefault(new, set()).add(idx)
                touched.add(new)
            form[t] = cx
        for new in touched:
            if len(where[new]) > 1:
                heapq.heappush(heap, (-len(where[new]), new))
    return temporaries


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
