"""The built-in rewards: rank, additions, stability and the TPU cost model.

Each needs only the decomposition (and the context), no kernel measurements, so all are
cheap. The rewards of a scheme's kernels (``latency``, ``latency-model``) are registered by
fmmforge.plugins.builtin_kernel_rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins.hookspecs import hookimpl
from fmmforge.core.contracts import RewardContext, RewardResult


@dataclass(frozen=True)
class RankReward:
    name: str = "rank"
    description: str = "minus the rank (number of multiplications)"
    cheap: bool = True

    def score(self, d: Decomposition, context: RewardContext) -> RewardResult:
        return RewardResult(-float(d.rank), {"rank": d.rank, "naive rank": _naive_rank(d)})


@dataclass(frozen=True)
class AdditionsReward:
    name: str = "additions"
    description: str = "minus the additions after common-subexpression elimination (greedy pairs with restarts; and the naive count)"
    cheap: bool = True

    def score(self, d: Decomposition, context: RewardContext) -> RewardResult:
        from fmmforge.core.additions import eliminate

        adds = eliminate(d)
        parts: dict[str, object] = {"additions (CSE)": adds.eliminated, "additions (naive)": adds.naive}
        for side, label in zip(adds.sides, ("A side (U)", "B side (V)", "outputs (W)")):
            parts[f"{label} naive/CSE"] = f"{side.naive}/{side.eliminated}"
        parts["temporaries"] = sum(len(s.temporaries) for s in adds.sides)
        return RewardResult(-float(adds.eliminated), parts)


@dataclass(frozen=True)
class StabilityReward:
    name: str = "stability"
    description: str = "minus levels·ln(e), e the stability factor (error bound grows like e^levels)"
    cheap: bool = True

    def score(self, d: Decomposition, context: RewardContext) -> RewardResult:
        e = d.stability_factor
        if e is None:
            raise FmmforgeError(
                f"the stability reward needs a scheme valid over Z; {d.target.describe()} rank {d.rank} is a {d.field} scheme"
            )
        log_e = math.log(e.numerator) - math.log(e.denominator)
        levels = context.levels
        return RewardResult(-levels * log_e, {"e": f"{float(e):g}", "levels": levels,
                                              f"e^{levels}": f"{float(e) ** levels:g}", "ln e": round(log_e, 4)})


@dataclass(frozen=True)
class TpuCostReward:
    name: str = "tpu-cost"
    description: str = "minus the predicted time (ms) on a TPU-style chip (--device tpu-v4, ...), with the speed-up"
    cheap: bool = True

    def score(self, d: Decomposition, context: RewardContext) -> RewardResult:
        from fmmforge.hardware.chips import available_specs, load_chip
        from fmmforge.hardware.tpu_model import predict

        device = context.require_device(self.name, "tpu-v4 (one of: " + ", ".join(available_specs()) + ")")
        size = context.require_size(self.name)
        chip = load_chip(device)
        pred = predict(d, chip, size, context.dtype, context.levels)
        ms = pred.algorithm_s * 1e3
        parts: dict[str, object] = {
            "predicted ms": round(ms, 4),
            "standard matmul ms": round(pred.baseline_s * 1e3, 4),
            "speed-up %": round(pred.speedup * 100, 2),
            "leaf matmuls": f"{pred.leaf_count} x {'x'.join(map(str, pred.leaf))}"
                            + ("" if pred.leaf == pred.leaf_padded else f" (padded {'x'.join(map(str, pred.leaf_padded))})"),
            "leaf ms (MXU + vector)": f"{pred.leaves.compute_s * 1e3:.4g} + {pred.leaves.vector_s * 1e3:.4g}"
                                      + (" (memory-bound)" if pred.leaves.bound == "memory" else ""),
            "output pass ms": round(pred.output_pass_s * 1e3, 4),
            "chip": f"{chip.name}, {pred.dtype}",
        }
        if pred.padding_s:
            parts["padding ms"] = round(pred.padding_s * 1e3, 4)
        return RewardResult(-ms, parts)


def _naive_rank(d: Decomposition) -> int | str:
    if d.format is None:
        return "-"
    n, m, p = d.format
    return n * m * p


BUILTIN_REWARDS = (RankReward(), AdditionsReward(), StabilityReward(), TpuCostReward())


@hookimpl
def register_rewards(register) -> None:  # type: ignore[no-untyped-def]
    for reward in BUILTIN_REWARDS:
        register(reward)
