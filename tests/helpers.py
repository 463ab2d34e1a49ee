"""Helpers the test modules share (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import threading
from typing import Callable, Iterable

from fmmforge.codegen.records import Record

SYNTHETIC_MACHINE = "Synthetic CPU 9000|4|2.13.0|mkl"


def run_threads(target: Callable[..., None], args: Iterable[tuple]) -> None:
    """Run ``target(*a)`` for each ``a`` of ``args`` on its own thread, all at once, wait for them,
    and raise the first error any of them raised (a thread's exception would otherwise only be printed)."""
    errors: list[BaseException] = []

    def guarded(*a) -> None:
        try:
            target(*a)
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def wrong_products_from_threads(matmul: Callable, threads: int = 4, calls: int = 5, low: int = 5,
                                high: int = 40, tol: float = 1e-10) -> list[tuple[int, int, int]]:
    """Call ``matmul`` on random float64 operands (sizes from ``low`` to ``high``) from ``threads``
    threads at once, ``calls`` times each; the shapes where it differed from torch by more than ``tol``."""
    import numpy as np
    import torch

    wrong: list[tuple[int, int, int]] = []

    def work(seed: int) -> None:
        g = np.random.default_rng(seed)
        for _ in range(calls):
            M, K, N = (int(x) for x in g.integers(low, high, 3))
            a, b = torch.from_numpy(g.uniform(-1, 1, (M, K))), torch.from_numpy(g.uniform(-1, 1, (K, N)))
            if float((matmul(a, b) - a @ b).abs().max()) > tol:
                wrong.append((M, K, N))

    run_threads(work, [(s,) for s in range(threads)])
    return wrong


def one_error(err: str, *words: str) -> str:
    """The single "error: " line of stderr, which must mention each of ``words``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def record(algorithm: str = "strassen", levels: int = 1, size: int = 512, *, device: str = "cpu",
           machine: str = SYNTHETIC_MACHINE, when: str = "2026-12-01T10:00:00+00:00", version: str = "0.1.0",
           kernel_s: float = 0.010, vendor_s: float = 0.011, memory: bool = True) -> Record:
    """A synthetic benchmark record (square size, torch backend, float32)."""
    names = [algorithm] * levels
    return Record(
        device=device, machine=machine, algorithm=algorithm, fingerprint="f" * 8,
        plan=json.dumps({"algorithms": names, "levels": levels}), plan_key=f"{algorithm}-{levels}",
        backend="torch", levels=levels, m=size, k=size, n=size, dtype="float32", threads=4,
        median_s=kernel_s, iqr_s=kernel_s / 20, baseline_median_s=vendor_s, baseline_iqr_s=vendor_s / 25,
        speedup=vendor_s / kernel_s, max_error=1.5e-5 * 3**levels, error_bound=4e-4 * 12**levels,
        peak_extra_bytes=size * size * 3 * levels if memory else None,
        workspace_bytes=size * size * levels, created_at=when, fmmforge_version=version,
    )


def builtin_rewards_and_commands() -> tuple:
    """The built-in plugins narrowed to the scheme rewards (no measured ones, no engines, no
    backends) and the command line's commands: a known set of names for plugin tests."""
    from fmmforge.plugins.manager import BUILTIN_PLUGINS

    return tuple(b for b in BUILTIN_PLUGINS if b.module == "fmmforge.plugins.builtin_rewards" or b.kind == "command")
