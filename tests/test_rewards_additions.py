"""Common-subexpression elimination of the linear forms (core/additions.py)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from fmmforge.core import transforms
from fmmforge.core.additions import Operand, eliminate
from fmmforge.core.builtins import builtin
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition
from hypothesis import given, settings
from hypothesis import strategies as st


def original_forms(d: Decomposition) -> list[list[dict[int, Fraction]]]:
    """The forms straight from the factor matrices: columns of U, V and rows of W."""
    U, V, W = d.factors()
    out = []
    for M in (U, V, W.T):
        forms = []
        for col in M.T:
            form = {}
            for i, x in enumerate(col):
                x = Fraction(x)
                if d.field == "Z2":
                    x = Fraction(int(x) % 2)
                if x:
                    form[i] = x
            forms.append(form)
        out.append(forms)
    return out


def assert_exact(d: Decomposition) -> None:
    adds = eliminate(d)
    for side, want in zip(adds.sides, original_forms(d)):
        assert side.expand() == want, side.side
        for t in side.temporaries:  # evaluation order: only inputs and earlier temporaries
            for op in (t.operand1, t.operand2):
                assert not op.is_temporary or op.index < t.index
        assert side.eliminated <= side.naive
    naive = [side.naive for side in adds.sides]
    assert sum(naive) == d.naive_additions


def test_strassen_has_no_shared_pairs():
    adds = eliminate(builtin("strassen"))
    assert (adds.naive, adds.eliminated) == (18, 18)


def test_winograd_comes_out_at_fifteen():
    adds = eliminate(builtin("strassen-winograd"))
    assert adds.naive == 24 and adds.eliminated == 15
    assert [(s.naive, s.eliminated) for s in adds.sides] == [(7, 4), (7, 4), (10, 7)]
    assert [str(t) for t in adds.W.temporaries] == ["t0 = M0 + M5", "t1 = M4 + t0"]


def test_laderman_saves_additions():
    adds = eliminate(builtin("laderman"))
    assert adds.naive == 98 and adds.eliminated <= 70


@pytest.mark.parametrize("name", ["strassen", "strassen-winograd", "laderman", "strassen*strassen",
                                  "alphatensor:4,4,4", "alphatensor:3,4,5", "alphatensor-mod2:4,4,4",
                                  "naive:2,3,4"])
def test_temporaries_reproduce_every_form_exactly(name):
    assert_exact(resolve(name))


def test_matching_is_sign_and_scale_aware():
    # columns 2·(A11 + A22) and -2·(A11 + A22) share the temporary t0 = A11 + A22
    U, V, W = builtin("strassen").factors()
    U = U * 2
    U[:, 1] = -U[:, 0]
    adds = eliminate(Decomposition.unchecked(U, V, W, (2, 2, 2)))
    assert [t.as_tuple() for t in adds.U.temporaries] == [(1, Operand("A", 0), 1, Operand("A", 3))]
    assert adds.U.forms[0] == ((Fraction(2), Operand("t", 0)),)
    assert adds.U.forms[1] == ((Fraction(-2), Operand("t", 0)),)
    assert adds.U.expand()[1] == {0: Fraction(-2), 3: Fraction(-2)}
    assert adds.U.naive - adds.U.eliminated == 1


@st.composite
def unimodular(draw, size: int):
    """A random integer matrix with determinant ±1 (a product of elementary operations)."""
    m = np.eye(size, dtype=np.int64)
    for _ in range(draw(st.integers(0, 4))):
        i, j = draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1))
        if i != j:
            m[i] += draw(st.sampled_from([-1, 1])) * m[j]
    return m


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["strassen", "strassen-winograd", "laderman"]), st.data())
def test_cse_is_exact_on_random_equivalent_schemes(name, data):
    d = builtin(name)
    n, m, p = d.format
    X, Y, Z = (data.draw(unimodular(k)) for k in (n, m, p))
    assert_exact(transforms.sandwich(d, X, Y, Z))


def test_rational_coefficients_stay_exact():
    U, V, W = builtin("strassen-winograd").factors()
    d = Decomposition.create(U * 2, V, W / 2, (2, 2, 2))
    assert d.denominators()[2] == 2
    assert_exact(d)
    assert eliminate(d).eliminated == 15
