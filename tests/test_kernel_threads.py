"""Generated kernels may be called from several threads at once: each thread has its own workspaces."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.validate import error_bound, random_inputs
from fmmforge.plugins import get_backend
from tests.helpers import run_threads

THREADS = 4
ITERATIONS = 40

# Four different shapes per kernel. They peel to cores that share block shapes at some level, so
# workspaces kept per module (not per thread) would be handed to two threads at the same time.
KERNELS = [
    # torch, two levels of <2,2,2>: every level's S/T/P workspace
    pytest.param("strassen-winograd", 2, "torch", "lowmem", [(64, 64, 64), (65, 64, 67), (64, 66, 64), (96, 64, 65)],
                 id="torch-winograd-2"),
    # numpy, a rectangular <2,3,4> scheme (blocks large enough for numpy to release the GIL)
    pytest.param("alphatensor:2,3,4", 1, "numpy", "lowmem",
                 [(128, 192, 256), (129, 192, 257), (128, 194, 256), (130, 195, 258)],
                 id="numpy-2x3x4"),
    # the batched torch layout: stacked S/T/P and the A/B/C block buffers
    pytest.param("strassen", 2, "torch", "batched", [(64, 64, 64), (65, 64, 67), (64, 66, 64), (66, 67, 65)],
                 id="torch-batched-strassen-2"),
]


def _hammer(matmul, backend, dtype, shapes, decomps, seed):
    """Call ``matmul`` from one thread per shape at once (a barrier lines them up before every
    iteration); returns, per thread, the failures: (iteration, max error, bound) or an exception."""
    barrier = threading.Barrier(len(shapes), timeout=60)
    failures: list[list] = [[] for _ in shapes]

    def work(slot: int, shape: tuple[int, int, int]) -> None:
        M, K, N = shape
        A64, B64 = random_inputs(M, K, N, seed + slot)
        A, B = backend.to_native(A64, dtype, "cpu"), backend.to_native(B64, dtype, "cpu")
        Ar, Br = backend.to_numpy(A).astype(np.float64), backend.to_numpy(B).astype(np.float64)
        ref = Ar @ Br
        bound = error_bound(K, decomps, dtype, float(np.abs(Ar).max()), float(np.abs(Br).max()))
        try:
            for i in range(ITERATIONS):
                barrier.wait()
                got = backend.to_numpy(matmul(A, B)).astype(np.float64)
                err = float(np.abs(got - ref).max())
                if not err <= bound:
                    failures[slot].append((i, err, bound))
        except Exception as exc:  # noqa: BLE001 - reported by the test, with the thread's shape
            barrier.abort()
            failures[slot].append(exc)

    run_threads(work, list(enumerate(shapes)))
    return failures


@pytest.mark.parametrize("name,levels,backend_name,variant,shapes", KERNELS)
def test_concurrent_calls_on_different_shapes_are_all_correct(name, levels, backend_name, variant, shapes):
    plan, decomps = make_plan(name, levels, backend=backend_name, dtype="float32", cutoff=8, variant=variant)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    assert len(shapes) == THREADS
    failures = _hammer(kernel.matmul, get_backend(backend_name), plan.dtype, shapes, decomps, seed=11)
    wrong = {shape: f[:3] for shape, f in zip(shapes, failures) if f}
    assert not wrong, f"wrong products under concurrent calls (iteration, max error, bound): {wrong}"


@pytest.mark.parametrize("backend_name,variant", [("torch", "lowmem"), ("numpy", "lowmem"), ("torch", "batched")])
def test_workspaces_belong_to_the_calling_thread(backend_name, variant):
    plan, decomps = make_plan("strassen", 1, backend=backend_name, dtype="float32", cutoff=2, variant=variant)
    mod = generate(plan, decomps, backend=get_backend(plan.backend)).module()
    backend = get_backend(backend_name)
    A64, B64 = random_inputs(8, 8, 8)
    A, B = backend.to_native(A64, "float32", "cpu"), backend.to_native(B64, "float32", "cpu")
    mod.clear_workspaces()
    step = threading.Barrier(2, timeout=30)
    held: list[int] = []

    def other_thread() -> None:
        mod.matmul(A, B)
        held.append(mod.workspace_bytes())
        step.wait()  # the main thread looks and clears its own
        step.wait()
        held.append(mod.workspace_bytes())

    t = threading.Thread(target=other_thread)
    t.start()
    step.wait()
    mine = mod.workspace_bytes()
    mod.clear_workspaces()
    step.wait()
    t.join()
    assert held[0] > 0 and mine == 0  # the other thread's buffers are not this thread's
    assert held[1] == held[0]  # and clear_workspaces() here left them alone
    mod.matmul(A, B)
    assert mod.workspace_bytes() == held[0]  # this thread allocates its own on its first call


def test_validation_never_changes_the_module_that_callers_share(monkeypatch):
    """Validation runs with a small CUTOFF to reach every level on small shapes; it used to set it on
    the kernel's one module, so a thread calling that kernel meanwhile ran with the wrong cut-off."""
    import fmmforge.codegen.generate as generate_module

    plan, decomps = make_plan("strassen", 2, backend="torch", dtype="float32", device="cpu")
    kernel = generate(plan, decomps, backend=get_backend("torch"), use_cache=False)
    shared = kernel.module()
    seen = []
    real_check = generate_module.check_product

    def watching(*args, **kwargs):
        seen.append(shared.CUTOFF)
        return real_check(*args, **kwargs)

    monkeypatch.setattr(generate_module, "check_product", watching)
    generate_module.validate_kernel(kernel, get_backend("torch"), decomps)
    assert seen and set(seen) == {plan.cutoff}
