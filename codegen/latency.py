"""The ``latency`` reward: the measured speed-up of an algorithm over the vendor matmul.

score = baseline median / kernel median (higher is better) for the context's device (default
cpu), size (required), dtype (default float32) and levels, with the torch backend, in the layout
a command gets by default (``--variant auto``: codegen.plan.resolve_variant, the fused layout for
torch on the CPU). It goes through the timing harness and the records cache: a
plan/size/device/dtype already measured on this machine (same fmmforge version) is read from the
store, not measured again, unless the reward is :meth:`~LatencyReward.remeasuring` (``fmmforge
score --remeasure``), which measures and records a new reading (the one read from then on).
Records name the scheme as the catalogue or store knows it (codegen.records.scheme_name). The
backend is looked up with the resolver the registering plugin hands in (codegen names no plugin).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
                        "--size; the default layout); measured once per plan/size/device, then read from the records "
                        "(score --remeasure measures again)")
    cheap: bool = False
    backend: str = "torch"
    pairs: int = 5
    min_sample_s: float = 0.05
    cutoff: int = 64
    remeasure: bool = False  # measure again even when the records hold a reading

    def remeasuring(self) -> "LatencyReward":
        """This reward, measuring again instead of reading the records."""
        return replace(self, remeasure=True)

    def plan_for(self, d: Decomposition, context: Any):
        from fmmforge.codegen.plan import AUTO_VARIANT, Plan, check_decomposition, resolve_variant
        from fmmforge.codegen.records import scheme_name

        check_decomposition(d, "the scheme")
        device = context.device or "cpu"
        dtype = context.dtype or "float32"
        levels = int(getattr(context, "levels", 1) or 1)
        variant = resolve_variant(AUTO_VARIANT, self.backend, device)
        return Plan((scheme_name(d),) * levels, (d.fingerprint,) * levels, self.backend, dtype, device, self.cutoff,
                    variant), [d] * levels

    def score(self, d: Decomposition, context: Any) -> RewardResult:
        from fmmforge.codegen.bench import cached_record, measure
        from fmmforge.hardware.devices import get_device

        if context.size is None:
            raise FmmforgeError("reward latency needs a matrix size; pass --size N (or M,K,N)")
        size = tuple(int(x) for x in context.size)
        get_device(context.device or "cpu")  # present? (a spec-only device is refused here)
        plan, decomps = self.plan_for(d, context)
        rec = None if self.remeasure else cached_record(plan, size)
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
            "layout": plan.variant,
            "algorithm": plan.algorithms[0],
            "device": rec.device,
        }
        return RewardResult(rec.speedup, parts)
