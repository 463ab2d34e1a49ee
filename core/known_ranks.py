"""The best known ranks of small matrix-multiplication formats, as data.

Transcribed from docs/background.md §2 ("Best known ranks"), whose sources are: Fawzi et al.,
"Discovering faster matrix multiplication algorithms with reinforcement learning", Nature 610
(2022), Fig. 3 (the ranks before AlphaTensor and AlphaTensor's over Z and mod 2); Kauers &
Moosbauer, flip graphs (arXiv 2210.04045); Arai, Ichikawa & Hukushima (arXiv 2312.16960);
Moosbauer & Poole (arXiv 2502.04514); Dumas, Pernet & Sedoglavic (arXiv 2506.13242);
AlphaEvolve (2025); Kauers & Wood (arXiv 2505.05896, 2510.19787); Perminov (arXiv 2511.20317,
2603.02398, 2606.02480). "Best known" is as of mid-2026.

``None`` marks a rank the table does not give (a format AlphaTensor did not report). Ranks
reached only with rational (or complex) coefficients are kept apart in :data:`BEST_RATIONAL`:
the integer columns are what a scheme over Z (or mod 2) reaches.
"""

from __future__ import annotations

from typing import NamedTuple

Format = tuple[int, int, int]


class KnownRanks(NamedTuple):
    naive: int  # n·m·p
    before_alphatensor: int | None
    alphatensor_z: int | None
    alphatensor_z2: int | None
    best_z: int
    best_z2: int


KNOWN_RANKS: dict[Format, KnownRanks] = {
    (2, 2, 2): KnownRanks(8, 7, 7, 7, 7, 7),  # Strassen; optimal
    (2, 2, 3): KnownRanks(12, 11, 11, 11, 11, 11),
    (2, 2, 4): KnownRanks(16, 14, 14, 14, 14, 14),
    (2, 2, 5): KnownRanks(20, 18, 18, 18, 18, 18),
    (2, 3, 3): KnownRanks(18, 15, 15, 15, 15, 15),
    (2, 3, 4): KnownRanks(24, 20, 20, 20, 20, 20),
    (2, 3, 5): KnownRanks(30, 25, 25, 25, 25, 25),
    (2, 4, 4): KnownRanks(32, 26, 26, 26, 26, 26),
    (2, 4, 5): KnownRanks(40, 33, 33, 33, 33, 33),
    (2, 5, 5): KnownRanks(50, 40, 40, 40, 40, 40),
    (3, 3, 3): KnownRanks(27, 23, 23, 23, 23, 23),  # Laderman
    (3, 3, 4): KnownRanks(36, 29, 29, 29, 29, 29),
    (3, 3, 5): KnownRanks(45, 36, 36, 36, 36, 36),
    (3, 4, 4): KnownRanks(48, 38, 38, 38, 38, 38),
    (3, 4, 5): KnownRanks(60, 48, 47, 47, 47, 47),
    (3, 5, 5): KnownRanks(75, 58, 58, 58, 58, 58),
    (4, 4, 4): KnownRanks(64, 49, 49, 47, 49, 47),
    (4, 4, 5): KnownRanks(80, 64, 63, 63, 61, 60),
    (4, 5, 5): KnownRanks(100, 80, 76, 76, 76, 73),
    (5, 5, 5): KnownRanks(125, 98, 98, 96, 93, 93),
    (2, 2, 6): KnownRanks(24, 21, None, None, 21, 21),  # three Strassens; optimal (Hopcroft & Kerr 1971, ceil(7·6/2))
    (3, 3, 6): KnownRanks(54, None, None, None, 42, 42),  # 40 before AlphaTensor, over Q only
    (4, 4, 6): KnownRanks(96, None, None, None, 73, 73),
    (6, 6, 6): KnownRanks(216, None, None, None, 153, 153),
}

# Ranks reached only with rational coefficients (e.g. 1/2), below the integer ones above.
BEST_RATIONAL: dict[Format, int] = {(2, 4, 5): 32, (4, 4, 4): 48, (3, 3, 6): 40}


def known_ranks(fmt: Format) -> KnownRanks | None:
    """The table's row for ``fmt`` (n, m, p), or None for a format it does not list."""
    return KNOWN_RANKS.get(tuple(fmt))  # type: ignore[arg-type]


def best_known(fmt: Format, field: str) -> int | None:
    """The best known rank of ``fmt`` over ``field`` ("Z" or "Z2"), or None if not listed."""
    row = known_ranks(fmt)
    if row is None:
        return None
    return row.best_z2 if field == "Z2" else row.best_z


# ---------------------------------------------------------------------- proven lower bounds
# Only bounds with a published proof; where none is known, the flattening bound. Every bound
# below is for the tensor rank (bilinear complexity), which does not change when n, m, p are
# permuted (transposition and the cyclic symmetry of <n,m,p>), so each is looked up on the sorted
# format. Over Z here means integer coefficients (and the rationals with odd denominators that
# Hensel lifting produces): such a scheme reduces mod 2 to a scheme of the same rank, so a bound
# proven over F2 holds over Z as well, and a bound proven over every field holds over both.
# Bounds proven only over algebraically closed fields (Bläser 1999: lm+mn+l-m+n-3) or only in
# recent preprints (Wang, arXiv 2603.07280: <3,3,3> >= 20 over F2) are left out.

class LowerBound(NamedTuple):
    rank: int
    source: str  # who proved it, and over which field


HOPCROFT_KERR = "Hopcroft & Kerr 1971, SIAM J. Appl. Math. 20:30-36, over F2"
WINOGRAD = "Winograd 1971, Linear Algebra Appl. 4:381-388"
BLASER = "Bläser 2003, J. Complexity 19:43-60, 2mn+2n-m-2 for <n,m,n>, m >= n >= 3, over any field"


def _proven_bounds(fmt: Format) -> list[LowerBound]:
    """The published lower bounds that apply to ``fmt`` (any order of n, m, p)."""
    a, b, c = sorted(fmt)
    n, m, p = fmt
    bounds = [LowerBound(max(n * m, m * p, n * p), "the flattening bound max(nm, mp, np), over any field")]
    if (a, b) == (2, 2):  # <2,2,c>: ceil(7c/2), tight for every c
        bounds.append(LowerBound(-(-7 * c // 2), HOPCROFT_KERR + (f"; {WINOGRAD}, over any field" if c == 2 else "")))
    if (a, b, c) == (2, 3, 3):  # 3x2 by 2x3, <3,2,3>
        bounds.append(LowerBound(15, HOPCROFT_KERR))
    if a == b >= 3:  # <a,c,a>: a x c by c x a, c >= a >= 3
        bounds.append(LowerBound(2 * c * a + 2 * a - c - 2, BLASER))
    return bounds


def proven_lower_bound(fmt: Format, field: str) -> LowerBound:
    """The largest proven lower bound on the rank of ``fmt`` over ``field`` ("Z" or "Z2"): every
    scheme of <n,m,p> over that field has at least this many products. All the bounds kept here
    hold over both fields (see above); ``field`` says which one is asked for."""
    from fmmforge.core.decomposition import check_field

    check_field(field)
    return max(_proven_bounds(fmt), key=lambda bound: bound.rank)
