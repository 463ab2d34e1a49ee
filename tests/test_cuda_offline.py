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
