"""An analytic time model of a fast matmul algorithm on a systolic-array accelerator (TPU).

What the model assumes, and why (docs/background.md §4, §6):

* **Leaf products.** ``L`` levels of a rank-R scheme for <n,m,p> are, to XLA, one level of
  its Kronecker power (rank R^L, format <n^L,m^L,p^L>): R^L leaf matmuls of
  ``ceil(M/n^L) x ceil(K/m^L) x ceil(N/p^L)`` (a matrix that does not divide is padded).
  Each leaf is padded to the MXU tile (128) in every dimension; its MXU time is padded
  FLOPs over the peak rate, with the MXUs idle when the leaf has fewer output tiles than
  the chip has MXUs.
* **Operand combinations are fused into the leaf matmuls.** XLA fuses an operand's linear
  combination ``Σ u_a·A_a`` into the dot that consumes it, so the combined operand is never
  written to memory; the dot reads each source block once. The price is vector-unit work
  inside the dot: the operand tile is re-formed on every pass of the MXU over it, which
  adds ``fused_operand_cost`` of the leaf's MXU time for every extra source block (and
  every coefficient other than ±1). Because it scales with the leaf's FLOPs, this is what
  keeps the measured speed-ups on TPU v2 nearly flat in N (AlphaTensor Fig. 5b). Charging
  each combination as its own memory pass instead predicts -6 % at 8192 rising to +13 % at
  20480 (published: 6.6 % and 8.4 %); fused operands at no cost overshoot by ~20 points.
* **Output combinations are one fused, memory-bound pass.** ``C_c = Σ_r W[c,r]·M_r`` for
  all c is a single XLA loop fusion: every product is read once and every output block
  written once (HBM bytes over bandwidth; the vector adds hide under the memory time).
* **Roofline.** The leaf matmuls take max(MXU + vector time, HBM time for their operands
  and products); nothing overlaps across XLA ops.
* **Baseline.** The standard matmul on the same chip: one padded dot, max(compute, memory).

``fused_operand_cost`` is the one number not taken from a data sheet. The shipped value
(0.045) is calibrated on AlphaTensor's Strassen-square measurement at N = 8192 only; the
other six published sizes are predictions (tests/test_rewards_tpu.py, docs/plugins.md).
The tpu-cost reward (plugins.builtin_rewards) and the tuner (codegen.tune, :class:`TpuCostModel`) use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.hardware.chips import DTYPE_BYTES, ChipSpec

Size = tuple[int, int, int]


@dataclass(frozen=True)
class DotTime:
    """Roofline of one (or a batch of equal) matmuls on the chip."""

    compute_s: float
    vector_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s + self.vector_s, self.memory_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_s + self.vector_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class TpuPrediction:
    """Predicted times (seconds) of the algorithm and of the standard matmul."""

    chip: str
    dtype: str
    size: Size
    levels: int
    leaf: Size
    leaf_padded: Size
    leaf_count: int
    leaves: DotTime
    output_pass_s: float
    padding_s: float
    baseline: DotTime

    @property
    def algorithm_s(self) -> float:
        return self.leaves.seconds + self.output_pass_s + self.padding_s

    @property
    def baseline_s(self) -> float:
        return self.baseline.seconds

    @property
    def speedup(self) -> float:
        """t_standard / t_algorithm - 1 (AlphaTensor's definition); 0.07 means 7 % faster."""
        return self.baseline_s / self.algorithm_s - 1.0


def _pad(x: int, tile: int) -> int:
    return -(-x // tile) * tile


def _mxu_utilisation(rows: int, cols: int, chip: ChipSpec) -> float:
    """Fraction of the MXUs busy when a dot's output tiles are spread over all of them."""
    tiles = (_pad(rows, chip.mxu_size) // chip.mxu_size) * (_pad(cols, chip.mxu_size) // chip.mxu_size)
    return tiles / (-(-tiles // chip.mxu_count) * chip.mxu_count)


def _dot(m: int, k: int, n: int, chip: ChipSpec, dtype: str) -> tuple[float, Size]:
    """MXU seconds of one m×k×n matmul padded to the MXU tile, and the padded shape."""
    t = chip.mxu_size
    mp, kp, np_ = _pad(m, t), _pad(k, t), _pad(n, t)
    flops = 2.0 * mp * kp * np_
    return flops / (chip.peak_flops(dtype) * _mxu_utilisation(mp, np_, chip)), (mp, kp, np_)


def standard_matmul(size: Size, chip: ChipSpec, dtype: str) -> DotTime:
    """The baseline: one dot, reading A and B and writing C once."""
    M, K, N = size
    compute, _ = _dot(M, K, N, chip, dtype)
    memory = (M * K + K * N + M * N) * DTYPE_BYTES[dtype] / chip.bandwidth
    return DotTime(compute, 0.0, memory)


@dataclass(frozen=True)
class FactorStats:
    """Per-level counts the model needs, for one factor matrix (combined over levels by :func:`_over_plan`)."""

    nnz: int
    unit: int  # entries equal to ±1


def _over_plan(stats: list[FactorStats]) -> tuple[int, int]:
    """(total source blocks, coefficients other than ±1) of the Kronecker product of the levels:
    column nnz of a Kronecker product multiply, so Σ_r nnz(col_r) is the product of the levels'
    nnz; an entry of the product is ±1 only when every factor entry is."""
    nnz, unit = math.prod(s.nnz for s in stats), math.prod(s.unit for s in stats)
    return nnz, nnz - unit


def _stats(num: np.ndarray, den: int) -> FactorStats:
    nz = num[num != 0]
    return FactorStats(int(nz.size), int(np.count_nonzero(np.abs(nz) == den)))


def predict(d: Decomposition, chip: ChipSpec, size: Size, dtype: str | None = None, levels: int = 1) -> TpuPrediction:
    """Predicted time of ``levels`` levels of ``d`` for an M×K×N product, and of the baseline."""
    if levels < 1:
        raise FmmforgeError(f"levels must be at least 1, not {levels}")
    return predict_plan([d] * levels, chip, size, dtype)


def predict_plan(decomps: list[Decomposition], chip: ChipSpec, size: Size, dtype: str | None = None) -> TpuPrediction:
    """Predicted time of the plan ``decomps`` (one scheme per level, levels may differ) for an M×K×N
    product, and of the baseline. The plan is, to XLA, one level of the Kronecker product of its
    schemes; its counts are products of the per-level ones, so the product is never built."""
    if not decomps:
        raise FmmforgeError("levels must be at least 1, not 0")
    formats: list[Size] = []
    for d in decomps:
        if d.format is None:
            raise FmmforgeError("the TPU cost model needs a matrix-multiplication scheme <n,m,p>")
        formats.append(d.format)
        if d.field != "Z":
            raise FmmforgeError(f"a {d.field} scheme is valid only modulo 2 and cannot multiply real matrices on {chip.name}")
    levels = len(decomps)
    dtype = dtype or chip.default_dtype
    if dtype not in DTYPE_BYTES:
        raise FmmforgeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    chip.peak_flops(dtype)  # a clear error before any arithmetic
    M, K, N = size
    n, m, p = (math.prod(f[i] for f in formats) for i in range(3))
    leaf = (math.ceil(M / n), math.ceil(K / m), math.ceil(N / p))
    if min(leaf) < 1:
        named = " then ".join(f"<{','.join(map(str, f))}>" for f in formats)
        raise FmmforgeError(f"size {M}x{K}x{N} is too small for {levels} level(s) of {named}")
    b = DTYPE_BYTES[dtype]
    products = math.prod(d.rank for d in decomps)
    stats_u = [_stats(d.numerators()[0], d.denominators()[0]) for d in decomps]
    stats_v = [_stats(d.numerators()[1], d.denominators()[1]) for d in decomps]
    src_u, scaled_u = _over_plan(stats_u)
    src_v, scaled_v = _over_plan(stats_v)

    leaf_mxu, leaf_padded = _dot(*leaf, chip, dtype)
    compute = products * leaf_mxu
    vector_ops = (src_u - products) + (src_v - products) + scaled_u + scaled_v
    vector = leaf_mxu * chip.fused_operand_cost * vector_ops
    lm, lk, ln = leaf
    leaf_bytes = (src_u * lm * lk + src_v * lk * ln + products * lm * ln) * b
    leaves = DotTime(compute, vector, leaf_bytes / chip.bandwidth)

    output_bytes = (products * lm * ln + M * N) * b
    padded = (n * lm, m * lk, p * ln)
    padding_bytes = 0
    if padded[0] != M or padded[1] != K:
        padding_bytes += (M * K + padded[0] * padded[1]) * b
    if padded[1] != K or padded[2] != N:
        padding_bytes += (K * N + padded[1] * padded[2]) * b
    return TpuPrediction(
        chip=chip.name, dtype=dtype, size=(M, K, N), levels=levels, leaf=leaf,
        leaf_padded=leaf_padded, leaf_count=products, leaves=leaves,
        output_pass_s=output_bytes / chip.bandwidth, padding_s=padding_bytes / chip.bandwidth,
        baseline=standard_matmul((M, K, N), chip, dtype),
    )


@dataclass(frozen=True)
class TpuCostModel:
    """The analytic model of one chip as a cost model of the tuner (codegen.tune.models.CostModel):
    it predicts, nothing is measured or fitted. A plan on the chip peels nothing and has one layout;
    its time is :func:`predict_plan`'s, the vendor's (no levels) the standard matmul's."""

    chip: ChipSpec
    dtype: str
    analytic: bool = True  # nothing runs on the chip: the tuner ranks and stops
    trusted: bool = True

    @property
    def name(self) -> str:
        return f"analytic TPU model of {self.chip.name}"

    def predict_s(self, decomps: Sequence[Decomposition], shape: Size, variant: str = "lowmem",
                  remainder: str = "peel") -> float:
        if not decomps:
            return standard_matmul(shape, self.chip, self.dtype).seconds
        return predict_plan(list(decomps), self.chip, shape, self.dtype).algorithm_s

    def estimate_s(self, decomps: Sequence[Decomposition], shape: Size, variant: str = "lowmem") -> float:
        return self.predict_s(decomps, shape, variant)

    def with_tables(self, store: object) -> "TpuCostModel":
        return self  # nothing measured: nothing to add
