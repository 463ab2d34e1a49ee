"""Packed schemes for the compiled walk, and the conversions from/to :class:`Decomposition`.

A :class:`PackedScheme` is plain numpy data (picklable, cheap to copy): over Z2 an
(R, 3) uint64 array of bitmasks, over Z an (R, 3, L) int8 array of coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import BilinearTarget

MAX_Z2_ENTRIES = 64
MAX_Z_COEFFICIENT = 100  # int8 storage; the walk keeps far smaller bounds


@dataclass
class PackedScheme:
    field: str
    dims: tuple[int, int, int]
    data: np.ndarray  # Z2: uint64 (R, 3); Z: int8 (R, 3, L)

    @property
    def rank(self) -> int:
        return int(self.data.shape[0])

    def copy(self) -> "PackedScheme":
        return PackedScheme(self.field, self.dims, self.data.copy())

    def factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer factor matrices U, V, W (entries × rank)."""
        R = self.rank
        out = []
        for s, rows in enumerate(self.dims):
            if self.field == "Z2":
                bits = (self.data[:, s][None, :] >> np.arange(rows, dtype=np.uint64)[:, None]) & np.uint64(1)
                out.append(bits.astype(np.int64))
            else:
                out.append(self.data[:, s, :rows].T.astype(np.int64).reshape(rows, R))
        return out[0], out[1], out[2]

    def key(self) -> bytes:
        """Identity up to term order (and, over Z, the signs of a term's factors)."""
        if self.field == "Z2":
            rows = np.sort(self.data.view([("a", np.uint64), ("b", np.uint64), ("c", np.uint64)]), axis=0)
            return rows.tobytes()
        d = self.data.astype(np.int8).copy()
        # sign-normalise slots 0 and 1 (first nonzero positive), moving signs into slot 2
        for s in (0, 1):
            first = np.argmax(d[:, s, :] != 0, axis=1)
            signs = np.sign(d[np.arange(d.shape[0]), s, first]).astype(np.int8)
            signs[signs == 0] = 1
            d[:, s, :] *= signs[:, None]
            d[:, 2, :] *= signs[:, None]
        flat = d.reshape(d.shape[0], -1)
        order = np.lexsort(flat.T[::-1])
        return flat[order].tobytes()

    def to_decomposition(self, target: BilinearTarget) -> Decomposition:
        """Verified exactly; raises InvalidDecompositionError if the walk broke it (a bug)."""
        U, V, W = self.factors()
        return Decomposition.create(U, V, W, field=self.field, target=target)

    # ------------------------------------------------------------------ checkpoints
    def to_json(self) -> dict:
        U, V, W = self.factors()
        return {"field": self.field, "dims": list(self.dims), "U": U.tolist(), "V": V.tolist(), "W": W.tolist()}

    @staticmethod
    def from_json(doc: dict) -> "PackedScheme":
        dims = tuple(int(x) for x in doc["dims"])
        return pack_factors(
            [np.array(doc[k], dtype=np.int64).reshape(d, -1) for k, d in zip("UVW", dims)],
            doc["field"],
        )


def pack_factors(factors: list[np.ndarray] | tuple[np.ndarray, ...], field: str) -> PackedScheme:
    U, V, W = (np.asarray(f, dtype=np.int64) for f in factors)
    dims = (U.shape[0], V.shape[0], W.shape[0])
    R = U.shape[1]
    if field == "Z2":
        if max(dims) > MAX_Z2_ENTRIES:
            raise FmmforgeError(
                f"the flip engine packs Z2 factors into 64 bits; this tensor has {max(dims)} entries per factor"
            )
        data = np.zeros((R, 3), dtype=np.uint64)
        for s, F in enumerate((U, V, W)):
            bits = (np.mod(F, 2).astype(np.uint64) << np.arange(F.shape[0], dtype=np.uint64)[:, None])
            data[:, s] = np.bitwise_or.reduce(bits, axis=0) if F.shape[0] else 0
        keep = np.all(data != 0, axis=1)
        return PackedScheme(field, dims, data[keep])
    L = max(dims)
    if any(np.abs(F).max(initial=0) > MAX_Z_COEFFICIENT for F in (U, V, W)):
        raise FmmforgeError(f"the flip engine keeps coefficients within ±{MAX_Z_COEFFICIENT}; this scheme has larger ones")
    data = np.zeros((R, 3, L), dtype=np.int8)
    for s, F in enumerate((U, V, W)):
        data[:, s, : F.shape[0]] = F.T
    keep = np.all(np.any(data != 0, axis=2), axis=1)
    return PackedScheme(field, dims, data[keep])


def pack(d: Decomposition, field: str | None = None) -> PackedScheme:
    """Pack an integral decomposition for the walk (over ``field``, default its own)."""
    field = field or d.field
    if not d.is_integral():
        if field == "Z2" and all(den % 2 == 1 for den in d.denominators()):
            U, V, W = d.numerators()
            return pack_factors((U, V, W), "Z2")
        raise FmmforgeError(
            "the flip engine works with integer coefficients; this scheme has fractions "
            "(start from an integral scheme, e.g. naive:n,m,p)"
        )
    if d.field == "Z2" and field == "Z":
        raise FmmforgeError("a Z2 scheme is not a starting point over Z; walk over Z2, or start from a scheme over Z")
    return pack_factors(d.numerators(), field)
