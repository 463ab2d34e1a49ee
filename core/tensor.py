"""Bilinear maps as exact 3-way tensors.

Convention (used everywhere in fmmforge): for C = A·B with A of shape n×m and B of shape
m×p, entry a = i*m + j of A (row-major), entry b = j*p + k of B and entry c = i*p + k of C
(row-major, *not* transposed): ``T[a, b, c] = 1`` when A[i,j]·B[j,k] contributes to C[i,k].
DeepMind's files index C transposed (k*n + i); their importer converts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import check_entries, check_int_range

Format = tuple[int, int, int]


def matmul_tensor(n: int, m: int, p: int) -> np.ndarray:
    """The 0/1 tensor of shape (n*m, m*p, n*p) of the product of an n×m and an m×p matrix.

    Dense: n²m²p² entries (refused above FMMFORGE_MAX_ENTRIES). The verifier never needs it;
    :func:`matmul_block` gives any slab of it.
    """
    fmt = check_format((n, m, p))
    check_entries(n * m * m * p * n * p, f"the dense tensor of <{n},{m},{p}>")
    return matmul_block(fmt, 0, n * m, 0, m * p)


def matmul_block(fmt: Format, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
    """``T[a0:a1, b0:b1, :]`` of the matmul tensor, built from its structure:
    ``T[(i,j),(j',k),(i',k')] = [i=i'][j=j'][k=k']``."""
    n, m, p = fmt
    a = np.arange(a0, a1)
    b = np.arange(b0, b1)
    i, j = np.divmod(a, m)
    j2, k = np.divmod(b, p)
    out = np.zeros((a1 - a0, b1 - b0, n * p), dtype=np.int64)
    ai, bi = np.nonzero(j[:, None] == j2[None, :])
    out[ai, bi, i[ai] * p + k[bi]] = 1
    return out


def check_format(fmt: tuple[int, ...]) -> Format:
    if len(fmt) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 for x in fmt):
        raise FmmforgeError(
            f"matrix format {fmt!r} is not three positive integers n,m,p; write it like 2,3,4"
        )
    return (int(fmt[0]), int(fmt[1]), int(fmt[2]))


def parse_format(text: str) -> Format:
    """Parse ``2,3,4``, ``2x3x4`` or ``<2,3,4>`` into (n, m, p)."""
    cleaned = text.strip().strip("<>").replace("x", ",").replace("X", ",").replace(" ", "")
    parts = cleaned.split(",")
    try:
        values = tuple(int(x) for x in parts)
    except ValueError:
        raise FmmforgeError(
            f"matrix format {text!r} is not three positive integers; write it like 2,3,4"
        ) from None
    if len(values) != 3 or min(values) < 1:
        raise FmmforgeError(
            f"matrix format {text!r} is not three positive integers; write it like 2,3,4"
        )
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class BilinearTarget:
    """The tensor a decomposition must reproduce: a matmul format or any integer 3-way tensor.

    A matmul target stores only its format: its dense tensor (``tensor``) is built on first
    use, and the verifier reads slabs of it through :meth:`block` instead.
    """

    dims: tuple[int, int, int]
    format: Format | None = None
    digest: str = ""
    dense: np.ndarray | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def matmul(n: int, m: int, p: int) -> "BilinearTarget":
        fmt = check_format((n, m, p))
        return _matmul_target(fmt)

    @staticmethod
    def general(tensor: np.ndarray) -> "BilinearTarget":
        arr = np.asarray(tensor)
        if arr.ndim != 3 or arr.dtype.kind not in "iub":
            raise FmmforgeError("a bilinear map must be a 3-way integer tensor")
        check_entries(arr.size, "the target tensor")
        check_int_range(arr)
        arr = np.ascontiguousarray(arr.astype(np.int64))
        arr.setflags(write=False)
        digest = hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]
        return BilinearTarget(tuple(int(x) for x in arr.shape), None, digest, arr)  # type: ignore[arg-type]

    @cached_property
    def tensor(self) -> np.ndarray:
        """The dense tensor (built on first use for matmul targets; read-only)."""
        if self.dense is not None:
            return self.dense
        assert self.format is not None
        t = matmul_tensor(*self.format)
        t.setflags(write=False)
        return t

    def block(self, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """``tensor[a0:a1, b0:b1, :]`` without building the whole tensor of a matmul target."""
        if self.dense is not None:
            return self.dense[a0:a1, b0:b1]
        assert self.format is not None
        return matmul_block(self.format, a0, a1, b0, b1)

    def max_abs_entry(self) -> int:
        if self.dense is None:
            return 1
        return max(int(self.dense.max(initial=0)), -int(self.dense.min(initial=0)))

    def describe(self) -> str:
        if self.format:
            return "<{},{},{}>".format(*self.format)
        return "tensor{}#{}".format(self.dims, self.digest)

    def entry_name(self, a: int, b: int, c: int) -> str:
        """Human name of a tensor entry, e.g. ``(A12, B21, C11)`` for matmul targets."""
        if not self.format:
            return f"({a}, {b}, {c})"
        n, m, p = self.format
        return "({}, {}, {})".format(
            matrix_entry_name("A", a, m), matrix_entry_name("B", b, p), matrix_entry_name("C", c, p)
        )


def matrix_entry_name(letter: str, index: int, cols: int) -> str:
    """``A12`` for row 1, column 2 (1-based); ``A[10,2]`` once an index has two digits."""
    i, j = divmod(index, cols)
    if i < 9 and j < 9:
        return f"{letter}{i + 1}{j + 1}"
    return f"{letter}[{i + 1},{j + 1}]"


_MATMUL_CACHE: dict[Format, BilinearTarget] = {}


def _matmul_target(fmt: Format) -> BilinearTarget:
    target = _MATMUL_CACHE.get(fmt)
    if target is None:
        n, m, p = fmt
        target = BilinearTarget((n * m, m * p, n * p), fmt, "matmul{},{},{}".format(*fmt))
        if len(_MATMUL_CACHE) < 256:
            _MATMUL_CACHE[fmt] = target
    return target
