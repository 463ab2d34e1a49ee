"""Flip-graph engine benchmark: flips per second per core, and time to the best known rank.

Every row starts from the naive scheme naive:n,m,p (never from a known scheme of the target
rank) and runs FlipGraphEngine with all workers until the target rank or the time budget.
Rows over Z use the route of Kauers & Moosbauer unless --z-direct is given: walk mod 2 and
Hensel-lift each scheme at the target rank until one lifts (the row counts as reached only
when a verified Z scheme of the target rank is in the store). Found schemes go to the store
($FMMFORGE_HOME) with provenance.

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/flipgraph.py            # rows down to 2,3,4
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/flipgraph.py --rows long
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/flipgraph.py --rows 3,4,5/Z
    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/flipgraph.py --speed --peer ../shared/peers/flip-cpd

--peer DIR runs a build of flip-cpd (DIR/bin/search2, DIR/data/tensors; a yardstick, not a
dependency) beside each speed row, one thread, from a scratch copy of DIR: it walks down from the
naive scheme with a fixed path limit, and at the first rank level where no attempt succeeds every
attempt ran its whole path, so its rate there is attempts x path limit / time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from fmmforge.core.catalogue import resolve
from fmmforge.core.contracts import Budget, FoundScheme, SearchEvents, SearchRequest
from fmmforge.core.search.engine import FlipGraphEngine
from fmmforge.core.search.kernels import META_FLIPS
from fmmforge.core.search.scheme import pack
from fmmforge.core.search.recording import StoreRecorder
from fmmforge.core.search.walker import CompiledWalk, WalkParams
from fmmforge.core.store import Store

# (format, field, target rank, budget seconds, published best rank (Z ; Z2), group)
ROWS = [
    ((2, 2, 2), "Z2", 7, 5, "7 ; 7", "short"),
    ((2, 2, 2), "Z", 7, 5, "7 ; 7", "short"),
    ((3, 3, 3), "Z2", 23, 10, "23 ; 23", "short"),
    ((3, 3, 3), "Z", 23, 60, "23 ; 23", "short"),
    ((2, 2, 3), "Z", 11, 60, "11 ; 11", "short"),
    ((2, 3, 3), "Z", 15, 60, "15 ; 15", "short"),
    ((2, 3, 4), "Z", 20, 60, "20 ; 20", "short"),
    ((3, 3, 4), "Z", 29, 600, "29 ; 29", "long"),
    ((3, 4, 4), "Z", 38, 600, "38 ; 38", "long"),
    ((2, 4, 5), "Z", 33, 600, "33 (Q: 32) ; 33", "long"),
    ((3, 4, 5), "Z", 47, 1800, "47 ; 47", "long"),
    ((4, 4, 4), "Z2", 47, 1800, "49 (Q: 48) ; 47", "stretch"),
    ((4, 4, 5), "Z2", 60, 1800, "61 ; 60", "stretch"),
]


def flips_per_second(fmt: tuple[int, int, int], field: str, seconds: float = 1.0) -> float:
    """Steady-state flips per second of one compiled walk on one core (from the naive scheme)."""
    d = resolve("naive:{},{},{}".format(*fmt))
    walk = CompiledWalk(field, d.target.tensor.shape, 1, WalkParams.for_problem(d.target.tensor.shape, d.rank, field))
    rank = walk.load(pack(d, field), 2)
    walk.walk(10_000, rank + 1, 0, -1)  # compile / warm up
    flips, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        walk.walk(200_000, rank + 1, 0, -1)
        flips += int(walk.meta[META_FLIPS])
    return flips / (time.perf_counter() - t0)


SPEED_FORMATS = [(3, 3, 3), (3, 4, 5), (4, 4, 4), (5, 5, 5)]
PEER_PATH_LIMIT = {(3, 3, 3): 5_000_000, (4, 4, 4): 4_000_000, (5, 5, 5): 3_000_000}


def peer_flips_per_second(peer: str, fmt: tuple[int, int, int]) -> tuple[float, int] | None:
    """flip-cpd's flips per second on one thread over F2, and the rank level it was measured at."""
    name = "gg-" + "".join(map(str, fmt))
    limit = PEER_PATH_LIMIT.get(fmt)
    if limit is None or not os.path.exists(os.path.join(peer, "data", "tensors", name + ".npy")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.join(tmp, "peer")
        shutil.copytree(peer, work)
        cmd = [os.path.join(work, "bin", "search2"), name, "-r", "1", "-t", "1", "-s", "4", "-m", "4",
               "-f", str(limit), "--stop", "4", "-v", "1"]
        try:
            out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300).stdout
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    # "=== Searching for rank R ===" / "Completed N attempts in T s" / "Found 0 candidate schemes"
    levels = re.findall(r"Searching for rank (\d+).*?Completed (\d+) attempts in ([\d.]+)s\s+Found (\d+)", out, re.S)
    for rank, attempts, seconds, found in levels:
        if int(found) == 0 and float(seconds) > 0:
            return int(attempts) * limit / float(seconds), int(rank)
    return None


def run_row(row, workers: int, seed: int, scale: float, z_direct: bool, log) -> dict:
    fmt, field, target, budget, published, _ = row
    start = resolve("naive:{},{},{}".format(*fmt))
    walk_field = field if (field == "Z2" or z_direct) else "Z2"
    request = SearchRequest(start, field=walk_field, target_rank=target, budget=Budget(seconds=budget * scale),
                            workers=workers, seed=seed, start_label=start_name(fmt),
                            require_z=(field == "Z" and walk_field == "Z2"))
    recorder = StoreRecorder(Store(), request, FlipGraphEngine.name)

    def found(scheme: FoundScheme) -> None:
        recorder(scheme)
        log(f"    {scheme.kind}: rank {scheme.decomposition.rank} {scheme.decomposition.field} "
            f"after {scheme.seconds:.1f} s, {scheme.flips:,} flips")

    result = FlipGraphEngine().run(request, SearchEvents(found=found))
    if result.interrupted:
        raise SystemExit(130)
    if field == "Z" and walk_field == "Z2":
        reached_rank = result.lifted.rank if result.lifted is not None else None
        ttr = result.lift_time
    else:
        reached_rank = result.best.rank
        ttr = result.time_to_rank(target)
    return {
        "format": "{},{},{}".format(*fmt), "field": field, "target": target, "budget": f"{budget * scale:g} s",
        "start": start_name(fmt) + (" (mod 2 walk + lift)" if walk_field != field else ""),
        "reached": "-" if reached_rank is None else str(reached_rank),
        "z2 best": str(result.best.rank) if walk_field != field else "",
        "time to rank": "-" if ttr is None or (reached_rank or 10**9) > target else f"{ttr:.1f} s",
        "flips/s/core": f"{result.flips_per_second / workers / 1e6:.2f}M",
        "published": published,
    }


def start_name(fmt: tuple[int, int, int]) -> str:
    return "naive:{},{},{}".format(*fmt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="short", help="short, long, stretch, all, or n,m,p/FIELD[;...]")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every time budget")
    ap.add_argument("--z-direct", action="store_true", help="walk over Z directly for Z rows (no lifting)")
    ap.add_argument("--speed", action="store_true", help="only the flips/s per core table")
    ap.add_argument("--peer", metavar="DIR", help="also measure the flip-cpd build in DIR (bin/search2), mod 2")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    print(f"# FMMFORGE_HOME={os.environ.get('FMMFORGE_HOME', '(default)')} workers={args.workers} seed={args.seed}")
    print("\n## flips per second, one core, steady state")
    peer_col = " flip-cpd Z2 (at rank) |" if args.peer else ""
    print("| format | Z2 | Z |" + peer_col + "\n|---|---|---|" + ("---|" if args.peer else ""))
    for fmt in SPEED_FORMATS:
        z2 = flips_per_second(fmt, "Z2")
        z = flips_per_second(fmt, "Z")
        row = f"| {','.join(map(str, fmt))} | {z2 / 1e6:.2f}M | {z / 1e6:.2f}M |"
        if args.peer:
            peer = peer_flips_per_second(args.peer, fmt)
            row += " - |" if peer is None else f" {peer[0] / 1e6:.2f}M ({peer[1]}) |"
        print(row, flush=True)
    if args.speed:
        return
    if args.rows in ("short", "long", "stretch"):
        rows = [r for r in ROWS if r[5] == args.rows]
    elif args.rows == "all":
        rows = list(ROWS)
    else:
        want = {tuple(x.strip().split("/")) for x in args.rows.split(";")}
        rows = [r for r in ROWS if (",".join(map(str, r[0])), r[1]) in want]
    cols = ["format", "field", "target", "budget", "start", "reached", "z2 best", "time to rank", "flips/s/core", "published"]
    print("\n## time to rank")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)
    for row in rows:
        log(f"row {row[0]} {row[1]} target {row[2]}")
        out = run_row(row, args.workers, args.seed, args.scale, args.z_direct, log)
        print("| " + " | ".join(str(out[c]) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
