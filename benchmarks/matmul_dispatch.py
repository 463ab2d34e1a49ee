"""What fmmforge.matmul's dispatch costs where it has no tuned choice: the promise is "never slower
than torch.matmul by more than measurement noise", so the overhead must be microseconds.

Times ``fmmforge.matmul(A, B)`` and ``torch.matmul(A, B)`` interleaved (the hardware floor's
harness, hardware.timing.compare) on a small shape that has no choice, and prints the overhead
per call in µs and the ratio. The first call (which reads the store once) is made before timing:
what is measured is the steady state, a cached lookup per call.

    python benchmarks/matmul_dispatch.py [--size 64] [--dtype float32] [--device cpu] [--pairs 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="square size (small: the dispatch shows)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=15, help="interleaved samples of each")
    parser.add_argument("--keep-home", action="store_true",
                        help="use $FMMFORGE_HOME as it is (default: an empty one, so no choice applies)")
    args = parser.parse_args(argv)
    if not args.keep_home:
        os.environ["FMMFORGE_HOME"] = tempfile.mkdtemp(prefix="fmmforge-dispatch-")

    import fmmforge
    from fmmforge.hardware.timing import compare

    g = torch.Generator().manual_seed(0)
    A = torch.rand(args.size, args.size, dtype=DTYPES[args.dtype], generator=g).to(args.device)
    B = torch.rand(args.size, args.size, dtype=DTYPES[args.dtype], generator=g).to(args.device)
    route = fmmforge.matmul.decide(A, B)
    fmmforge.matmul(A, B)  # the one store read, before timing
    result = compare(lambda: fmmforge.matmul(A, B), lambda: torch.matmul(A, B), device=args.device,
                     pairs=args.pairs)
    ours, theirs = result.candidate, result.baseline
    print(f"{args.size}x{args.size}x{args.size} {args.dtype} on {args.device}: "
          f"{'tuned kernel ' + route.choice.to_plan().describe() if route else 'no choice (torch.matmul)'}")
    print(f"torch.matmul    {theirs.median * 1e6:9.2f} µs (IQR {theirs.iqr * 1e6:.2f})")
    print(f"fmmforge.matmul {ours.median * 1e6:9.2f} µs (IQR {ours.iqr * 1e6:.2f})")
    print(f"overhead        {(ours.median - theirs.median) * 1e6:9.2f} µs per call; "
          f"ratio {ours.median / theirs.median:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
