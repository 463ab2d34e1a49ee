"""The ``latency`` reward: the measured speed-up of an algorithm over the vendor matmul.

score = baseline median / kernel median (higher is better) for the context's device (default
cpu), size (required), dtype (default float32) and levels, with the torch backend. It goes
through the timing harness and the records cache: a plan/size/device/dtype already measured on
this machine (same fmmforge version) is read from the store, not measured again. The backend
is looked up with the resolver the registering plugin hands in (codegen names no plugin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.core.contracts import RewardResult
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError


@dataclass
class LatencyReward:
    resolve_backend: Callable[[str], CodegenBackend] = field(repr=False)  # backend name -> backend
    name: str = "latency"
    description: str = ("measured speed-up over the vendor matmul (torch kernel; --device cpu or cuda:N, "
                        "--size); measured once per plan/size/device, then read from the records")
    cheap: bool = False
    backend: str = "torch"
    pairs: int = 5
    min_sample_s: float = 0.05
    cutoff: int = 64

    def plan_for(self, d: Decomposition, context: Any):
        from fmmforge.codegen.plan import Plan, check_decomposition

        check_decomposition(d, "the scheme")
        device = context.device or "cpu"
        dtype = context.dtype or "float32"
        levels = int(getattr(context, "levels", 1) or 1)
        label = f"fp:{d.fingerprint[:12]}"
        return Plan((label,) * levels, (d.fingerprint,) * levels, self.backend, dtype, device, self.cutoff), [d] * levels

    def score(self, d: Decomposition, context: Any) -> RewardResult:
        from fmmforge.codegen.bench import cached_record, measure
        from fmmforge.hardware.devices import get_device

        if context.size is None:
            raise FmmforgeError("reward latency needs a matrix size; pass --size N (or M,K,N)")
        size = tuple(int(x) for x in context.size)
        get_device(context.device or "cpu")  # present? (a spec-only device is refused here)
        plan, decomps = self.plan_for(d, context)
        rec = cached_record(plan, size)
        cached = rec is not None
        if rec is None:
            rec = measure(plan, decomps, size, backend=self.resolve_backend(plan.backend), pairs=self.pairs,
                          min_sample_s=self.min_sample_s)
        parts = {
            "speedup": round(rec.speedup, 4),
            "kernel_ms": round(rec.median_s * 1e3, 3),
            "baseline_ms": round(rec.baseline_median_s * 1e3, 3),
            "minus_median_ms": round(-rec.median_s * 1e3, 3),
            "max_error": rec.max_error,
            "cached": cached,
            "device": rec.device,
        }
        return RewardResult(rec.speedup, parts)
