"""The shipped pickle-free copy of DeepMind's AlphaTensor factorizations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmmforge.core import alphatensor
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats.npz import read_npz_factors

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "alphatensor"
UPSTREAM = {"Z": "factorizations_r.npz", "Z2": "factorizations_f2.npz"}


@pytest.mark.parametrize("field, count", [("Z", 93), ("Z2", 20)])
def test_every_factorization_loads_and_verifies(field: str, count: int) -> None:
    formats = alphatensor.available(field)
    assert len(formats) == count
    assert formats == sorted(formats)
    assert all(n <= m <= p for n, m, p in formats)
    raw = read_npz_factors(alphatensor.data_path(field))
    for fmt in formats:
        d = alphatensor.load(fmt, field)
        assert d.format == fmt and d.field == field
        assert d.verify().valid, fmt
        assert d.rank == raw[",".join(map(str, fmt))][0].shape[-1]


def test_known_ranks() -> None:
    assert alphatensor.load((2, 2, 2)).rank == 7
    assert alphatensor.load((4, 4, 4)).rank == 49
    assert alphatensor.load((3, 4, 5)).rank == 47
    assert alphatensor.load((5, 5, 5), "Z2").rank == 96


@pytest.mark.parametrize("field", ["Z", "Z2"])
def test_shipped_copy_equals_upstream(field: str) -> None:
    src = SHARED / UPSTREAM[field]
    if not src.exists():
        pytest.skip(f"upstream AlphaTensor data not present at {SHARED}")
    shipped = read_npz_factors(alphatensor.data_path(field))
    with np.load(src, allow_pickle=True) as upstream:  # trusted project data
        assert sorted(upstream.files) == sorted(shipped)
        for key in upstream.files:
            arr = upstream[key]
            parts = list(arr) if arr.dtype == object else [arr[0], arr[1], arr[2]]
            for mine, theirs in zip(shipped[key], parts):
                assert mine.dtype == theirs.dtype, key
                assert np.array_equal(mine, theirs), key


def test_shipped_files_need_no_pickle() -> None:
    for field in ("Z", "Z2"):
        with np.load(alphatensor.data_path(field), allow_pickle=False) as z:
            for key in z.files:
                assert z[key].dtype != object


def test_converter_is_deterministic_and_pickle_free(tmp_path: Path) -> None:
    src = SHARED / UPSTREAM["Z2"]
    if not src.exists():
        pytest.skip(f"upstream AlphaTensor data not present at {SHARED}")
    dst = tmp_path / "z2.npz"
    keys = alphatensor.convert_deepmind_npz(src, dst)
    assert len(keys) == 20
    assert dst.read_bytes() == alphatensor.data_path("Z2").read_bytes()


@pytest.mark.parametrize("fmt", [(5, 4, 4), (4, 5, 4), (4, 4, 5), (3, 2, 2), (4, 3, 2), (2, 4, 3)])
def test_permutations_of_stored_formats(fmt: tuple[int, int, int]) -> None:
    d = alphatensor.load(fmt)
    assert d.format == fmt
    assert d.verify().valid
    assert d.rank == alphatensor.load(tuple(sorted(fmt))).rank


def test_permutation_over_z2() -> None:
    d = alphatensor.load((5, 4, 4), "Z2")
    assert d.format == (5, 4, 4) and d.field == "Z2" and d.rank == 63
    assert d.verify().valid


def test_z2_scheme_is_valid_mod_2_only() -> None:
    d = alphatensor.load((4, 4, 4), "Z2")
    assert d.rank == 47 and d.verify().valid
    U, V, W = d.numerators()
    over_z = Decomposition.unchecked(U, V, W, (4, 4, 4), field="Z")
    assert not over_z.verify().valid


def test_loads_are_cached() -> None:
    assert alphatensor.load((3, 3, 3)) is alphatensor.load([3, 3, 3])  # type: ignore[arg-type]


def test_unknown_format_points_to_list() -> None:
    with pytest.raises(FmmforgeError, match="fmmforge list"):
        alphatensor.load((6, 6, 6))
    with pytest.raises(FmmforgeError, match="fmmforge list"):
        alphatensor.load((9, 10, 10), "Z2")


def test_bad_arguments() -> None:
    with pytest.raises(FmmforgeError, match="field"):
        alphatensor.load((2, 2, 2), "Q")
    with pytest.raises(FmmforgeError, match="field"):
        alphatensor.available("GF3")
    with pytest.raises(FmmforgeError):
        alphatensor.load((2, 0, 2))
