"""GPU speed-ups of generated kernels over cuBLAS on one CUDA GPU, in one interleaved run.

    python benchmarks/gpu_speedup.py --out DIR [--sizes 8192,16384,32768] [--pairs 20] [--budget-s 330]

float32 with TF32 off on both sides (torch's switches and cuBLAS's math mode for CuPy, see
fmmforge.hardware.timing), then bfloat16 where a backend emits it. Every row: the median of
``--pairs`` (>= 20) interleaved samples of kernel and cuBLAS, both IQRs, the max error against a
float64 product and its bound. Rows are written as they come to DIR/gpu_speedup.csv, and the
table with the device and the command to DIR/gpu_speedup.md, so a run cut short still leaves its
rows. A row that would start after ``--budget-s`` seconds is listed as skipped (time budget).
Prints ratios, never asserts them; needs a CUDA GPU (and cupy for the cupy backend).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

# (backend, algorithm, levels): AlphaTensor's GPU configuration (one level of a <4,4,4> scheme:
# Strassen-square and DeepMind's rank-49 one) and one and two levels of Strassen-Winograd.
CASES = [("cupy", "strassen-winograd", 1), ("cupy", "strassen-winograd", 2), ("cupy", "strassen*strassen", 1),
         ("cupy", "alphatensor:4,4,4", 1), ("torch", "strassen-winograd", 1), ("torch", "strassen-winograd", 2)]
BIG = 32768  # at this size and above only the two-level cases run (each sample is over a second)
FIELDS = ["dtype", "backend", "algorithm", "levels", "size", "kernel_ms", "kernel_iqr_ms", "cublas_ms",
          "cublas_iqr_ms", "speedup", "ceiling", "max_error", "error_bound", "status"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for gpu_speedup.csv and gpu_speedup.md")
    ap.add_argument("--sizes", default="8192,16384,32768")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no row after this many seconds")
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args(argv)
    if args.pairs < 20:
        ap.error("--pairs must be at least 20 (the issue's table is a median of >= 20 repetitions)")
    return args


def cases_for(size: int) -> list[tuple[str, str, int]]:
    return [c for c in CASES if size < BIG or c[2] == 2]


def run_case(backend_name: str, algo: str, levels: int, size: int, dtype: str, args: argparse.Namespace) -> dict:
    from fmmforge.codegen.bench import measure
    from fmmforge.codegen.plan import ceiling, make_plan
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.plugins import get_backend

    row = {"dtype": dtype, "backend": backend_name, "algorithm": algo, "levels": levels, "size": size}
    backend = get_backend(backend_name)
    why = backend.available()
    if why is None and dtype not in backend.dtypes:
        why = f"backend {backend_name} emits {', '.join(backend.dtypes)}, not {dtype}"
    if why:
        return {**row, "status": f"skipped ({why})"}
    try:
        plan, decomps = make_plan(algo, levels, backend=backend_name, dtype=dtype, device=args.device, cutoff=256)
        rec = measure(plan, decomps, (size,) * 3, backend=backend, pairs=args.pairs, min_sample_s=0.02, record=False)
    except FmmforgeError as exc:
        return {**row, "status": f"error: {exc}"}
    return {**row, "kernel_ms": rec.median_s * 1e3, "kernel_iqr_ms": rec.iqr_s * 1e3,
            "cublas_ms": rec.baseline_median_s * 1e3, "cublas_iqr_ms": rec.baseline_iqr_s * 1e3,
            "speedup": rec.speedup, "ceiling": ceiling(decomps), "max_error": rec.max_error,
            "error_bound": rec.error_bound, "status": "ok"}


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def write_markdown(path: Path, header: list[str], rows: list[dict]) -> None:
    from fmmforge.core.atomic import write_text

    lines = header + ["", "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(_cell(r.get(f)) for f in FIELDS) + " |" for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from fmmforge.core.atomic import write_text

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure", file=sys.stderr)
        return 2
    header = [f"# GPU speed-ups over cuBLAS: {torch.cuda.get_device_name(0)}",
              f"command: python benchmarks/gpu_speedup.py {' '.join(argv if argv is not None else sys.argv[1:])}",
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; float32 with TF32 off on both sides; "
              f"median of {args.pairs} interleaved samples each; max error against float64"]
    print("\n".join(header), flush=True)
    rows: list[dict] = []
    started = time.monotonic()
    csv_path, md_path = args.out / "gpu_speedup.csv", args.out / "gpu_speedup.md"
    args.out.mkdir(parents=True, exist_ok=True)
    for dtype in args.dtypes.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for backend_name, algo, levels in cases_for(size):
                if time.monotonic() - started > args.budget_s:
                    row = {"dtype": dtype, "backend": backend_name, "algorithm": algo, "levels": levels,
                           "size": size, "status": "skipped (time budget)"}
                else:
                    row = run_case(backend_name, algo, levels, size, dtype, args)
                rows.append(row)
                print(" ".join(_cell(row.get(f)) for f in FIELDS), flush=True)
                buf = io.StringIO(newline="")
                writer = csv.DictWriter(buf, FIELDS)
                writer.writeheader()
                writer.writerows(rows)
                write_text(csv_path, buf.getvalue())
                write_markdown(md_path, header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
