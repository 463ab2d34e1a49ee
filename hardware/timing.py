"""The one timing harness of fmmforge (docs/background.md §7). Nothing else times a kernel.

* warm-up calls first (workspaces allocated, caches and thread pools hot);
* each timed sample repeats the call until it lasts at least ``min_sample_s`` so that the
  timer's overhead (and a CUDA event's resolution) is negligible;
* candidate and baseline are interleaved in the same run (A B A B ..., starting side
  alternating), so drifts of the machine hit both alike;
* the median and the interquartile range are reported for both;
* on CUDA the device is synchronised and CUDA events time the samples;
* thread counts are pinned (torch, and BLAS/OpenMP pools through threadpoolctl when present)
  and TF32 is switched off on both sides of a float32 comparison.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

Fn = Callable[[], object]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and interquartile range of the samples."""

    median: float
    iqr: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        s = sorted(samples)
        if len(s) >= 4:
            q = statistics.quantiles(s, n=4, method="inclusive")
            iqr = q[2] - q[0]
        else:
            iqr = s[-1] - s[0] if s else 0.0
        return cls(statistics.median(s), iqr, tuple(samples))


@dataclass(frozen=True)
class Comparison:
    candidate: Timing
    baseline: Timing

    @property
    def speedup(self) -> float:
        return self.baseline.median / self.candidate.median


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Fix torch's and the BLAS/OpenMP thread counts for the duration (restored afterwards)."""
    import torch

    old = torch.get_num_threads()
    limiter = contextlib.nullcontext()
    if threads is not None:
        torch.set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=threads)
        except ImportError:  # torch's own setting covers MKL/OpenMP inside torch
            pass
    try:
        with limiter:
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """TF32 off for matmul and cuDNN (both sides of an fp32 comparison run in true fp32): torch's
    switches, and, when CuPy is loaded, cuBLAS's math mode on CuPy's handle (CUBLAS_DEFAULT_MATH,
    never the TF32 tensor-op mode); everything is restored afterwards."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with cupy_default_math():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def cupy_default_math() -> Iterator[int | None]:
    """cuBLAS's math mode on CuPy's handle for the current device set to CUBLAS_DEFAULT_MATH (no
    TF32) and restored afterwards; yields the mode it found, or None when CuPy is not loaded (it is
    never imported here) or has no usable GPU."""
    cupy = sys.modules.get("cupy")
    try:
        if cupy is None or cupy.cuda.runtime.getDeviceCount() < 1:
            raise LookupError
        cublas = cupy.cuda.cublas
        handle = cupy.cuda.device.get_cublas_handle()
        old = cublas.getMathMode(handle)
    except Exception:  # noqa: BLE001 - no CuPy or no GPU: nothing of cuBLAS's to set
        yield None
        return
    cublas.setMathMode(handle, cublas.CUBLAS_DEFAULT_MATH)
    try:
        yield old
    finally:
        cublas.setMathMode(handle, old)


class _Clock:
    """perf_counter on the CPU; CUDA events (after a synchronisation) on a GPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        if self.cuda:
            import torch

            self._torch = torch
            self._dev = torch.device(device)

    def time(self, fn: Fn, reps: int) -> float:
        if self.cuda:
            torch = self._torch
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self._dev)
            start.record()
            for _ in range(reps):
                fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1000.0 / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps


def _reps_for(clock: _Clock, fn: Fn, min_sample_s: float) -> int:
    """How many calls one sample needs to last ``min_sample_s`` (timer overhead negligible)."""
    reps = 1
    while True:
        t = clock.time(fn, reps) * reps
        if t >= min_sample_s or reps >= 1 << 20:
            return reps
        reps = max(reps * 2, int(reps * min_sample_s / max(t, 1e-9) * 1.2))


def time_one(fn: Fn, *, device: str = "cpu", threads: int | None = None, warmup: int = 2,
             samples: int = 7, min_sample_s: float = 0.05) -> Timing:
    """Median/IQR of ``fn`` alone (prefer :func:`compare` when there is a baseline)."""
    with pinned_threads(threads), tf32_off():
        clock = _Clock(device)
        for _ in range(warmup):
            clock.time(fn, 1)
        reps = _reps_for(clock, fn, min_sample_s)
        return Timing.of([clock.time(fn, reps) for _ in range(samples)])


def compare(candidate: Fn, baseline: Fn, *, device: str = "cpu", threads: int | None = None,
            warmup: int = 2, pairs: int = 7, min_sample_s: float = 0.05,
            max_seconds: float | None = None) -> Comparison:
    """Interleaved timing of a candidate and a baseline in the same run.

    ``pairs`` interleaved samples of each (fewer when ``max_seconds`` would be exceeded, but at
    least three), each sample long enough for the timer not to matter.
    """
    with pinned_threads(threads), tf32_off():
        clock = _Clock(device)
        for _ in range(warmup):
            clock.time(candidate, 1)
            clock.time(baseline, 1)
        reps_c = _reps_for(clock, candidate, min_sample_s)
        reps_b = _reps_for(clock, baseline, min_sample_s)
        cand: list[float] = []
        base: list[float] = []
        started = time.perf_counter()
        for i in range(pairs):
            order = ((candidate, reps_c, cand), (baseline, reps_b, base))
            for fn, reps, out in (order if i % 2 == 0 else order[::-1]):
                out.append(clock.time(fn, reps))
            if max_seconds is not None and i >= 2 and time.perf_counter() - started > max_seconds:
                break
        return Comparison(Timing.of(cand), Timing.of(base))


def interleaved(fns: dict[str, Fn], *, device: str = "cpu", threads: int | None = None, warmup: int = 1,
                rounds: int = 5, min_sample_s: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each of several functions, timed round-robin in the same run: in each
    round every function gives one sample, in an order that rotates from round to round, so a
    change in the machine's load touches them all alike. Compare them by per-round ratios."""
    with pinned_threads(threads), tf32_off():
        clock = _Clock(device)
        for fn in fns.values():
            for _ in range(warmup):
                clock.time(fn, 1)
        reps = {name: _reps_for(clock, fn, min_sample_s) for name, fn in fns.items()}
        samples: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in (order if i % 2 == 0 else order[::-1]):
                samples[name].append(clock.time(fns[name], reps[name]))
        return samples


def pass_bandwidth(dtype: str, threads: int | None, side: int, *, samples: int = 5) -> float:
    """Bytes per second of one element-wise pass c = a + b over side×side blocks (read a, b, write
    c) on the CPU: the streaming bandwidth for large blocks, the cache's for small ones."""
    import torch

    a, b, c = (torch.rand(side, side, dtype=getattr(torch, dtype)) for _ in range(3))
    t = time_one(lambda: torch.add(a, b, out=c), threads=threads, warmup=2, samples=samples)
    return 3 * a.numel() * a.element_size() / t.median


def cpu_busy_fraction(interval_s: float = 0.5) -> float | None:
    """Fraction of all CPUs busy (any process) over ``interval_s`` while this process sleeps (Linux)."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                parts = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return sum(parts), idle

    first = sample()
    time.sleep(interval_s)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    return 1.0 - (second[1] - first[1]) / (second[0] - first[0])


def wait_for_quiet(max_wait_s: float = 300.0, busy_below: float = 0.15, interval_s: float = 1.0) -> float | None:
    """On a shared machine: wait (at most ``max_wait_s``) until other processes leave the CPUs
    mostly idle, so they do not slow one side of a comparison. Returns the last busy fraction."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu_busy_fraction(interval_s)
    while busy is not None and busy > busy_below and time.monotonic() < deadline:
        busy = cpu_busy_fraction(interval_s)
    return busy
