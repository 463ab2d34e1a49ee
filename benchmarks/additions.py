"""Additions after common-subexpression elimination, scheme by scheme, beside the published counts.

A row per scheme: its field and rank, the naive additions (each linear form of U, V and W written
out: k terms cost k-1), the plain greedy's count (Paar's heuristic, restarts 0, what fmmforge did
before the restarts), the count after elimination with the restarts asked for, the best published
count for that format and rank where one is known, and the time the elimination took. Every row's
temporaries are expanded again and compared with the factor matrices before it is printed.

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/additions.py             # thorough
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/additions.py --restarts 16
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/additions.py --flip 8   # + 8 flip-found <3,3,3;23>

Rows: Laderman, DeepMind's <3,3,3>, <4,4,4>, <3,4,5>, <4,4,5>, <5,5,5> (over Z and mod 2),
Strassen⊗Strassen, every <3,3,3> rank-23 scheme of the store ($FMMFORGE_HOME) and, with
``--flip N``, N schemes at rank 23 that a short flip walk down from naive:3,3,3 finds over Z (not stored). The counts are the three sides together (docs/additions.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction

from fmmforge.core.additions import THOROUGH_RESTARTS, Additions, eliminate
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.store import Store

NAMES = ["laderman", "alphatensor:3,3,3", "alphatensor-mod2:3,3,3", "strassen*strassen",
         "alphatensor:4,4,4", "alphatensor-mod2:4,4,4", "alphatensor:3,4,5", "alphatensor-mod2:3,4,5",
         "alphatensor:4,4,5", "alphatensor-mod2:4,4,5", "alphatensor:5,5,5", "alphatensor-mod2:5,5,5"]

# the fewest additions published for a format at a rank (three sides, with reuse): Mårtensson &
# Wagner 2025 (rank-23 <3,3,3>: 58; <4,4,4;49>: 159) and the catalogue's addition-reduced schemes
# (<3,4,5;47>: 161, <4,4,5;61>: 233, <5,5,5;93>: 383); Stapleton 2025 gives 60 for a rank-23 <3,3,3>
PUBLISHED = {((3, 3, 3), 23): 58, ((4, 4, 4), 49): 159, ((3, 4, 5), 47): 161, ((4, 4, 5), 61): 233,
             ((5, 5, 5), 93): 383}


def check_exact(d: Decomposition, adds: Additions) -> None:
    """The temporaries rebuild every form of U, V and W exactly (else the row is not printed)."""
    U, V, W = d.factors()
    for side, M in zip(adds.sides, (U, V, W.T)):
        want = []
        for col in M.T:
            form = {}
            for i, x in enumerate(col):
                x = Fraction(x) if d.field != "Z2" else Fraction(int(x) % 2)
                if x:
                    form[i] = x
            want.append(form)
        if side.expand() != want:
            raise SystemExit(f"the elimination of side {side.side} does not rebuild its forms: a bug")


def published(d: Decomposition) -> str:
    here = PUBLISHED.get((tuple(d.format), d.rank))
    if here is not None:
        return str(here)
    other = [(r, n) for (f, r), n in PUBLISHED.items() if f == tuple(d.format)]
    return ", ".join(f"{n} at rank {r}" for r, n in other) or "-"


def flip_schemes(count: int, seconds: float, seed: int) -> list[tuple[str, Decomposition]]:
    """Up to ``count`` distinct rank-23 <3,3,3> schemes over Z from a flip walk down from naive:3,3,3."""
    from fmmforge.core.contracts import Budget, FoundScheme, SearchEvents, SearchRequest
    from fmmforge.core.search.engine import FlipGraphEngine

    found: dict[str, tuple[str, Decomposition]] = {}

    def on_found(scheme: FoundScheme) -> None:
        d = scheme.decomposition
        if d.rank == 23 and d.field == "Z" and len(found) < count and d.fingerprint not in found:
            found[d.fingerprint] = (f"flip #{len(found) + 1} (seed {seed})", d)

    request = SearchRequest(resolve("naive:3,3,3"), field="Z", target_rank=23, collect=count, seed=seed,
                            budget=Budget(seconds=seconds))
    FlipGraphEngine().run(request, SearchEvents(found=on_found))
    return list(found.values())


def store_schemes() -> list[tuple[str, Decomposition]]:
    return [(f"store {a.label}", a.decomposition) for a in Store().all()
            if a.rank == 23 and tuple(a.decomposition.format) == (3, 3, 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=THOROUGH_RESTARTS,
                        help=f"randomized restarts per side (default {THOROUGH_RESTARTS}; 0 = the plain greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=int, default=0, metavar="N",
                        help="also N flip-found rank-23 <3,3,3> schemes over Z (a walk down from naive:3,3,3)")
    parser.add_argument("--flip-seconds", type=float, default=60.0)
    parser.add_argument("names", nargs="*", default=NAMES, help="catalogue names (default: the rows above)")
    args = parser.parse_args(argv)
    if args.restarts < 0:
        parser.error("--restarts must be >= 0")
    rows = [(name, resolve(name)) for name in args.names]
    rows += store_schemes()
    if args.flip:
        rows += flip_schemes(args.flip, args.flip_seconds, args.seed)
    head = f"{'scheme':<28} {'field':<5} {'rank':>4} {'naive':>6} {'greedy':>6} {'CSE':>6}  {'U/V/W':<12} {'published':<16} {'time':>7}"
    print(f"restarts {args.restarts}, seed {args.seed}; additions of U, V and W together")
    print(head)
    for label, d in rows:
        greedy = eliminate(d, restarts=0, transpose=False).eliminated
        start = time.perf_counter()
        adds = eliminate(d, restarts=args.restarts, seed=args.seed)
        took = time.perf_counter() - start
        check_exact(d, adds)
        sides = "/".join(str(s.eliminated) for s in adds.sides)
        print(f"{label:<28} {d.field:<5} {d.rank:>4} {adds.naive:>6} {greedy:>6} {adds.eliminated:>6}  "
              f"{sides:<12} {published(d):<16} {took:>6.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
