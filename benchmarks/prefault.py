"""Touch the machine's free memory once before timing anything, and say whether it was cold.

On a freshly started virtual machine (this project's machines are such VMs) the first write to
each page of guest memory faults to the host; later writes to the same pages do not. Until the
memory has been written once, every fresh allocation of a benchmark pays that fault, and
readings spread. Measured on a 2-core AMD EPYC VM (avx512, MKL), 2026-12-04, one minute after boot: 19 GiB
written in 44.6 s the first time, 3.6 s the second (0.43 against 5.3 GiB/s); `calibrate.py
--budget 600` right before that found two readings of one plan 7.5 % apart (median of 61
pairs), right after it 4.2 % (19 pairs).

    .venv/bin/python benchmarks/prefault.py            # 85 % of the available memory, twice
    .venv/bin/python benchmarks/prefault.py --gib 8

Run it under the benchmark lock, before the first benchmark of a session. Not part of the test
run. It prints each pass's rate and the ratio of the two: near 1 means the memory was warm.
"""

from __future__ import annotations

import argparse
import time


def available_gib() -> float:
    """MemAvailable from /proc/meminfo, in GiB (Linux)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    raise SystemExit("prefault.py: /proc/meminfo has no MemAvailable line; pass --gib")


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=None, help="GiB to write (default: 85 %% of the available memory)")
    args = ap.parse_args()
    gib = args.gib if args.gib is not None else 0.85 * available_gib()
    if not gib > 0:
        raise SystemExit(f"prefault.py: --gib must be a positive number, not {gib}")
    rates = []
    for i in range(2):
        start = time.perf_counter()
        block = np.ones(int(gib * 2**30) // 8)  # every page written
        seconds = time.perf_counter() - start
        del block
        rates.append(gib / seconds)
        print(f"pass {i + 1}: {gib:.1f} GiB written in {seconds:.1f} s ({rates[-1]:.2f} GiB/s)", flush=True)
    print(f"second pass / first: {rates[1] / rates[0]:.1f}x "
          f"({'the memory was cold: time nothing before this' if rates[1] > 2 * rates[0] else 'the memory was warm'})")


if __name__ == "__main__":
    main()
