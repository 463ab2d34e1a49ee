"""Bilinear maps as exact 3-way tensors.

Convention (used everywhere in fmmforge): for C = A·B with A of shape n×m and B of shape
m×p, entry a = i*m + j of A (row-major), entry b = j*p + k of B and entry c = i*p + k of C
(row-major, *not* transposed): ``T[a, b, c] = 1`` when A[i,j]·B[j,k] contributes to C[i,k].
DeepMind's files index C transposed (k*n + i); their importer converts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fmmforge.core.errors import FmmforgeError

Format = tuple[int, int, int]


def matmul_tensor(n: int, m: int, p: int) -> np.ndarray:
    """The 0/1 tensor of shape (n*m, m*p, n*p) of the product of an n×m and an m×p matrix."""
    check_format((n, m, p))
    t = np.zeros((n * m, m * p, n * p), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            for k in range(p):
                t[i * m + j, j * p + k, i * p + k] = 1
    return t


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
    """The tensor a decomposition must reproduce: a matmul format or any integer 3-way tensor."""

    tensor: np.ndarray = field(repr=False, compare=False)
    format: Format | None = None
    digest: str = ""

    @staticmethod
    def matmul(n: int, m: int, p: int) -> "BilinearTarget":
        fmt = check_format((n, m, p))
        return _matmul_target(fmt)

    @staticmethod
    def general(tensor: np.ndarray) -> "BilinearTarget":
        arr = np.asarray(tensor)
        if arr.ndim != 3 or arr.dtype.kind not in "iub":
            raise FmmforgeError("a bilinear map must be a 3-way integer tensor")
        arr = np.ascontiguousarray(arr.astype(np.int64))
        arr.setflags(write=False)
        digest = hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]
        return BilinearTarget(arr, None, digest)

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.tensor.shape  # type: ignore[return-value]

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
        t = matmul_tensor(*fmt)
        t.setflags(write=False)
        target = BilinearTarget(t, fmt, "matmul{},{},{}".format(*fmt))
        if len(_MATMUL_CACHE) < 256:
            _MATMUL_CACHE[fmt] = target
    return target
