#!/usr/bin/env bash
# One GPU session on the lent H200 (issue 15), run once from the repository root on the device
# machine, e.g. with the device tool:  bash benchmarks/gpu_session.sh   (timeout_s 600)
# It uses the image's python3 (torch with CUDA, cupy-cuda13x: the cuda13 extra) in a venv that
# sees the system packages; nothing is downloaded. Outputs go to $OUT (or ./gpu-out):
#   env.txt, test.txt (make test), gpu-tests.txt (the CUDA tests alone), gpu_speedup.{csv,md}, bench.txt
# About 10 minutes in all: tests ~2 min, the benchmark capped by --budget-s.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0 FMMFORGE_HOME=$(mktemp -d)
V=.venv-gpu
{ nvidia-smi; python3 -c "import torch, cupy; print(torch.__version__, torch.version.cuda, cupy.__version__)"; nvcc --version | tail -1; } >"$OUT/env.txt" 2>&1
python3 -m venv --system-site-packages "$V" && "$V/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/env.txt" 2>&1
touch "$V/.installed" "$V/.dev-installed"   # make test runs with the image's packages
timeout 240 make test VENV="$V" >"$OUT/test.txt" 2>&1; echo "make test exit $?" >>"$OUT/test.txt"
timeout 60 "$V/bin/python" -m pytest -q -rs tests/test_codegen.py tests/test_cuda_offline.py -k "cuda or cupy or gpu" >"$OUT/gpu-tests.txt" 2>&1
timeout 60 "$V/bin/fmmforge" devices >"$OUT/bench.txt" 2>&1
timeout 60 "$V/bin/fmmforge" bench --device cuda:0 --backend cupy --sizes 4096 --algos strassen --levels 1 --pairs 5 >>"$OUT/bench.txt" 2>&1
"$V/bin/fmmforge" report --device cuda:0 -o "$OUT/report" >>"$OUT/bench.txt" 2>&1 || true
timeout 360 "$V/bin/python" benchmarks/gpu_speedup.py --out "$OUT" --budget-s 300 >"$OUT/gpu_speedup.txt" 2>&1
echo "gpu_speedup exit $?" >>"$OUT/gpu_speedup.txt"
