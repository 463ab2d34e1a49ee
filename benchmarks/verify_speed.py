"""How long reading and exactly verifying a large scheme takes, per file format (issue 32).

The schemes are built here, not downloaded: Kronecker products of known schemes, e.g.
strassen*alphatensor:5,5,5 (<10,10,10> rank 7·98 = 686), strassen*naive:5,5,5 (rank 875) and
naive:10,10,10 (rank 1000), plus a rational one (alphatensor:3,4,11 ⊗ strassen, entries ±1/2).
Each is written in every text format and read back from the bytes as `fmmforge verify` does
(format from the content), then checked exactly on a fresh, unchecked copy.

    flock /tmp/fmmforge-bench.lock .venv/bin/python benchmarks/verify_speed.py
    .venv/bin/python benchmarks/verify_speed.py --scheme naive:2,2,2 --repeat 1   # a quick look
"""

from __future__ import annotations

import argparse
import time

from fmmforge.core import catalogue
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.formats import FORMATS, encode, read_data

DEFAULT_SCHEMES = ("strassen*alphatensor:5,5,5", "strassen*naive:5,5,5", "naive:10,10,10", "alphatensor:3,4,11*strassen")


def measure(name: str, formats: tuple[str, ...], repeat: int) -> list[dict[str, object]]:
    """One row per format: bytes, best read time and best exact-check time over ``repeat`` runs."""
    d = catalogue.resolve(name)
    rows = []
    for fmt in formats:
        try:
            data = encode(d, fmt)
        except Exception as exc:  # noqa: BLE001 - npz holds no non-dyadic rationals: say so, go on
            rows.append({"scheme": name, "format": fmt, "error": str(exc)})
            continue
        read_s = check_s = float("inf")
        valid = True
        for _ in range(repeat):
            t0 = time.perf_counter()
            [(_label, back)] = read_data(data, None, source=name, label=name)
            t1 = time.perf_counter()
            fresh = Decomposition.unchecked(*back.factors(), target=back.target, field=back.field)
            t2 = time.perf_counter()
            valid = valid and fresh.verify().valid
            t3 = time.perf_counter()
            read_s, check_s = min(read_s, t1 - t0), min(check_s, t3 - t2)
        rows.append({"scheme": name, "format": fmt, "shape": d.target.describe(), "rank": d.rank,
                     "bytes": len(data), "read_s": read_s, "verify_s": check_s, "valid": valid})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", action="append", dest="schemes", help="a catalogue name (repeat for more)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for name in args.schemes or DEFAULT_SCHEMES:
        for row in measure(name.strip(), tuple(f.strip() for f in args.formats.split(",")), max(1, args.repeat)):
            rows.append(row)
            if "error" in row:
                print(f"{row['scheme']:<30} {row['format']:<10} skipped: {row['error']}")
            else:
                print(f"{row['scheme']:<30} {row['format']:<10} {row['shape']} rank {row['rank']:<5} "
                      f"{row['bytes']:>9,} bytes  read {row['read_s']:.3f}s  verify {row['verify_s']:.3f}s  "
                      f"{'valid' if row['valid'] else 'INVALID'}", flush=True)
    return rows


if __name__ == "__main__":
    main()
