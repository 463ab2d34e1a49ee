"""The torch part of a kernel: workspace allocation, the vendor-gemm leaves and ``matmul``.

Expects beside it (in the kernel): ``DTYPE`` (a torch dtype) and ``_top(A, B, C)``, which computes
C = A·B by the kernel's layout.
"""

import torch


def _fits(t, shape, like):
    """Whether workspace ``t`` may be reused for ``shape`` like ``like`` (same dtype and device)."""
    return tuple(t.shape) == shape and t.dtype == like.dtype and t.device == like.device


def _allocate(shape, like):
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _leaf_set(A, B, C, alpha, level=None):
    """C = alpha·A·B (vendor gemm; ``level``: unused, the leaves end the recursion)."""
    if alpha == 1.0:
        torch.mm(A, B, out=C)
    else:
        torch.addmm(C, A, B, beta=0.0, alpha=alpha, out=C)


def _leaf_acc(A, B, C, alpha, level=None):
    """C += alpha·A·B (vendor gemm, accumulating in place)."""
    torch.addmm(C, A, B, alpha=alpha, out=C)


def matmul(A, B, out=None):
    """C = A·B for an M×K and a K×N tensor of dtype DTYPE (any sizes; one device)."""
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise TypeError("matmul expects two torch tensors")
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"cannot multiply shapes {tuple(A.shape)} and {tuple(B.shape)}")
    if A.dtype != DTYPE or B.dtype != DTYPE:  # noqa: F821 - the kernel's constant
        raise TypeError(f"this kernel was generated for {DTYPE}, got {A.dtype} and {B.dtype}")  # noqa: F821
    M, N = A.shape[0], B.shape[1]
    C = torch.empty((M, N), dtype=DTYPE, device=A.device) if out is None else out  # noqa: F821
    if C.numel() == 0:
        return C
    if A.shape[1] == 0:
        return C.zero_()
    _top(A, B, C)  # noqa: F821 - the kernel's layout
    return C
