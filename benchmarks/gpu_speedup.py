"""GPU speed-ups of generated kernels over cuBLAS (float32, TF32 off on both sides), one run.

    .venv/bin/python benchmarks/gpu_speedup.py [--sizes 8192,12288,16384] [--backends torch,cupy]

Needs a CUDA GPU (and cupy for the cupy backend); prints ratios, never asserts them. The
configurations follow AlphaTensor's GPU runs (one level of a <4,4,4> scheme: Strassen-square
and DeepMind's rank-49 scheme) plus one and two levels of Strassen–Winograd.
"""

from __future__ import annotations

import argparse
import sys

CASES = [("strassen-winograd", 1), ("strassen-winograd", 2), ("strassen*strassen", 1), ("alphatensor:4,4,4", 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8192,10240,12288,14336,16384")
    ap.add_argument("--backends", default="torch,cupy")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure")
        return 0
    from fmmforge.codegen.bench import measure
    from fmmforge.codegen.plan import ceiling, make_plan
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.plugins import get_backend

    print(f"device: {torch.cuda.get_device_name(0)}; float32, TF32 off; baseline cuBLAS (torch.mm / cupy.matmul)")
    print(f"{'backend':8s} {'algorithm':20s} {'L':>2s} {'size':>6s} {'kernel ms':>10s} {'cuBLAS ms':>10s} "
          f"{'speedup':>8s} {'ceiling':>8s} {'max err':>9s}")
    for backend in args.backends.split(","):
        codegen_backend = get_backend(backend)
        why = codegen_backend.available()
        if why:
            print(f"{backend}: skipped ({why})")
            continue
        for size in (int(s) for s in args.sizes.split(",")):
            for algo, levels in CASES:
                plan, decomps = make_plan(algo, levels, backend=backend, dtype="float32", device=args.device, cutoff=256)
                try:
                    rec = measure(plan, decomps, (size,) * 3, backend=codegen_backend, pairs=args.pairs, min_sample_s=0.2, record=False)
                except FmmforgeError as exc:
                    print(f"{backend:8s} {algo:20s} {levels:2d} {size:6d} error: {exc}")
                    continue
                print(f"{backend:8s} {algo:20s} {levels:2d} {size:6d} {rec.median_s * 1e3:10.2f} "
                      f"{rec.baseline_median_s * 1e3:10.2f} {rec.speedup:8.3f} {ceiling(decomps):8.3f} "
                      f"{rec.max_error:9.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
