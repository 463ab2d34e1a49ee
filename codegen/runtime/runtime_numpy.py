"""The numpy part of a kernel: workspace allocation, the BLAS-gemm leaves and ``matmul``.

Expects beside it (in the kernel): ``DTYPE`` (a numpy dtype) and ``_top(A, B, C)``.
"""

import numpy as np


def _fits(t, shape, like):
    """Whether workspace ``t`` may be reused for ``shape`` like ``like`` (same dtype)."""
    return t.shape == shape and t.dtype == like.dtype


def _allocate(shape, like):
    return np.empty(shape, dtype=like.dtype)


def _leaf_set(A, B, C, alpha, level=None):
    """C = alpha·A·B (BLAS gemm; ``level``: unused, the leaves end the recursion)."""
    np.matmul(A, B, out=C)
    if alpha != 1.0:
        C *= alpha


def _leaf_acc(A, B, C, alpha, level=None):
    """C += alpha·A·B (BLAS gemm)."""
    if alpha == 1.0:
        C += A @ B
    else:
        C += alpha * (A @ B)


def matmul(A, B, out=None):
    """C = A·B for an M×K and a K×N array of dtype DTYPE (any sizes)."""
    A = np.asarray(A)
    B = np.asarray(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"cannot multiply shapes {A.shape} and {B.shape}")
    if A.dtype != DTYPE or B.dtype != DTYPE:  # noqa: F821 - the kernel's constant
        raise TypeError(f"this kernel was generated for {DTYPE}, got {A.dtype} and {B.dtype}")  # noqa: F821
    M, N = A.shape[0], B.shape[1]
    C = np.empty((M, N), dtype=DTYPE) if out is None else out  # noqa: F821
    if C.size == 0:
        return C
    if A.shape[1] == 0:
        C.fill(0)
        return C
    _top(A, B, C)  # noqa: F821 - the kernel's layout
    return C
