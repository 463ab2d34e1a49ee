"""Immutable, exactly verified decompositions of bilinear maps (mostly matmul tensors).

A rank-R decomposition of T is a triple of factor matrices U (a×R), V (b×R), W (c×R) with
``T[a,b,c] == sum_r U[a,r]·V[b,r]·W[c,r]`` exactly (over Z, i.e. the rationals) or modulo 2
(field "Z2"). Column r of the factors is the r-th product:
``M_r = (Σ_a U[a,r]·A_a)·(Σ_b V[b,r]·B_b)`` and ``C_c = Σ_r W[c,r]·M_r``.
Entries are stored as integer numerators with one denominator per factor (see exact.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any, Iterator

import numpy as np

from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.core.exact import absmax, env_limit, exact_matrix, format_fraction, fraction_array
from fmmforge.core.tensor import BilinearTarget, Format

FIELDS = ("Z", "Z2")
_FLOAT_EXACT_LIMIT = 2**53
_INT64_LIMIT = 2**62
_CHUNK_ELEMENTS = 1 << 22
MAX_WORK_VAR = "FMMFORGE_MAX_WORK"
DEFAULT_MAX_WORK = 20_000_000_000
# integer matmuls run without BLAS and Python integers far slower: their work counts more
_WORK_WEIGHT: dict[Any, int] = {np.float64: 1, np.int64: 8, object: 200}


def check_field(field: str) -> str:
    if field not in FIELDS:
        raise FmmforgeError(f"unknown field {field!r}; use Z (integers/rationals) or Z2 (mod 2)")
    return field


@dataclass(frozen=True)
class Verification:
    """Outcome of an exact check. ``first_failure`` names the first wrong tensor entry."""

    valid: bool
    first_failure: str | None = None
    entry: tuple[int, int, int] | None = None

    def __bool__(self) -> bool:
        return self.valid


class Decomposition:
    """A rank-R decomposition of a matmul tensor <n,m,p> (or any 3-way integer tensor).

    Construct with :meth:`Decomposition.create` (verifies and raises
    :class:`InvalidDecompositionError` on failure) or :meth:`Decomposition.unchecked`
    (for the ``verify`` command, which reports rather than raises). Instances are
    immutable: the factor arrays are read-only.
    """


    def __init__(
        self,
        factors: tuple[tuple[np.ndarray, int], tuple[np.ndarray, int], tuple[np.ndarray, int]],
        target: BilinearTarget,
        field: str,
    ) -> None:
        self._u, self._v, self._w = factors
        self.target = target
        self.field = check_field(field)
        a, b, c = target.dims
        rank = self._u[0].shape[1]
        for name, (num, _den), rows in (("U", self._u, a), ("V", self._v, b), ("W", self._w, c)):
            if num.shape != (rows, rank):
                raise FmmforgeError(
                    f"factor {name} has shape {num.shape}, expected ({rows}, {rank}) "
                    f"for {target.describe()} with rank {rank}"
                )

    # ----------------------------------------------------------------- construction
    @classmethod
    def unchecked(
        cls,
        U: Any,
        V: Any,
        W: Any,
        format: tuple[int, int, int] | None = None,
        *,
        field: str = "Z",
        target: BilinearTarget | None = None,
    ) -> "Decomposition":
        """Build without verifying (call :meth:`verify` before trusting it)."""
        check_field(field)
        if target is None:
            if format is None:
                raise FmmforgeError("give the matrix format n,m,p or a target tensor")
            target = BilinearTarget.matmul(*format)
        factors = tuple(exact_matrix(x) for x in (U, V, W))
        if field == "Z2":
            factors = tuple(_mod2(num, den) for num, den in factors)
        ranks = {f[0].shape[1] for f in factors}
        if len(ranks) != 1:
            raise FmmforgeError(
                "factors U, V, W have different numbers of columns (products): "
                + ", ".join(str(f[0].shape[1]) for f in factors)
            )
        return cls(factors, target, field)  # type: ignore[arg-type]

    @classmethod
    def create(cls, U: Any, V: Any, W: Any, format: tuple[int, int, int] | None = None,
               *, field: str = "Z", target: BilinearTarget | None = None) -> "Decomposition":
        """Build and verify exactly; raises InvalidDecompositionError if it is wrong."""
        return cls.unchecked(U, V, W, format, field=field, target=target).require_valid()

    def require_valid(self) -> "Decomposition":
        result = self.verify()
        if not result.valid:
            raise InvalidDecompositionError(
                f"decomposition of {self.target.describe()} over {self.field} is wrong: "
                f"{result.first_failure}"
            )
        return self

    # ----------------------------------------------------------------- basic data
    @property
    def format(self) -> Format | None:
        return self.target.format

    @property
    def rank(self) -> int:
        return int(self._u[0].shape[1])

    @property
    def is_matmul(self) -> bool:
        return self.target.format is not None

    def numerators(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read-only integer numerator arrays of U, V, W."""
        return self._u[0], self._v[0], self._w[0]

    def denominators(self) -> tuple[int, int, int]:
        return self._u[1], self._v[1], self._w[1]

    @cached_property
    def U(self) -> np.ndarray:
        return fraction_array(*self._u)

    @cached_property
    def V(self) -> np.ndarray:
        return fraction_array(*self._v)

    @cached_property
    def W(self) -> np.ndarray:
        return fraction_array(*self._w)

    def factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """U, V, W as object arrays of Fractions (shape (entries, rank) each)."""
        return self.U, self.V, self.W

    def is_integral(self) -> bool:
        return self._u[1] == self._v[1] == self._w[1] == 1

    # ----------------------------------------------------------------- properties
    @cached_property
    def nnz(self) -> tuple[int, int, int]:
        """Nonzero entries of U, V and W."""
        return tuple(int(np.count_nonzero(num)) for num, _ in (self._u, self._v, self._w))  # type: ignore[return-value]

    @cached_property
    def naive_additions(self) -> int:
        """Additions without reuse: Σ_r (nnz(u_r)-1) + Σ_r (nnz(v_r)-1) + Σ_c (nnz(W[c,:])-1)."""
        total = 0
        for num, axis in ((self._u[0], 0), (self._v[0], 0), (self._w[0], 1)):
            counts = np.count_nonzero(num, axis=axis)
            total += int(np.sum(np.maximum(counts - 1, 0)))
        return total

    @cached_property
    def stability_factor(self) -> Fraction | None:
        """e = max_c Σ_r |W[c,r]|·‖u_r‖₁·‖v_r‖₁ (Ballard et al. 2016); None over Z2."""
        if self.field != "Z":
            return None
        # all three factors share one denominator each, so the whole sum is one integer over du·dv·dw
        # Python integers throughout: sums of entries near 2^62 overflow int64
        U, V, W = (np.abs(num.astype(object)) for num in (self._u[0], self._v[0], self._w[0]))
        weights = U.sum(axis=0) * V.sum(axis=0)
        rows = W @ weights
        return Fraction(int(max(rows, default=0)), self._u[1] * self._v[1] * self._w[1])

    def summary(self) -> dict[str, Any]:
        e = self.stability_factor
        return {
            "format": self.target.describe(),
            "rank": self.rank,
            "field": self.field,
            "nnz": self.nnz,
            "additions": self.naive_additions,
            "stability": None if e is None else float(e),
            "fingerprint": self.fingerprint,
        }

    # ----------------------------------------------------------------- verification
    def verify(self) -> Verification:
        """Exact check of Σ_r u_r⊗v_r⊗w_r == T (integers, or mod 2). Cached: instances are immutable."""
        cached = self.__dict__.get("_verification")
        if cached is None:
            cached = _verify(self)
            self.__dict__["_verification"] = cached
        return cached

    # ----------------------------------------------------------------- identity
    @cached_property
    def fingerprint(self) -> str:
        """Hash invariant under term order and the scalings (a, b, 1/(ab)) of a term.

        Each term is normalised: u and v to primitive integer vectors with a positive first
        nonzero entry, the scalars moved into w; the terms are then sorted.
        """
        terms = sorted(self._canonical_terms())
        h = hashlib.sha256()
        h.update(f"{self.field}|{self.target.describe()}|{self.target.digest}|".encode())
        for term in terms:
            h.update(repr(term).encode())
            h.update(b";")
        return h.hexdigest()[:24]

    def _canonical_terms(self) -> Iterator[tuple]:
        U, V, W = self.numerators()
        du, dv, dw = self.denominators()
        mod2 = self.field == "Z2"
        for r in range(self.rank):
            u, v, w = U[:, r], V[:, r], W[:, r]
            if mod2:
                yield (tuple(u.tolist()), tuple(v.tolist()), tuple(w.tolist()))
                continue
            pu, cu = _primitive(u)
            pv, cv = _primitive(v)
            scale = Fraction(cu * cv, du * dv * dw)
            wn = [x * scale.numerator for x in w.tolist()]  # Python ints: entries reach 2^62
            g = math.gcd(math.gcd(*wn), scale.denominator) or 1
            yield (pu, pv, tuple(x // g for x in wn), scale.denominator // g)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decomposition):
            return NotImplemented
        return (
            self.field == other.field
            and self.target.describe() == other.target.describe()
            and self.target.digest == other.target.digest
            and all(
                a[1] == b[1] and np.array_equal(a[0], b[0])
                for a, b in zip((self._u, self._v, self._w), (other._u, other._v, other._w))
            )
        )

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.field))

    def __repr__(self) -> str:
        return f"Decomposition({self.target.describe()}, rank={self.rank}, field={self.field})"


def _mod2(num: np.ndarray, den: int) -> tuple[np.ndarray, int]:
    if den % 2 == 0:
        raise FmmforgeError("a Z2 scheme cannot have even denominators; entries must be 0 or 1")
    # an odd denominator is invertible mod 2, so num/den ≡ num (mod 2)
    out = np.ascontiguousarray(np.mod(num, 2), dtype=np.int64)
    out.setflags(write=False)
    return out, 1


def _primitive(vec: np.ndarray) -> tuple[tuple[int, ...], int]:
    """(primitive integer vector with positive first nonzero, the integer it was divided by)."""
    nz = np.flatnonzero(vec)
    if nz.size == 0:
        return tuple(vec.tolist()), 0
    g = int(np.gcd.reduce(vec))
    if vec[nz[0]] < 0:
        g = -g
    return tuple((vec // g).tolist()), g


def max_work() -> int:
    """The most multiply-adds one exact check may cost (FMMFORGE_MAX_WORK), integer paths weighted."""
    return env_limit(MAX_WORK_VAR, DEFAULT_MAX_WORK)


def _exact_dtype(d: Decomposition, U: np.ndarray, V: np.ndarray, W: np.ndarray, scale: int) -> Any:
    """float64 where every product and partial sum is an integer below 2^53 (then BLAS is exact),
    int64 below 2^62, Python integers beyond. Bounds are Python integers: nothing overflows."""
    bound = d.rank * absmax(U) * absmax(V) * absmax(W)
    top = max(bound, scale * d.target.max_abs_entry())
    if top < _FLOAT_EXACT_LIMIT:
        return np.float64
    if top < _INT64_LIMIT:
        return np.int64
    return object


def _check_cost(d: Decomposition, dtype: Any) -> Verification | None:
    """Refuse a check above the work limit, unless the rank alone already proves it wrong."""
    a_dim, b_dim, c_dim = d.target.dims
    work = a_dim * b_dim * c_dim * max(1, d.rank) * _WORK_WEIGHT[dtype]
    limit = max_work()
    if work <= limit:
        return None
    need = max(a_dim, b_dim, c_dim)
    if d.is_matmul and d.rank < need:
        # each flattening of a matmul tensor has full rank (over any field), and a rank-R
        # decomposition gives flattenings of rank <= R
        return Verification(
            False,
            f"rank {d.rank} is below {need}, the least rank of any decomposition of "
            f"{d.target.describe()} (its flattenings have rank {need}), so some entry is wrong",
        )
    raise FmmforgeError(
        f"checking {d.target.describe()} rank {d.rank} exactly costs about {work:,} multiply-adds, "
        f"more than the limit of {limit:,}; set {MAX_WORK_VAR} to raise it"
    )


def _verify(d: Decomposition) -> Verification:
    """Chunk-wise exact check against slabs of the target (never its whole dense tensor)."""
    U, V, W = d.numerators()
    du, dv, dw = d.denominators()
    a_dim, b_dim, c_dim = d.target.dims
    rank = d.rank
    mod2 = d.field == "Z2"
    scale = 1 if mod2 else du * dv * dw
    if mod2:
        U, V, W = (np.mod(x, 2) for x in (U, V, W))
    dtype = _exact_dtype(d, U, V, W, scale)
    refused = _check_cost(d, dtype)
    if refused is not None:
        return refused
    Uc, Vc, Wt = U.astype(dtype), V.astype(dtype), W.T.astype(dtype)
    per_pair = max(rank, c_dim, 1)
    if b_dim * per_pair <= _CHUNK_ELEMENTS:
        a_step, b_step = max(1, _CHUNK_ELEMENTS // (b_dim * per_pair)), b_dim
    else:
        a_step, b_step = 1, max(1, _CHUNK_ELEMENTS // per_pair)
    for a0 in range(0, a_dim, a_step):
        a1 = min(a_dim, a0 + a_step)
        for b0 in range(0, b_dim, b_step):
            b1 = min(b_dim, b0 + b_step)
            failure = _check_block(d, (Uc[a0:a1], Vc[b0:b1], Wt), (a0, b0), scale, dtype)
            if failure is not None:
                return failure
    return Verification(True)


def _check_block(
    d: Decomposition, parts: tuple[np.ndarray, np.ndarray, np.ndarray], origin: tuple[int, int],
    scale: int, dtype: Any,
) -> Verification | None:
    """Compare Σ_r U[a,r]·V[b,r]·W[:,r] with ``scale·T[a, b, :]`` on one slab of (a, b)."""
    Ua, Vb, Wt = parts
    a0, b0 = origin
    na, nb, rank = Ua.shape[0], Vb.shape[0], Ua.shape[1]
    got = (Ua[:, None, :] * Vb[None, :, :]).reshape(na * nb, rank) @ Wt
    if dtype is object:
        got = np.array(got, dtype=object)
    got = got.reshape(na, nb, Wt.shape[1])
    T = d.target.block(a0, a0 + na, b0, b0 + nb)
    mod2 = d.field == "Z2"
    if mod2:
        diff = np.mod(got.astype(np.int64) - T, 2) != 0
    else:
        diff = got != T.astype(dtype) * scale
    if not np.any(diff):
        return None
    a, b, c = (int(x) for x in np.argwhere(diff)[0])
    expected = int(T[a, b, c])
    value = Fraction(int(got[a, b, c]), scale)
    if mod2:
        value = Fraction(int(value) % 2)
        expected %= 2
    where = d.target.entry_name(a0 + a, b0 + b, c)
    return Verification(
        False,
        f"tensor entry {where} should be {expected} but the terms sum to "
        f"{format_fraction(value)}" + (" (mod 2)" if mod2 else ""),
        (a0 + a, b0 + b, c),
    )
