"""DeepMind's AlphaTensor factorizations, shipped as a pickle-free copy (CC BY 4.0).

Fawzi et al., "Discovering faster matrix multiplication algorithms with reinforcement
learning", Nature 610, 47-53 (2022), doi:10.1038/s41586-022-05172-4; data from
https://github.com/google-deepmind/alphatensor (see data/ALPHATENSOR.md for attribution).

DeepMind's own npz files need ``allow_pickle=True`` (their non-cubic entries are pickled
object arrays), which would let a tampered file run code on import. fmmforge ships the
same values re-saved by :func:`convert_deepmind_npz` as plain arrays under the keys
``"n,m,p.u"``, ``"n,m,p.v"``, ``"n,m,p.w"``, so loading never unpickles anything.

Only formats with n <= m <= p are stored; :func:`load` derives the other permutations of a
stored format with the exact rotation and transposition maps of transforms.py.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from fmmforge.core import transforms
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats.npz import Factors, from_deepmind, read_npz_factors, write_npz_arrays
from fmmforge.core.tensor import Format, check_format

DATA_FILES = {"Z": "alphatensor_z.npz", "Z2": "alphatensor_z2.npz"}
SOURCE = "https://github.com/google-deepmind/alphatensor"
CITATION = (
    "Fawzi, A. et al. Discovering faster matrix multiplication algorithms with reinforcement "
    "learning. Nature 610, 47-53 (2022). doi:10.1038/s41586-022-05172-4"
)
LICENSE = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"


def convert_deepmind_npz(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> list[str]:
    """Re-save DeepMind's factorizations npz without pickles; returns the keys written.

    ``src`` must be a trusted file: it is loaded with ``allow_pickle=True``. Values, dtypes
    and DeepMind's orientation (w indexes C^T) are unchanged; every scheme, cubic or not, is
    stored as the three plain arrays ``n,m,p.u``, ``n,m,p.v``, ``n,m,p.w``.
    """
    raw = read_npz_factors(src, allow_pickle=True)
    arrays = {}
    for key, factors in raw.items():
        for part, arr in zip("uvw", factors):
            arrays[f"{key}.{part}"] = arr
    write_npz_arrays(arrays, dst)
    return list(raw)


def data_path(field: str = "Z") -> Path:
    """Path of the shipped pickle-free npz for ``field`` (Z or Z2)."""
    name = DATA_FILES[check_field(field)]
    return Path(str(resources.files("fmmforge.core.data").joinpath(name)))


@lru_cache(maxsize=None)
def _stored(field: str) -> dict[Format, Factors]:
    """All raw factors of one shipped file (read once; about 10 MB for Z)."""
    raw = read_npz_factors(data_path(field))
    return {check_format(tuple(int(x) for x in key.split(","))): f for key, f in raw.items()}


def available(field: str = "Z") -> list[tuple[int, int, int]]:
    """Stored formats (n <= m <= p), sorted; any permutation of them can be loaded."""
    return sorted(_stored(check_field(field)))


def load(fmt: tuple[int, int, int], field: str = "Z") -> Decomposition:
    """The AlphaTensor scheme for ``<n,m,p>`` over ``field``, verified, in fmmforge's convention.

    A permutation of a stored format (e.g. <5,4,4> from <4,4,5>) is derived exactly by
    rotation/transposition. Unknown formats raise FmmforgeError.
    """
    return _load(check_format(tuple(fmt)), check_field(field))


@lru_cache(maxsize=None)
def _load(fmt: Format, field: str) -> Decomposition:
    base_fmt: Format = tuple(sorted(fmt))  # type: ignore[assignment]
    stored = _stored(field)
    if base_fmt not in stored:
        raise FmmforgeError(
            f"AlphaTensor has no {field} factorization of <{','.join(map(str, fmt))}> "
            "(in any order); `fmmforge list` shows what exists"
        )
    if fmt != base_fmt:
        return _derive(_load(base_fmt, field), fmt)
    u, v, w_t = stored[base_fmt]
    return from_deepmind(u, v, w_t, base_fmt, field).require_valid()


def _derive(d: Decomposition, fmt: Format) -> Decomposition:
    """Reach ``fmt`` by rotations (<n,m,p> -> <m,p,n>) and one transposition (-> <p,m,n>).

    The walk d, R d, R²d, T R²d, R T R²d, R² T R²d visits all six orders of (n,m,p).
    """
    current = d
    for step in range(6):
        if current.format == fmt:
            return current
        current = transforms.transpose(current) if step == 2 else transforms.rotate(current)
    raise AssertionError(f"{fmt} is not a permutation of {d.format}")  # unreachable
