"""GPU paths that need no GPU: generating CUDA kernels on a machine without one (issue 15),
unvalidated cache entries, the CuPy host module on a numpy stand-in, and the CUDA timing settings
through fakes."""

from __future__ import annotations

import json

import pytest
import torch

from fmmforge.codegen.backends import nvcc_path
from fmmforge.codegen.bench import measure
from fmmforge.codegen.generate import VALIDATION_FILE, cache_key, generate, kernels_dir
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.records import query_records
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; this machine has a CUDA GPU")
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc (CUDA toolkit) is not installed: cannot compile CUDA C")


def _entry(plan) -> dict:
    return json.loads((kernels_dir() / cache_key(plan) / VALIDATION_FILE).read_text())


# ---------------------------------------------------------------------- codegen for a GPU, offline
@no_gpu
@needs_nvcc
def test_cli_codegen_cupy_for_cuda_without_a_gpu_writes_compiles_and_says_not_validated(cli, tmp_path):
    code, stdout, err = cli("codegen", "strassen", "--backend", "cupy", "--device", "cuda", "--levels", "2", "-o", tmp_path / "k")
    assert code == 0, err
    out = tmp_path / "k"
    assert {p.name for p in out.iterdir()} == {"kernel.py", "kernel.cu", VALIDATION_FILE}
    assert "nvcc: " in stdout and "--ptx kernel.cu" in stdout and "compiled" in stdout
    assert "NOT validated on this machine" in stdout
    info = json.loads((out / VALIDATION_FILE).read_text())
    assert info["validated"] is False and info["checks"] == []
    assert info["unvalidated"]["nvcc"]["ok"] is True
    plan, _ = make_plan("strassen", 2, backend="cupy", device="cuda")
    assert _entry(plan)["validated"] is False  # the cache holds it, marked unvalidated


@no_gpu
def test_cli_codegen_torch_for_cuda_without_a_gpu_exits_0_unvalidated(cli, tmp_path):
    code, stdout, err = cli("codegen", "strassen", "--backend", "torch", "--device", "cuda", "--levels", "2", "-o", tmp_path)
    assert code == 0, err
    assert "NOT validated on this machine" in stdout and "nvcc" not in stdout
    assert json.loads((tmp_path / VALIDATION_FILE).read_text())["validated"] is False


@no_gpu
def test_cli_codegen_names_another_absent_gpu_is_still_an_error(cli, tmp_path):
    code, _, err = cli("codegen", "strassen", "--device", "cuda:3", "-o", tmp_path / "k")
    assert code == 2 and "cuda:3 is not present" in err
    assert not (tmp_path / "k").exists()


@no_gpu
def test_nvcc_failure_writes_nothing_and_exits_2(cli, tmp_path, monkeypatch):
    from fmmforge.codegen import backends

    monkeypatch.setattr(backends, "nvcc_check", lambda source: backends.NvccResult("nvcc --ptx kernel.cu", False, "bad"))
    monkeypatch.setattr(backends, "nvcc_path", lambda: "/usr/bin/nvcc")
    code, _, err = cli("codegen", "strassen", "--backend", "cupy", "--device", "cuda", "-o", tmp_path / "k")
    assert code == 2 and "nvcc could not compile" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k").exists()


# ---------------------------------------------------------------------- unvalidated cache entries
NOTE = {"reason": "test: emitted elsewhere"}


def _unvalidated_cpu_kernel():
    plan, decomps = make_plan("strassen", 1, backend="numpy", dtype="float64", cutoff=2)
    kernel = generate(plan, decomps, backend=get_backend("numpy"), validate=False, unvalidated_note=NOTE)
    return plan, decomps, kernel


def test_an_unvalidated_entry_is_never_served_as_validated():
    plan, decomps, kernel = _unvalidated_cpu_kernel()
    assert kernel.validation == [] and _entry(plan)["validated"] is False
    again = generate(plan, decomps, backend=get_backend("numpy"), validate=False, unvalidated_note=NOTE)
    assert again.validation == [] and again.path == kernel.path
    validated = generate(plan, decomps, backend=get_backend("numpy"))  # first use where it can run
    assert validated.validation and all(r.ok for r in validated.validation)
    info = _entry(plan)
    assert info["validated"] is True and info["checks"] and "unvalidated" not in info


def test_an_entry_claiming_validation_without_checks_is_discarded():
    plan, decomps, kernel = _unvalidated_cpu_kernel()
    path = kernels_dir() / cache_key(plan) / VALIDATION_FILE
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "validated": True}))
    warnings: list[str] = []
    served = generate(plan, decomps, backend=get_backend("numpy"), warn=warnings.append)
    assert served.validation and "no passing validation recorded" in warnings[0]


def test_measure_refuses_an_unvalidated_kernel_it_cannot_validate(monkeypatch):
    from fmmforge.codegen.backends import NumpyBackend

    plan, decomps, _ = _unvalidated_cpu_kernel()
    monkeypatch.setattr(NumpyBackend, "available", lambda self: "no device here (test)")
    with pytest.raises(FmmforgeError, match="cannot validate"):
        measure(plan, decomps, (8, 8, 8), backend=get_backend("numpy"), pairs=3, min_sample_s=0.0)
    assert query_records() == [] and _entry(plan)["validated"] is False


def test_measure_validates_an_unvalidated_kernel_before_timing_it():
    plan, decomps, _ = _unvalidated_cpu_kernel()
    rec = measure(plan, decomps, (8, 8, 8), backend=get_backend("numpy"), pairs=3, min_sample_s=0.0)
    assert rec.max_error is not None and len(query_records()) == 1
    assert _entry(plan)["validated"] is True


def test_measure_refuses_a_kernel_without_validation(monkeypatch):
    from fmmforge.codegen import bench

    plan, decomps, kernel = _unvalidated_cpu_kernel()
    monkeypatch.setattr(bench, "generate", lambda *a, **k: kernel)
    with pytest.raises(FmmforgeError, match="not validated"):
        measure(plan, decomps, (8, 8, 8), backend=get_backend("numpy"), pairs=3, min_sample_s=0.0)
    assert query_records() == []


# ---------------------------------------------------------------------- the CuPy kernels without a GPU
CUPY_SCHEMES = [("strassen", 2), ("strassen-winograd", 1), ("laderman", 1), ("alphatensor:2,3,4", 1),
                ("strassen*strassen", 1)]


def _cupy_kernel(name: str, levels: int, dtype: str):
    plan, decomps = make_plan(name, levels, backend="cupy", device="cuda", dtype=dtype, cutoff=1)
    return generate(plan, decomps, backend=get_backend("cupy"), validate=False), decomps


@needs_nvcc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,levels", CUPY_SCHEMES)
def test_cupy_cuda_c_compiles_with_nvcc(name, levels, dtype):
    from fmmforge.codegen.backends import nvcc_check

    kernel, _ = _cupy_kernel(name, levels, dtype)
    result = nvcc_check(kernel.files["kernel.cu"])
    assert result.ok, result.message
    assert ".entry fmm_sums" in result.ptx and ".entry fmm_outputs" in result.ptx
    assert (".f64" in result.ptx) == (dtype == "float64")


@pytest.mark.parametrize("name,levels", CUPY_SCHEMES)
def test_cupy_passes_read_and_write_each_block_once(name, levels):
    """One pass for all A- and B-side sums (each block element loaded once, each sum stored once),
    one batched gemm, one pass storing each C block once."""
    import re

    from fmmforge.codegen.emit_cupy import flatten_levels

    kernel, decomps = _cupy_kernel(name, levels, "float32")
    d = flatten_levels(decomps)
    U, V, W = d.factors()
    sums, outputs = kernel.files["kernel.cu"].split("fmm_outputs(", 1)
    n, m, p = d.format
    used = lambda F: sum(any(F[a, r] != 0 for r in range(d.rank)) for a in range(F.shape[0]))  # noqa: E731
    assert len(re.findall(r"= A\[", sums)) == used(U) and len(re.findall(r"= B\[", sums)) == used(V)
    assert len(re.findall(r"\bS\[", sums)) == d.rank and len(re.findall(r"\bT\[", sums)) == d.rank
    assert len(re.findall(r"\bC\[", outputs)) == n * p
    assert len(re.findall(r"= M\[", outputs)) == sum(any(W[c, r] != 0 for c in range(n * p)) for r in range(d.rank))
    assert kernel.source.count("cp.matmul(S, T)") == 1


class _FakeRawModule:
    """cupy.RawModule on the CPU: each ``extern "C" __global__`` kernel of the CUDA source is
    translated line by line into Python and run thread by thread over the launch grid, on flat
    views of numpy arrays at the pointers cupy would pass. It understands the subset of C the
    emitter writes (declarations, if / else if, return, arithmetic) and fails on anything else."""

    def __init__(self, code: str) -> None:
        import re

        self.functions = {}
        for name, params, body in re.findall(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{\n(.*?)\n\}\n', code, re.S):
            names = [re.findall(r"\w+", p)[-1] for p in params.split(",")]
            self.functions[name] = (names, self._python(body, names))

    @staticmethod
    def _python(body: str, names: list[str]):
        import re

        out, depth = [f"def kernel(blockIdx_x, blockDim_x, threadIdx_x, {', '.join(names)}):"], 1
        for raw in body.splitlines():
            line = raw.strip()
            if line == "}":
                depth -= 1
                continue
            line = line.replace("(long)blockIdx.x * blockDim.x + threadIdx.x", "blockIdx_x * blockDim_x + threadIdx_x")
            line = re.sub(r"(\d\.\d*(?:e-?\d+)?)f\b", r"\1", line).replace("(real)0", "0")
            if m := re.fullmatch(r"if \((.*)\) return;", line):
                out.append("    " * depth + f"if {m[1]}: return")
            elif m := re.fullmatch(r"(\} else )?if \((.*)\) \{", line):
                depth -= bool(m[1])
                out.append("    " * depth + ("elif" if m[1] else "if") + f" {m[2]}:")
                depth += 1
            elif m := re.fullmatch(r"long (.*);", line):
                out.append("    " * depth + m[1].replace(", ", "; ").replace(" / ", " // "))
            elif m := re.fullmatch(r"(?:real )?([^;{}]*);", line):
                out.append("    " * depth + m[1])
            else:
                raise AssertionError(f"the fake RawModule cannot read: {raw!r}")
        namespace: dict = {}
        exec("\n".join(out), namespace)
        return namespace["kernel"]

    def get_function(self, name: str):
        import numpy as np

        names, fn = self.functions[name]

        def launch(grid, block, args):
            assert len(args) == len(names)
            flat = [np.lib.stride_tricks.as_strided(a, shape=(1 + sum((s - 1) * st // a.itemsize for s, st in zip(a.shape, a.strides)),),
                                                    strides=(a.itemsize,)) if isinstance(a, np.ndarray) and a.ndim else
                    (int(a) if isinstance(a, np.integer) else a) for a in args]
            for b in range(grid[0]):
                for t in range(block[0]):
                    fn(b, block[0], t, *flat)
        return launch


def _fake_cupy():
    import types

    import numpy as np

    fake = types.ModuleType("cupy")
    for attr in ("dtype", "int64", "empty", "matmul", "ascontiguousarray"):
        setattr(fake, attr, getattr(np, attr))
    fake.RawModule = _FakeRawModule
    return fake


@pytest.mark.parametrize("name,levels", CUPY_SCHEMES)
def test_cupy_host_module_and_kernels_run_on_a_numpy_stand_in(name, levels, monkeypatch):
    """The host module's launch grid, strides, leaf gemm and peeling, and the CUDA kernels' index
    arithmetic, run on the CPU (numpy arrays in place of cupy's): the first GPU run should agree."""
    import sys

    import numpy as np

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    kernel, decomps = _cupy_kernel(name, levels, "float64")
    mod = kernel.new_module()
    n, m, p = mod.N0, mod.M0, mod.P0
    rng = np.random.default_rng(1)
    for M, K, N in ((n, m, p), (2 * n + 1, 2 * m + 1, 3 * p + 2), (3 * n, 2 * m, p + 1)):
        A, B = rng.uniform(-1, 1, (M, K)), rng.uniform(-1, 1, (K, N))
        C = mod.matmul(A, B)
        assert C.shape == (M, N) and np.allclose(C, A @ B, rtol=0, atol=1e-12 * K * 10 ** levels)
    with pytest.raises(TypeError, match="generated for float64"):
        mod.matmul(A.astype(np.float32), B.astype(np.float32))


# ---------------------------------------------------------------------- CUDA timing settings, through fakes
def _fake_cupy_cublas(log: list):
    import types

    TF32_TENSOR_OP = 3
    state = {"mode": TF32_TENSOR_OP}
    cublas = types.SimpleNamespace(
        CUBLAS_DEFAULT_MATH=0,
        getMathMode=lambda h: state["mode"],
        setMathMode=lambda h, mode: (log.append(("setMathMode", h, mode)), state.update(mode=mode)))
    cuda = types.SimpleNamespace(cublas=cublas, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                 device=types.SimpleNamespace(get_cublas_handle=lambda: "handle0"))
    return types.SimpleNamespace(cuda=cuda), state


def test_tf32_off_sets_cublas_default_math_for_cupy_and_restores_it(monkeypatch):
    import sys

    from fmmforge.hardware.timing import tf32_off

    log: list = []
    fake, state = _fake_cupy_cublas(log)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with tf32_off():
            assert state["mode"] == 0 and torch.backends.cuda.matmul.allow_tf32 is False
        assert state["mode"] == 3 and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert log == [("setMathMode", "handle0", 0), ("setMathMode", "handle0", 3)]


def test_tf32_off_without_cupy_loaded_touches_nothing_of_cupy(monkeypatch):
    import sys

    from fmmforge.hardware.timing import cupy_default_math

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    with cupy_default_math() as found:
        assert found is None and "cupy" not in sys.modules


def test_cuda_clock_synchronises_then_times_with_events(monkeypatch):
    from fmmforge.hardware import timing

    log: list = []

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.name = "start" if not any(e[0] == "event" for e in log) else "stop"
            log.append(("event", self.name))

        def record(self) -> None:
            log.append(("record", self.name))

        def synchronize(self) -> None:
            log.append(("synchronize", self.name))

        def elapsed_time(self, other) -> float:
            return 30.0  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: log.append(("device-sync", str(dev))))
    clock = timing._Clock("cuda:0")
    seconds = clock.time(lambda: log.append(("call",)), 3)
    assert seconds == pytest.approx(0.010)  # 30 ms over 3 calls
    steps = [e for e in log if e[0] != "event"]
    assert steps == [("device-sync", "cuda:0"), ("record", "start"), ("call",), ("call",), ("call",),
                     ("record", "stop"), ("synchronize", "stop")]


# ---------------------------------------------------------------------- the GPU benchmark script
def _gpu_speedup():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speedup.py"
    spec = importlib.util.spec_from_file_location("gpu_speedup", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_speedup_plans_the_issue_table_and_writes_markdown(tmp_path):
    mod = _gpu_speedup()
    args = mod.parse_args(["--out", str(tmp_path)])
    assert args.sizes == "8192,16384,32768" and args.pairs >= 20 and set(args.dtypes.split(",")) == {"float32", "bfloat16"}
    assert {c[2] for c in mod.cases_for(32768)} == {2} and len(mod.cases_for(16384)) == len(mod.CASES)
    with pytest.raises(SystemExit):
        mod.parse_args(["--out", str(tmp_path), "--pairs", "5"])
    mod.write_markdown(tmp_path / "t.md", ["# h"], [{"dtype": "float32", "speedup": 1.2345678, "status": "ok"}])
    assert "| float32 |" in (tmp_path / "t.md").read_text() and "1.235" in (tmp_path / "t.md").read_text()


@no_gpu
def test_gpu_speedup_without_a_gpu_measures_nothing(tmp_path):
    assert _gpu_speedup().main(["--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
