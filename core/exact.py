"""Exact rational matrices stored as an integer numerator array and one positive denominator.

Published schemes use integers and a few rationals (±1/2, ±1/8); floats are accepted only
when they are exactly such rationals (small power-of-two or other small denominators), and
strings like ``"1/2"``, ``"-0.5"`` or ``".125"`` are parsed exactly.
"""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction
from typing import Any

import numpy as np

from fmmforge.core.errors import FmmforgeError

# A float is taken as exact only if it is a rational with a denominator no larger than this.
MAX_FLOAT_DENOMINATOR = 1 << 20
# Entries are int64 numerators over one denominator per factor; anything at or beyond this
# bound (numerators after scaling, denominators) is refused when read, so that every
# product of three entries fits the exact paths of the verifier.
ENTRY_LIMIT = 1 << 62
# A token longer than this cannot be an entry below ENTRY_LIMIT written sensibly.
MAX_TOKEN_CHARS = 80
_MAX_EXPONENT = 40

MAX_ENTRIES_VAR = "FMMFORGE_MAX_ENTRIES"
DEFAULT_MAX_ENTRIES = 4_000_000

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_RATIO = re.compile(r"^[+-]?\d+\s*/\s*[+-]?\d+$")


def parse_exact(token: str) -> Fraction:
    """Parse one entry such as ``-1``, ``1/2``, ``-0.5`` or ``.125`` exactly.

    Raises ValueError for anything that is not a plain number.
    """
    text = token.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise ValueError(
            f"entry {text[:20]}... has {len(text)} characters, too long for an exact small rational "
            f"(numerators and denominators stay below 2^62)"
        )
    if _RATIO.match(text):
        num, den = text.split("/")
        if int(den) == 0:
            raise ValueError(f"division by zero in {token!r}")
        return Fraction(int(num), int(den))
    match = _NUMBER.match(text)
    if match:
        exponent = match.group(3)
        if exponent and abs(int(exponent[1:])) > _MAX_EXPONENT:
            raise ValueError(
                f"entry {text!r} is not an exact small rational: its exponent is out of range "
                f"(numerators and denominators stay below 2^62)"
            )
        return Fraction(text)
    raise ValueError(f"not a number: {token!r}")


def exact_token(token: str) -> Fraction | None:
    """The exact value of a text entry; None if it is not a number at all (the caller says what
    it might be), a one-line FmmforgeError if it is a number but not a small exact rational."""
    try:
        value = parse_exact(token)
    except ValueError as exc:
        if str(exc).startswith("not a number"):
            return None
        raise FmmforgeError(str(exc)) from None
    return check_small(value, repr(token.strip()))


def env_limit(var: str, default: int) -> int:
    """A positive whole-number setting from the environment variable ``var``."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 24 or int(raw) < 1:
        raise FmmforgeError(f"{var}={raw!r} is not a positive whole number; fix or unset it")
    return int(raw)


def max_entries() -> int:
    """The most factor entries (or dense tensor entries) fmmforge allocates for one scheme."""
    return env_limit(MAX_ENTRIES_VAR, DEFAULT_MAX_ENTRIES)


def check_entries(count: int, what: str, *, unit: str = "entries", per_entry: int = 1, slack: int = 0) -> None:
    """Refuse, before allocating, anything with more than :func:`max_entries` entries (or
    ``per_entry`` units per allowed entry, plus ``slack``: the bytes of a file)."""
    limit = max_entries() * per_entry + slack
    if count > limit:
        raise FmmforgeError(
            f"{what} needs {count:,} {unit}, more than the limit of {limit:,}; "
            f"set {MAX_ENTRIES_VAR} to raise it if you have the memory"
        )


def check_small(f: Fraction, shown: Any) -> Fraction:
    """``f`` itself if numerator and denominator are below 2^62, else a one-line error."""
    if f.denominator >= ENTRY_LIMIT:
        raise FmmforgeError(
            f"entry {shown} is not an exact small rational: its denominator is beyond 2^62; "
            "use integers or rationals like 1/2 with small denominators"
        )
    if abs(f.numerator) >= ENTRY_LIMIT:
        raise FmmforgeError(f"entry {shown} is too large: entries must stay below 2^62 in magnitude")
    return f


def to_fraction(value: Any) -> Fraction:
    """One entry of any supported kind as an exact Fraction."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Fraction(int(value))
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise FmmforgeError(f"entry {f} is not a finite number; fix the factor entries")
        exact = Fraction(f)
        near = exact.limit_denominator(MAX_FLOAT_DENOMINATOR)
        if near != exact:
            raise FmmforgeError(
                f"entry {f!r} is not an exact small rational; write it as a fraction such as 1/3"
            )
        return exact
    if isinstance(value, str):
        exact = exact_token(value)
        if exact is None:
            raise FmmforgeError(f"not a number: {value[:40]!r}; entries must be integers or rationals like 1/2")
        return exact
    raise FmmforgeError(f"unsupported entry type {type(value).__name__}; use integers or fractions")


def exact_matrix(values: Any) -> tuple[np.ndarray, int]:
    """Convert a 2-D array-like of exact entries into (integer numerators, common denominator).

    The result is reduced: gcd(all numerators, denominator) == 1 and denominator >= 1.
    """
    arr = values if isinstance(values, np.ndarray) else _as_array(values)
    if arr.ndim != 2:
        raise FmmforgeError(f"a factor must be a 2-D matrix, got {arr.ndim} dimensions")
    if arr.dtype.kind in "iub":
        check_int_range(arr)
        return _reduce(arr.astype(np.int64), 1)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise FmmforgeError(
            f"{arr.dtype} entries are wider than float64 and are not read exactly here; "
            "store them as int64 or float64"
        )
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)  # exact for float16/32; keeps scaling below from overflowing
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)):
        # Multiplying by a power of two is exact in binary floating point, so the smallest
        # 2^k that makes every entry integral gives the exact rational at numpy speed
        # (DeepMind's files hold ±1/2 and ±1/8 as float64).
        for k in range(MAX_FLOAT_DENOMINATOR.bit_length()):
            scaled = arr * float(1 << k)
            if np.all(scaled == np.round(scaled)):
                if np.max(np.abs(scaled), initial=0) < 2**53:
                    return _reduce(scaled.astype(np.int64), 1 << k)
                break
    fracs = [check_small(to_fraction(x), x) for x in arr.ravel()]
    den = 1
    for f in fracs:
        den = den * f.denominator // math.gcd(den, f.denominator)
        if den >= ENTRY_LIMIT:
            raise FmmforgeError(
                "the entries of a factor have no common denominator below 2^62 "
                "(too many different denominators); use fewer, smaller denominators"
            )
    nums = [f.numerator * (den // f.denominator) for f in fracs]
    if any(abs(x) >= ENTRY_LIMIT for x in nums):
        raise FmmforgeError(
            f"factor entries over their common denominator {den} reach 2^62; "
            "entries must stay below 2^62 in magnitude after scaling"
        )
    return _reduce(np.array(nums, dtype=np.int64).reshape(arr.shape), den)


def absmax(x: np.ndarray) -> int:
    """max |x| as a Python integer, 0 for an empty array (np.abs overflows at the most negative
    int64)."""
    return max(int(x.max()), -int(x.min())) if x.size else 0


def check_int_range(arr: np.ndarray) -> None:
    """Integer arrays (signed or not, read as their true values) must stay below 2^62."""
    if not arr.size or arr.dtype.kind == "b":
        return
    low, high = int(arr.min()), int(arr.max())  # Python ints: no overflow, no sign change
    worst = low if -low >= high else high
    if abs(worst) >= ENTRY_LIMIT:
        raise FmmforgeError(
            f"entry {worst} is too large: entries must stay below 2^62 in magnitude"
            + (f" (the array is {arr.dtype}: a signed scheme saved as unsigned?)" if arr.dtype.kind == "u" else "")
        )


def _as_array(values: Any) -> np.ndarray:
    """Numeric lists become numeric arrays; anything with strings or Fractions stays object."""
    try:
        arr = np.asarray(values)
    except ValueError:
        raise FmmforgeError("a factor must be a rectangular matrix (rows of equal length)") from None
    return arr if arr.dtype.kind in "iubf" else np.asarray(values, dtype=object)


def _reduce(num: np.ndarray, den: int) -> tuple[np.ndarray, int]:
    g = int(np.gcd.reduce(num.ravel(), initial=0)) if num.size else 0
    g = math.gcd(g, den)
    if g > 1:
        num = num // g
        den //= g
    num = np.ascontiguousarray(num, dtype=np.int64)
    num.setflags(write=False)
    return num, int(den)


def fraction_array(num: np.ndarray, den: int) -> np.ndarray:
    """An object array of Fractions equal to num / den."""
    out = np.empty(num.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(num.ravel().tolist()):
        flat[i] = Fraction(x, den)
    out.setflags(write=False)  # cached on an immutable Decomposition: nobody may change it
    return out


def format_fraction(f: Fraction) -> str:
    """``3``, ``-1/2``: the shortest exact text for an entry."""
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
