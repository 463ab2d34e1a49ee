"""The built-in catalogue: every entry verified, names resolve, unknown names are clear."""

from __future__ import annotations

import json

import pytest

from fmmforge.core import catalogue
from fmmforge.core.catalogue import BUILTIN_NAMES, builtin_entries, resolve
from fmmforge.core.errors import FmmforgeError

EXPECTED = {"strassen": ((2, 2, 2), 7), "strassen-winograd": ((2, 2, 2), 7),
            "laderman": ((3, 3, 3), 23), "strassen-2x2x3": ((2, 2, 3), 11)}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtins_verify(name):
    d = resolve(name)
    assert d.verify().valid
    assert (d.format, d.rank) == EXPECTED[name]


def test_catalogue_lists_builtins_and_alphatensor():
    names = [e.name for e in builtin_entries()]
    assert set(BUILTIN_NAMES) <= set(names)
    assert sum(n.startswith("alphatensor:") for n in names) == 93
    assert sum(n.startswith("alphatensor-mod2:") for n in names) == 20


@pytest.mark.parametrize("name,fmt,rank", [
    ("naive:2,3,4", (2, 3, 4), 24), ("naive:5x1x2", (5, 1, 2), 10),
    ("strassen*strassen", (4, 4, 4), 49), ("strassen*laderman", (6, 6, 6), 161),
    ("alphatensor:4,4,5", (4, 4, 5), 63), ("alphatensor:5,4,4", (5, 4, 4), 63),
    ("alphatensor-mod2:4,4,4", (4, 4, 4), 47),
])
def test_names_resolve(name, fmt, rank):
    d = resolve(name)
    assert (d.format, d.rank) == (fmt, rank) and d.verify().valid


@pytest.mark.parametrize("name,message", [
    ("nonesuch", "unknown algorithm 'nonesuch'"),
    ("naive:2,0,2", "not three positive integers"),
    ("naive:abc", "not three positive integers"),
    ("strassen*", "Kronecker product"),
    ("alphatensor:13,13,13", r"no Z factorization of alphatensor:13,13,13 .*93 formats"),
    ("alphatensor-mod2:4,4,6", r"no Z2 factorization .*did you mean alphatensor-mod2:4,4,5"),
    ("strasen", r"did you mean strassen, .*names are strassen, .*naive:n,m,p"),
    ("alphatensr:4,4,4", r"did you mean alphatensor:4,4,4"),
    ("abc12", r"fingerprint prefix needs at least 8 hex digits \(.abc12. has 5\)"),
])
def test_unknown_names_are_clear(name, message):
    with pytest.raises(FmmforgeError, match=message):
        resolve(name)


@pytest.fixture
def small_catalogue(monkeypatch):
    """Only the classical entries: quick to summarise."""
    real = catalogue.builtin_entries
    monkeypatch.setattr(catalogue, "builtin_entries",
                        lambda: (e for e in real() if e.source == "built-in"))


def test_builtin_summaries_are_cached_under_the_home(small_catalogue, monkeypatch, _isolated_store):
    first = catalogue.builtin_summaries()
    assert [s.name for s in first] == list(BUILTIN_NAMES)
    laderman = next(s for s in first if s.name == "laderman")
    d = resolve("laderman")
    assert (laderman.format, laderman.rank, laderman.field, laderman.nnz) == ("<3,3,3>", 23, "Z", d.nnz)
    assert laderman.stability == float(d.stability_factor)
    assert (_isolated_store / catalogue.SUMMARY_CACHE).is_file()

    def no_loading(entry):
        raise AssertionError("loaded although the cache is current")

    monkeypatch.setattr(catalogue, "_summarize", no_loading)
    assert catalogue.builtin_summaries() == first


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"key": "from another version", "entries": []}',
    "CURRENT_KEY_BAD_ENTRIES",
])
def test_a_stale_or_broken_summary_cache_is_rebuilt(small_catalogue, _isolated_store, content):
    path = _isolated_store / catalogue.SUMMARY_CACHE
    path.parent.mkdir(parents=True)
    if content == "CURRENT_KEY_BAD_ENTRIES":
        entry = {"name": "strassen", "source": "x", "format": "<2,2,2>", "rank": "seven", "field": "Z",
                 "nnz": [1, 2, 3], "stability": None}
        content = json.dumps({"key": catalogue._summary_key(), "entries": [entry]})
    path.write_text(content)
    summaries = catalogue.builtin_summaries()
    assert [(s.name, s.rank) for s in summaries][:2] == [("strassen", 7), ("strassen-winograd", 7)]
    assert json.loads(path.read_text())["key"] == catalogue._summary_key()
