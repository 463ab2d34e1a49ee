"""The parallel torch CPU variant: level 0's products on single-threaded workers (codegen.runtime.runtime_parallel)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from fmmforge.codegen.runtime import runtime_parallel
from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.validate import error_bound
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend

from tests.helpers import run_threads
from tests.test_fused import SCHEMES, SHAPES  # Strassen, Winograd, Laderman, DeepMind's, a Kronecker product

needs_controls = pytest.mark.skipif(runtime_parallel._thread_controls() is None,
                                    reason="this torch has no per-thread OpenMP/MKL controls: the variant runs serially")


def _parallel(name: str, levels: int, dtype: str, cutoff: int = 1, remainder: str = "peel"):
    plan, decomps = make_plan(name, levels, backend="torch", dtype=dtype, cutoff=cutoff, variant="parallel",
                              remainder=remainder)
    return generate(plan, decomps, backend=get_backend("torch")), decomps


def _check(kernel, decomps, dtype, shapes, seed=3):
    rng = np.random.default_rng(seed)
    for M, K, N in shapes:
        A = torch.from_numpy(rng.uniform(-1, 1, (M, K))).to(getattr(torch, dtype))
        B = torch.from_numpy(rng.uniform(-1, 1, (K, N))).to(getattr(torch, dtype))
        C = kernel.matmul(A, B)
        assert C.shape == (M, N) and C.dtype == A.dtype
        err = float((C.double() - A.double() @ B.double()).abs().max())
        assert err <= error_bound(K, decomps, dtype), (M, K, N, err)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,levels", SCHEMES)
def test_parallel_kernels_equal_the_reference_within_the_error_bound(name, levels, dtype):
    kernel, decomps = _parallel(name, levels, dtype)
    assert kernel.validation and all(r.ok for r in kernel.validation)
    _check(kernel, decomps, dtype, SHAPES)


@pytest.mark.parametrize("name,levels", [("strassen-winograd", 2), ("alphatensor:2,3,4", 1)])
def test_padded_parallel_kernels_equal_the_reference(name, levels):
    kernel, decomps = _parallel(name, levels, "float64", cutoff=2, remainder="pad")
    _check(kernel, decomps, "float64", SHAPES)


@needs_controls
def test_level_zero_products_run_on_the_workers_with_one_thread_each():
    kernel, decomps = _parallel("strassen", 1, "float64", cutoff=8)
    mod = kernel.new_module()
    seen = []
    leaf = mod._leaf_set

    def spy(A, B, C, alpha, level=None):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return leaf(A, B, C, alpha, level)

    mod._leaf_set = spy  # what level 1 (the leaf, for a one-level plan) calls in this module
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("one thread: the kernel runs the low-memory layout")
    A, B = torch.rand(64, 64, dtype=torch.float64), torch.rand(64, 64, dtype=torch.float64)
    C = mod.matmul(A, B)
    np.testing.assert_allclose(C.numpy(), A.numpy() @ B.numpy(), atol=1e-12)
    workers = [s for s in seen if s[0].startswith("fmmforge-leaf")]
    assert len(workers) == len(seen) == 7  # every product on a worker, none on the caller
    wide = 7 % before
    assert sorted(n for _, n in workers) == [1] * (7 - wide) + [before] * wide  # the leftover gets all threads
    assert torch.get_num_threads() == before  # the caller's thread count is never changed


@needs_controls
def test_thread_counts_are_restored_after_a_parallel_kernel_returns():
    kernel, _ = _parallel("strassen", 1, "float32", cutoff=2)
    before = torch.get_num_threads()
    A, B = torch.rand(32, 32), torch.rand(32, 32)
    kernel.matmul(A, B)
    assert torch.get_num_threads() == before
    # the caller's gemm still runs with all its threads: a task run on a fresh thread sees the default
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [before]


def test_the_parallel_kernel_runs_serially_with_one_thread():
    kernel, decomps = _parallel("strassen-winograd", 2, "float64", cutoff=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check(kernel, decomps, "float64", [(16, 16, 16), (17, 29, 23)])
    finally:
        torch.set_num_threads(before)


def test_parallel_kernels_are_safe_from_several_threads():
    kernel, decomps = _parallel("strassen-winograd", 2, "float64", cutoff=4)
    rng = np.random.default_rng(9)
    cases = [(torch.from_numpy(rng.uniform(-1, 1, (40 + i, 36))), torch.from_numpy(rng.uniform(-1, 1, (36, 44 - i))))
             for i in range(4)]

    def work(i):
        A, B = cases[i]
        for _ in range(5):
            np.testing.assert_allclose(kernel.matmul(A, B).numpy(), A.numpy() @ B.numpy(), atol=1e-11)

    run_threads(work, [(i,) for i in range(4)])


def test_an_error_in_a_task_is_raised_after_every_task_has_ended():
    kernel, _ = _parallel("strassen", 1, "float64", cutoff=8)
    mod = kernel.new_module()
    if torch.get_num_threads() < 2 or mod._thread_controls() is None:
        pytest.skip("the kernel runs the low-memory layout here")
    running = []
    leaf = mod._leaf_set

    def failing(A, B, C, alpha, level=None):
        running.append(1)
        if len(running) == 1:
            raise RuntimeError("leaf failed")
        return leaf(A, B, C, alpha, level)

    mod._leaf_set = failing
    with pytest.raises(RuntimeError, match="leaf failed"):
        mod.matmul(torch.rand(64, 64, dtype=torch.float64), torch.rand(64, 64, dtype=torch.float64))
    assert len(running) == 7 - 7 % torch.get_num_threads()  # the others ran to their end first


def test_the_parallel_variant_is_torch_cpu_only():
    with pytest.raises(FmmforgeError, match="parallel"):
        make_plan("strassen", 1, backend="numpy", variant="parallel")
    with pytest.raises(FmmforgeError, match="parallel"):
        make_plan("strassen", 1, backend="torch", device="cuda", variant="parallel")


def test_workspace_per_worker_is_reported_and_stays_within_two_c_on_two_workers():
    kernel, _ = _parallel("strassen-winograd", 2, "float32", cutoff=64)
    per = kernel.facts["workspace_per_worker"]
    assert per == pytest.approx(3 / 4 + 3 / 16)  # level 0's S, T, P and level 1's low-memory S, T, P
    assert kernel.facts["workspace_fraction_square"] == pytest.approx(per * kernel.facts["workers"])


@needs_controls
def test_the_workers_workspaces_are_counted_and_cleared():
    kernel, _ = _parallel("strassen-winograd", 2, "float32", cutoff=8)
    mod = kernel.module()
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: the kernel runs the low-memory layout")
    mod.clear_workspaces()
    n = 64
    mod.matmul(torch.rand(n, n), torch.rand(n, n))
    per = kernel.facts["workspace_per_worker"] * n * n * 4
    held = mod.workspace_bytes()  # every worker's (which products, so which sums, a worker takes varies)
    assert per < held <= per * torch.get_num_threads()
    mod.clear_workspaces()
    assert mod.workspace_bytes() == 0


def test_a_generated_parallel_kernel_runs_standalone(tmp_path):
    kernel, _ = _parallel("strassen-winograd", 1, "float64", cutoff=8)
    path = tmp_path / "kernel.py"
    path.write_text(kernel.source, encoding="utf-8")
    code = ("import importlib.util, torch\n"
            f"spec = importlib.util.spec_from_file_location('k', {str(path)!r})\n"
            "k = importlib.util.module_from_spec(spec); spec.loader.exec_module(k)\n"
            "A, B = torch.rand(67, 70, dtype=torch.float64), torch.rand(70, 66, dtype=torch.float64)\n"
            "assert (k.matmul(A, B) - A @ B).abs().max() < 1e-12\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
