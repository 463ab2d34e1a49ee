"""The proven lower bounds shipped with the known ranks (core/known_ranks.py): each one below every
rank reached, the same for every order of n, m, p, and the flattening bound where nothing is known."""

from __future__ import annotations

import itertools

import pytest

from fmmforge.core.known_ranks import BEST_RATIONAL, KNOWN_RANKS, best_known, proven_lower_bound


@pytest.mark.parametrize("field", ["Z", "Z2"])
def test_no_bound_exceeds_a_rank_that_was_reached(field):
    for fmt in KNOWN_RANKS:
        assert proven_lower_bound(fmt, field).rank <= best_known(fmt, field), fmt
    for fmt, rank in BEST_RATIONAL.items():  # the bounds kept hold over Q as well
        assert proven_lower_bound(fmt, field).rank <= rank, fmt


@pytest.mark.parametrize("fmt, rank, who", [
    ((2, 2, 2), 7, "Winograd 1971"), ((2, 2, 2), 7, "Hopcroft & Kerr 1971"),
    ((2, 2, 3), 11, "Hopcroft & Kerr"), ((2, 2, 5), 18, "Hopcroft & Kerr"), ((2, 2, 6), 21, "Hopcroft & Kerr"),
    ((2, 3, 3), 15, "Hopcroft & Kerr"),
    ((3, 3, 3), 19, "Bläser 2003"), ((4, 4, 4), 34, "Bläser 2003"),
    ((2, 3, 4), 12, "flattening"), ((4, 5, 5), 25, "flattening"), ((1, 1, 1), 1, "flattening"),
])
def test_bounds_and_their_sources_for_every_order_of_the_sides(fmt, rank, who):
    for perm in set(itertools.permutations(fmt)):
        for field in ("Z", "Z2"):
            bound = proven_lower_bound(perm, field)
            assert bound.rank == rank and who in bound.source, (perm, field, bound)


def test_the_bounds_are_tight_where_the_known_rank_is_optimal():
    for fmt in [(2, 2, 2), (2, 2, 3), (2, 2, 4), (2, 2, 5), (2, 3, 3)]:
        assert proven_lower_bound(fmt, "Z2").rank == best_known(fmt, "Z2") == best_known(fmt, "Z")
