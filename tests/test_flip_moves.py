"""Every move of the flip graph maps a valid scheme to a valid scheme (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fmmforge.core.catalogue import resolve
from fmmforge.core.search import kernels as K
from fmmforge.core.search.scheme import PackedScheme, pack
from fmmforge.core.search.walker import CompiledWalk, WalkParams

FORMATS = [(2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3), (2, 3, 4)]
STARTS = ["strassen", "strassen-2x2x3", "laderman", "naive:2,2,2", "naive:2,3,3"]


def _valid(scheme: PackedScheme, target) -> bool:
    from fmmforge.core.decomposition import Decomposition

    U, V, W = scheme.factors()
    return Decomposition.unchecked(U, V, W, field=scheme.field, target=target).verify().valid


def _start(name: str):
    return resolve(name)


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(FORMATS), field=st.sampled_from(["Z2", "Z"]), seed=st.integers(1, 2**32),
       plateau=st.integers(1, 50), steps=st.integers(1, 40))
def test_walks_of_flips_reductions_and_plus_transitions_stay_valid(fmt, field, seed, plateau, steps):
    d = resolve("naive:{},{},{}".format(*fmt))
    walk = CompiledWalk(field, d.target.tensor.shape, seed, WalkParams(plateau=plateau, plus_up=3, bound=2))
    rank = walk.load(pack(d, field), extra=3)
    assert rank == d.rank
    for _ in range(5):
        # plus_limit above the best forces plus transitions every `plateau` flips
        walk.walk(steps, rank + 3, 0, -1)
        assert _valid(walk.current(), d.target)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(STARTS)), seed=st.integers(1, 2**32))
def test_single_z2_flip_and_plus_stay_valid(name, seed):
    d = _start(name)
    s = pack(d, "Z2")
    rng = np.random.default_rng(seed)
    X = np.zeros((s.rank + 1, 3), dtype=np.uint64)
    X[: s.rank] = s.data
    R = s.rank
    pairs = [(i, j, t) for t in range(3) for i in range(R) for j in range(R) if i != j and X[i, t] == X[j, t]]
    if pairs:
        i, j, slot = pairs[rng.integers(len(pairs))]
        other = [x for x in range(3) if x != slot][rng.integers(2)]
        K.z2_flip(X, R, i, j, slot, other)
        assert _valid(PackedScheme("Z2", s.dims, X[:R].copy()), d.target)
    i, j = rng.choice(R, 2, replace=False)
    slot = int(rng.integers(3))
    second = (slot + 1 + int(rng.integers(2))) % 3
    if X[i, slot] != X[j, slot]:
        K.z2_plus(X, R, i, j, slot, second)
        after = PackedScheme("Z2", s.dims, X[: R + 1].copy())
        assert after.rank == R + 1 and _valid(after, d.target)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(STARTS)), seed=st.integers(1, 2**32), sign=st.sampled_from([1, -1]))
def test_single_z_flip_keeps_integral_scheme_valid(name, seed, sign):
    d = _start(name)
    walk = CompiledWalk("Z", d.target.tensor.shape, seed, WalkParams(bound=3))
    walk.load(pack(d, "Z"), extra=1)
    V, Kh, R = walk.X, walk.K, walk.rank
    rng = np.random.default_rng(seed)
    pairs = [(i, j, t) for t in range(3) for i in range(R) for j in range(R)
             if i != j and np.array_equal(V[i, t], V[j, t])]
    assume(pairs)
    i, j, slot = pairs[rng.integers(len(pairs))]
    other = [x for x in range(3) if x != slot][rng.integers(2)]
    if K.z_flip(V, Kh, walk.H, walk.dims_arr, i, j, slot, other, sign, 3):
        assert _valid(walk.current(), d.target)
        # the hash keys follow the vectors
        for r in range(R):
            for s in range(3):
                assert Kh[r, s] == K.z_key(V, walk.H, r, s, walk.dims[s])


@pytest.mark.parametrize("field", ["Z2", "Z"])
def test_reduction_merges_terms_sharing_two_factors(field):
    """a⊗b⊗c + a⊗b⊗c' is one term: the starting scheme is reduced on load."""
    d = resolve("strassen")
    U, V, W = (np.asarray(x, dtype=np.int64) for x in d.numerators())
    # split term 0 into a⊗b⊗(c - e) + a⊗b⊗e for a unit vector e
    e = np.zeros(W.shape[0], dtype=np.int64)
    e[0] = 1
    U2 = np.concatenate([U, U[:, :1]], axis=1)
    V2 = np.concatenate([V, V[:, :1]], axis=1)
    W2 = np.concatenate([W[:, :1] - e[:, None], W[:, 1:], e[:, None]], axis=1)
    from fmmforge.core.decomposition import Decomposition

    split = Decomposition.create(U2, V2, W2, (2, 2, 2), field="Z")
    assert split.rank == 8
    walk = CompiledWalk(field, (4, 4, 4), 1, WalkParams())
    assert walk.load(pack(split, field), extra=0) == 7
    assert _valid(walk.current(), d.target)


def test_packing_round_trips():
    for name in ("strassen", "laderman", "naive:2,3,4"):
        d = resolve(name)
        for field in ("Z2", "Z"):
            s = pack(d, field)
            again = PackedScheme.from_json(s.to_json())
            assert again.key() == s.key()
            assert s.to_decomposition(d.target).rank == d.rank


def _counts_from_scratch(X: np.ndarray) -> np.ndarray:
    return np.array([[int(np.sum(X[:, s] == X[r, s])) for s in range(3)] for r in range(len(X))], dtype=np.int64)


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(FORMATS + [(4, 4, 4)]), seed=st.integers(1, 2**32), plateau=st.integers(1, 50),
       steps=st.integers(1, 400))
def test_z2_shared_factor_counts_kept_by_the_walk_agree_with_a_recount(fmt, seed, plateau, steps):
    # the walk keeps N[r, s] (terms holding X[r, s] in slot s) up to date through flips, plus
    # transitions and reductions instead of recounting; it must equal a recount after any walk
    d = resolve("naive:{},{},{}".format(*fmt))
    walk = CompiledWalk("Z2", d.target.tensor.shape, seed, WalkParams(plateau=plateau, plus_up=3))
    rank = walk.load(pack(d, "Z2"), extra=3)
    assert np.array_equal(walk.N[:rank], _counts_from_scratch(walk.X[:rank]))
    for _ in range(6):
        walk.walk(steps, rank + 3, 0, -1)
        R = walk.rank
        assert np.array_equal(walk.N[:R], _counts_from_scratch(walk.X[:R]))
        assert _valid(walk.current(), d.target)
