"""Bilinear maps as exact 3-way tensors.

Convention (used everywhere in fmmforge): for C = A·B with A of shape n×m and B of shape
m×p, entry a = i*m + j of A (row-major), entry b = j*p + k of B and entry c = i*p + k of C
(row-major, *not* transposed): ``T[a, b, c] = 1`` when A[i,j]·B[j,k] contributes to C[i,k].
DeepMind's files index C transposed (k*n + i); their importer converts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import absmax, check_entries, check_int_range

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


# One grammar for every size written on a command line: sides separated by ",", "x" or "×",
# optionally inside <...>, spaces ignored ("2,3,4", "2x3x4", "<2,3,4>"). Not "*": that joins two
# schemes into their Kronecker product (strassen*laderman), and "3*3*3" is refused, not guessed at.
_SIDE_SEPARATOR = re.compile(r"[,x×]")


def _sides(text: str, what: str) -> list[int] | None:
    """The integers of ``text`` in that grammar; None when a part is not an integer."""
    if "*" in text:
        raise FmmforgeError(f"{what} {text!r}: '*' is the Kronecker product of two schemes (strassen*laderman), "
                            f"not a separator of sides; write it like {text.strip().replace('*', 'x')}")
    cleaned = text.strip().strip("<>").replace(" ", "").lower()
    try:
        return [int(part) for part in _SIDE_SEPARATOR.split(cleaned)]
    except ValueError:
        return None


def parse_format(text: str) -> Format:
    """Parse a matrix format ``2,3,4``, ``2x3x4`` or ``<2,3,4>`` into (n, m, p)."""
    values = _sides(text, "matrix format")
    if values is None or len(values) != 3 or min(values) < 1:
        raise FmmforgeError(
            f"matrix format {text!r} is not three positive integers; write it like 2,3,4"
        )
    return values[0], values[1], values[2]


def parse_shape(text: str, what: str = "size", max_side: int | None = None) -> tuple[int, int, int]:
    """Parse a product size M×K×N (``8192,4096,2048``, ``8192x4096x2048``, ``<8,4,2>``); a single
    number N means square, (N, N, N). Every side is in [1, max_side]; ``what`` names the option
    in the error."""
    values = _sides(text, what)
    if values is not None and len(values) == 1:
        values = values * 3
    if values is None or len(values) != 3:
        raise FmmforgeError(
            f"{what} {text!r} is not N or M,K,N with positive integers; write it like 8192 or 8192x4096x8192"
        )
    for v in values:
        if v < 1 or (max_side is not None and v > max_side):
            allowed = "at least 1" if max_side is None else f"between 1 and {_power_text(max_side)}"
            raise FmmforgeError(f"{what} {text!r}: every side must be {allowed}, not {v:,}")
    return values[0], values[1], values[2]


def _power_text(n: int) -> str:
    """``2^31 (2,147,483,648)`` for a power of two, else ``n`` with thousands separators."""
    return f"2^{n.bit_length() - 1} ({n:,})" if n > 1 and n & (n - 1) == 0 else f"{n:,}"


def parse_shapes(text: str, what: str = "size", max_side: int | None = None) -> list[tuple[int, int, int]]:
    """Comma-separated sizes, each N (square) or MxKxN: ``2048,8192x4096x8192``."""
    shapes = [parse_shape(item, what, max_side) for item in text.split(",") if item.strip()]
    if not shapes:
        raise FmmforgeError(f"no {what}s given; write them like 2048,4096 or 8192x4096x8192")
    return shapes


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
        return absmax(self.dense)

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


@lru_cache(maxsize=256)
def _matmul_target(fmt: Format) -> BilinearTarget:
    n, m, p = fmt
    return BilinearTarget((n * m, m * p, n * p), fmt, "matmul{},{},{}".format(*fmt))
