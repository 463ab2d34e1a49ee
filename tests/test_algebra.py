"""Exact tensor algebra: verification, properties, transformations, fingerprints."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmmforge.core import transforms
from fmmforge.core.builtins import builtin, naive, strassen_2x2x3
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.core.tensor import BilinearTarget, matmul_tensor, parse_format, parse_shape, parse_shapes

STRASSEN = builtin("strassen")
SCHEMES = {
    "strassen": STRASSEN,
    "winograd": builtin("strassen-winograd"),
    "laderman": builtin("laderman"),
    "2x2x3": strassen_2x2x3(),
    "naive234": naive(2, 3, 4),
}


@pytest.mark.parametrize("text", ["2,3,4", "2x3x4", "2X3X4", "<2,3,4>", " < 2 , 3 , 4 > ", "2×3×4"])
def test_one_size_grammar_for_formats_and_shapes(text):
    assert parse_format(text) == parse_shape(text) == (2, 3, 4)


def test_a_single_number_is_a_square_shape_but_not_a_format():
    assert parse_shape("8192") == (8192, 8192, 8192)
    assert parse_shapes("64, 8x4x2,") == [(64, 64, 64), (8, 4, 2)]
    with pytest.raises(FmmforgeError, match="not three positive integers"):
        parse_format("8192")


@pytest.mark.parametrize("text", ["", "x", "2,3", "2,3,4,5", "10^30", "8192x", "a,b,c"])
def test_malformed_sizes_are_one_clear_line(text):
    with pytest.raises(FmmforgeError, match="not three positive integers"):
        parse_format(text)
    with pytest.raises(FmmforgeError, match="^--size .*write it like 8192") as info:
        parse_shape(text, "--size")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, side", [("2,0,4", "0"), ("-1", "-1"), ("8,9,8", "9")])
def test_sides_out_of_range_are_named(text, side):
    with pytest.raises(FmmforgeError, match="not three positive integers"):
        parse_format(text.replace("9", "0"))
    with pytest.raises(FmmforgeError, match=rf"^size '{text}': every side must be between 1 and 2\^3 \(8\), not {side}$"):
        parse_shape(text, max_side=8)
    with pytest.raises(FmmforgeError, match="at least 1, not -1"):
        parse_shapes("4,-1")


def test_a_list_of_no_sizes_is_refused():
    with pytest.raises(FmmforgeError, match="no sizes given"):
        parse_shapes(" , ")


def test_matmul_tensor_is_the_product():
    rng = np.random.default_rng(0)
    A, B = rng.integers(-5, 5, (2, 3)), rng.integers(-5, 5, (3, 4))
    T = matmul_tensor(2, 3, 4)
    C = np.einsum("a,b,abc->c", A.ravel(), B.ravel(), T).reshape(2, 4)
    assert np.array_equal(C, A @ B)


@pytest.mark.parametrize("name", SCHEMES)
def test_schemes_compute_products(name):
    d = SCHEMES[name]
    n, m, p = d.format
    rng = np.random.default_rng(1)
    A, B = rng.integers(-9, 9, (n, m)), rng.integers(-9, 9, (m, p))
    U, V, W = (x.astype(object) for x in d.factors())
    M = (A.ravel() @ U) * (B.ravel() @ V)
    assert np.array_equal((W @ M).reshape(n, p), A @ B)


def test_properties_of_known_schemes():
    assert STRASSEN.rank == 7 and STRASSEN.nnz == (12, 12, 12)
    assert STRASSEN.naive_additions == 18
    assert STRASSEN.stability_factor == 12
    assert builtin("laderman").rank == 23
    assert strassen_2x2x3().rank == 11
    assert naive(3, 4, 5).rank == 60 and naive(3, 4, 5).naive_additions == 3 * 5 * 3
    assert naive(2, 2, 2).stability_factor == 2


def test_decompositions_are_immutable():
    d = builtin("strassen")
    for arr in (*d.factors(), *d.numerators()):
        with pytest.raises(ValueError, match="read-only"):
            arr[0, 0] = 5
    assert d.verify().valid


def test_single_wrong_coefficient_is_named():
    U, V, W = (np.array(x) for x in STRASSEN.numerators())
    U[0, 0] = 0  # drop A11 from M1
    result = Decomposition.unchecked(U, V, W, (2, 2, 2)).verify()
    assert not result.valid
    assert result.first_failure.startswith("tensor entry (A11, B11, C11) should be 1 but the terms sum to 0")
    with pytest.raises(InvalidDecompositionError):
        Decomposition.create(U, V, W, (2, 2, 2))


def test_rationals_are_exact():
    # Strassen with u_1 halved and w_1 doubled is still exact; a float 1/3 is refused
    U, V, W = (np.array(x, dtype=object) for x in STRASSEN.numerators())
    U[:, 0] = [Fraction(x, 2) for x in U[:, 0]]
    W[:, 0] = W[:, 0] * 2
    d = Decomposition.create(U, V, W, (2, 2, 2))
    assert d.denominators()[0] == 2
    assert d.fingerprint == STRASSEN.fingerprint  # the scaling (1/2, 1, 2) of a term cancels
    U[0, 0] = Fraction(1, 2) + Fraction(1, 3 * 10**9)  # a tiny error is not "close enough"
    assert not Decomposition.unchecked(U, V, W, (2, 2, 2)).verify().valid
    with pytest.raises(FmmforgeError, match="not an exact small rational"):
        Decomposition.unchecked(np.full((4, 7), 1 / 3), V, W, (2, 2, 2))


def test_z2_schemes_verify_mod_2_only():
    U, V, W = STRASSEN.numerators()
    z2 = Decomposition.create(np.abs(U), np.abs(V), np.abs(W), (2, 2, 2), field="Z2")
    assert z2.field == "Z2" and z2.stability_factor is None
    assert not Decomposition.unchecked(np.abs(U), np.abs(V), np.abs(W), (2, 2, 2)).verify().valid


def test_general_bilinear_target():
    # complex multiplication (a+bi)(c+di) as a bilinear map on R^2 x R^2 -> R^2, rank 3 (Gauss)
    T = np.zeros((2, 2, 2), dtype=np.int64)
    T[0, 0, 0], T[1, 1, 0], T[0, 1, 1], T[1, 0, 1] = 1, -1, 1, 1
    target = BilinearTarget.general(T)
    U = np.array([[1, 0, 1], [0, 1, 1]])
    V = np.array([[1, 0, 1], [0, 1, 1]])
    # M1 = a c, M2 = b d, M3 = (a+b)(c+d); real = M1 - M2, imag = M3 - M1 - M2
    W = np.array([[1, -1, 0], [-1, -1, 1]])
    d = Decomposition.create(U, V, W, target=target)
    assert d.rank == 3 and d.format is None
    W_bad = W.copy()
    W_bad[0, 1] = 1
    assert not Decomposition.unchecked(U, V, W_bad, target=target).verify().valid


def test_shape_errors_are_clear():
    U, V, W = STRASSEN.numerators()
    with pytest.raises(FmmforgeError, match="factor U has shape"):
        Decomposition.unchecked(U[:3], V, W, (2, 2, 2))
    with pytest.raises(FmmforgeError, match="different numbers of columns"):
        Decomposition.unchecked(U[:, :6], V, W, (2, 2, 2))
    with pytest.raises(FmmforgeError, match="unknown field"):
        Decomposition.unchecked(U, V, W, (2, 2, 2), field="GF3")


def test_kronecker_strassen_square_is_rank_49():
    square = transforms.kron(STRASSEN, STRASSEN)
    assert square.format == (4, 4, 4) and square.rank == 49 and square.verify().valid
    assert square.stability_factor == 144  # e multiplies under the Kronecker product


def test_rotation_and_transposition_change_the_format():
    d = transforms.kron(naive(2, 3, 4), strassen_2x2x3())
    assert transforms.rotate(d).format == (6, 12, 4)
    assert transforms.transpose(d).format == (12, 6, 4)
    assert transforms.rotate(transforms.rotate(transforms.rotate(d))) == d
    assert transforms.transpose(transforms.transpose(d)) == d


def test_fingerprint_ignores_term_order_and_sign_changes():
    d = SCHEMES["laderman"]
    rng = np.random.default_rng(3)
    s, t = rng.choice([-1, 1], d.rank), rng.choice([-1, 1], d.rank)
    other = transforms.permute_terms(transforms.flip_signs(d, s, t), rng.permutation(d.rank))
    assert other.fingerprint == d.fingerprint
    assert other != d or (s == 1).all()
    assert d.fingerprint != SCHEMES["strassen"].fingerprint
    assert STRASSEN.fingerprint != SCHEMES["winograd"].fingerprint


# ----------------------------------------------------------------------- properties
unimodular_2 = st.sampled_from([
    [[1, 0], [0, 1]], [[1, 1], [0, 1]], [[1, 0], [1, 1]], [[0, 1], [1, 0]], [[2, 1], [1, 1]],
    [[1, -1], [0, 1]], [[-1, 0], [0, 1]], [[1, 2], [0, 1]],
])
rational_invertible_2 = st.sampled_from([[[2, 0], [0, 1]], [[1, 1], [1, -1]], [[3, 1], [1, 1]]])
scheme_names = st.sampled_from(["strassen", "winograd", "2x2x3", "naive234", "laderman"])


@st.composite
def invertible(draw, size):
    if size == 2:
        return draw(st.one_of(unimodular_2, rational_invertible_2))
    # a random unimodular matrix: product of elementary row operations
    M = np.eye(size, dtype=np.int64)
    for _ in range(draw(st.integers(0, 4))):
        i, j = draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1))
        if i != j:
            M[i] += draw(st.sampled_from([-1, 1])) * M[j]
    return M.tolist()


@settings(max_examples=25, deadline=None)
@given(name=scheme_names, data=st.data())
def test_random_sandwich_stays_valid(name, data):
    d = SCHEMES[name]
    n, m, p = d.format
    X, Y, Z = data.draw(invertible(n)), data.draw(invertible(m)), data.draw(invertible(p))
    out = transforms.sandwich(d, X, Y, Z)
    assert out.verify().valid and out.rank == d.rank


@settings(max_examples=25, deadline=None)
@given(name=scheme_names, turns=st.integers(0, 2), transpose=st.booleans())
def test_random_rotation_and_transpose_stay_valid(name, turns, transpose):
    d = SCHEMES[name]
    for _ in range(turns):
        d = transforms.rotate(d)
    if transpose:
        d = transforms.transpose(d)
    assert d.verify().valid


@settings(max_examples=15, deadline=None)
@given(a=st.sampled_from(["strassen", "winograd", "2x2x3", "naive234"]), b=st.sampled_from(["strassen", "2x2x3"]))
def test_kronecker_products_stay_valid(a, b):
    d = transforms.kron(SCHEMES[a], SCHEMES[b])
    assert d.verify().valid and d.rank == SCHEMES[a].rank * SCHEMES[b].rank


@settings(max_examples=60, deadline=None)
@given(name=scheme_names, which=st.integers(0, 2), data=st.data())
def test_any_single_changed_coefficient_is_detected(name, which, data):
    d = SCHEMES[name]
    factors = [np.array(x) for x in d.numerators()]
    rows, cols = factors[which].shape
    i, j = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
    delta = data.draw(st.sampled_from([-2, -1, 1, 2]))
    factors[which][i, j] += delta
    assert not Decomposition.unchecked(*factors, d.format).verify().valid


@settings(max_examples=40, deadline=None)
@given(name=scheme_names, which=st.integers(0, 2), data=st.data())
def test_any_single_flipped_bit_is_detected_mod_2(name, which, data):
    d = SCHEMES[name]
    factors = [np.mod(np.array(x), 2) for x in d.numerators()]
    if not Decomposition.unchecked(*factors, d.format, field="Z2").verify().valid:
        return
    rows, cols = factors[which].shape
    i, j = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
    factors[which][i, j] ^= 1
    assert not Decomposition.unchecked(*factors, d.format, field="Z2").verify().valid
