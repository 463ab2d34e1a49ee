"""Every generated kernel is checked against a float64 reference before it is timed or cached.

Error bound (docs/background.md §5; Ballard et al., SIMAX 2016): for L levels of schemes with
stability factors e_1..e_L, the max-norm error of a fast product is bounded by roughly

    |C - C_ref|_max <= c · (K_leaf + L) · e_1···e_L · |A|_max · |B|_max · eps

where K_leaf = K / (m_1···m_L) is the inner dimension of the leaf gemms (a classical dot
product of length k has error <= k·eps·|a||b|), each level multiplies the error by at most its
stability factor e (the weighted ℓ1 norms of the three factors), and eps is the unit round-off
of the dtype. The naive scheme has e = m, so for it the bound is the classical c·K·eps bound.
Peeling fix-ups are plain gemms (error ~K·eps), below the bound. We take c = 8: the bound is a
worst case, measured errors on uniform[-1, 1] inputs are one or two orders of magnitude lower,
and a wrong coefficient or a missing term gives errors of order 1, far above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import prod

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

SAFETY = 8.0
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def error_bound(K: int, decomps: list[Decomposition], dtype: str, a_max: float = 1.0, b_max: float = 1.0) -> float:
    L = len(decomps)
    e = prod(max(1.0, float(d.stability_factor or 1)) for d in decomps) if decomps else 1.0
    k_leaf = max(1.0, K / prod(d.format[1] for d in decomps)) if decomps else float(max(K, 1))
    return SAFETY * (k_leaf + L + 1) * e * a_max * b_max * EPS[dtype]


@dataclass(frozen=True)
class CheckResult:
    shape: tuple[int, int, int]
    max_error: float
    bound: float

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_error) and self.max_error <= self.bound


class KernelValidationError(FmmforgeError):
    """A generated kernel disagreed with the reference: it is reported and never benchmarked."""


def random_inputs(M: int, K: int, N: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (M, K)), rng.uniform(-1, 1, (K, N))


def check_product(matmul, to_native, to_numpy, A64: np.ndarray, B64: np.ndarray, decomps: list[Decomposition],
                  dtype: str) -> CheckResult:
    """Run ``matmul`` on A64, B64 (converted to the kernel's dtype) and compare with float64."""
    A = to_native(A64)
    B = to_native(B64)
    # the reference uses the *rounded* inputs, so only the kernel's arithmetic is measured
    Ar = to_numpy(A).astype(np.float64)
    Br = to_numpy(B).astype(np.float64)
    ref = Ar @ Br
    got = to_numpy(matmul(A, B)).astype(np.float64)
    if got.shape != ref.shape:
        return CheckResult(A64.shape + (B64.shape[1],), float("inf"), 0.0)
    err = float(np.max(np.abs(got - ref))) if got.size else 0.0
    a_max = float(np.max(np.abs(Ar))) if Ar.size else 0.0
    b_max = float(np.max(np.abs(Br))) if Br.size else 0.0
    bound = error_bound(A64.shape[1], decomps, dtype, a_max, b_max)
    return CheckResult((A64.shape[0], A64.shape[1], B64.shape[1]), err, bound)


def validation_shapes(decomps: list[Decomposition], cutoff: int) -> list[tuple[int, int, int]]:
    """Shapes that go through every level (divisible), that peel (remainders of 1 and of one less than
    the multiple the levels need), and degenerate ones."""
    pm = prod(d.format[0] for d in decomps) if decomps else 1
    pk = prod(d.format[1] for d in decomps) if decomps else 1
    pn = prod(d.format[2] for d in decomps) if decomps else 1
    c = cutoff
    return [
        (pm * c, pk * c, pn * c),
        (pm * c + 1, pk * c + 3, pn * c + 2),
        (pm * c * 2 - 1, pk * c + 1, pn * c * 2 - 1),
        (1, 1, 1), (1, 7, 3), (5, 1, 4), (3, 6, 1),
    ]
