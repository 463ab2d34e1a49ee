"""Every algorithm fmmforge knows by name: built-ins, DeepMind's factorizations, the store.

Names:
  strassen, strassen-winograd, laderman, strassen-2x2x3   classical schemes (built in)
  naive:n,m,p                                             the classical algorithm for <n,m,p>
  alphatensor:n,m,p / alphatensor-mod2:n,m,p              DeepMind's published factorizations
  NAME*NAME                                               Kronecker product (e.g. strassen*strassen)
  any name given with `fmmforge import --name`, store:ID, or a fingerprint prefix (8+ hex digits)

:func:`builtin_summaries` gives what `fmmforge list` prints about each built-in entry without
loading them all: the summaries are computed (after exact verification) once, and cached in
``$FMMFORGE_HOME/cache/catalogue.json`` under a key made of fmmforge's version and the hashes of
the shipped data and of the code that builds the entries.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from fmmforge.core import alphatensor, builtins, transforms
from fmmforge.core.atomic import write_text
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.names import ALPHATENSOR_PREFIX, BUILTIN_NAMES
from fmmforge.core.paths import default_home
from fmmforge.core.store import Store
from fmmforge.core.tensor import parse_format
from fmmforge.core.version import __version__


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    source: str
    load: Callable[[], Decomposition]


def _builtin_loaders() -> dict[str, Callable[[], Decomposition]]:
    loaders: dict[str, Callable[[], Decomposition]] = {
        name: (lambda name=name: builtins.builtin(name)) for name in builtins.BUILTINS
    }
    loaders["strassen-2x2x3"] = builtins.strassen_2x2x3
    return loaders


NAME_FORMS = (
    f"names are {', '.join(BUILTIN_NAMES)}, naive:n,m,p, alphatensor:n,m,p, alphatensor-mod2:n,m,p, "
    "A*B (Kronecker product), a name given with `fmmforge import --name`, store:ID, "
    "or a fingerprint prefix of 8+ hex digits"
)
SUMMARY_CACHE = Path("cache") / "catalogue.json"


def builtin_entries() -> Iterator[CatalogueEntry]:
    """The built-in catalogue: classical schemes, then DeepMind's (Z, then mod 2)."""
    for name, load in _builtin_loaders().items():
        yield CatalogueEntry(name, "built-in", load)
    for prefix, field in ALPHATENSOR_PREFIX.items():
        for fmt in alphatensor.available(field):
            key = "{},{},{}".format(*fmt)
            yield CatalogueEntry(
                f"{prefix}:{key}", "AlphaTensor (Fawzi et al. 2022, CC BY 4.0)",
                lambda fmt=fmt, field=field: alphatensor.load(fmt, field),
            )


@dataclass(frozen=True)
class EntrySummary:
    """What `fmmforge list` prints about a catalogue entry."""

    name: str
    source: str
    format: str
    rank: int
    field: str
    nnz: tuple[int, int, int]
    stability: float | None


def _summarize(entry: CatalogueEntry) -> EntrySummary:
    d = entry.load()  # verified exactly by its loader
    s = d.summary()
    return EntrySummary(entry.name, entry.source, s["format"], d.rank, d.field,
                        tuple(int(x) for x in d.nnz), s["stability"])  # type: ignore[arg-type]


def _summary_key() -> str:
    """Changes whenever the entries could: another version, other shipped data, other code."""
    h = hashlib.sha256(f"fmmforge {__version__}|".encode())
    here = Path(__file__).parent
    code = [*sorted(here.glob("*.py")), *sorted(here.glob("formats/*.py"))]
    for path in [*code, *(alphatensor.data_path(f) for f in alphatensor.DATA_FILES)]:
        h.update(path.name.encode() + b"|" + path.read_bytes() + b"|")
    return h.hexdigest()


def _read_summaries(path: Path, key: str) -> list[EntrySummary] | None:
    """The cached summaries if ``path`` holds them for ``key``; None for anything else."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["key"] != key:
            return None
        entries = [EntrySummary(**{**e, "nnz": tuple(e["nnz"])}) for e in doc["entries"]]
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    fine = all(isinstance(e.name, str) and isinstance(e.source, str) and isinstance(e.format, str)
               and isinstance(e.field, str) and type(e.rank) is int and len(e.nnz) == 3
               and all(type(x) is int for x in e.nnz) and isinstance(e.stability, (float, int, type(None)))
               for e in entries)
    return entries if fine else None


def builtin_summaries(home: Path | None = None) -> list[EntrySummary]:
    """Summaries of :func:`builtin_entries`, from the cache under ``home`` when it is current.

    A missing, stale or unreadable cache is rebuilt (every entry loaded and verified) and
    written atomically; a home that cannot be written just means no cache.
    """
    path = (home if home is not None else default_home()) / SUMMARY_CACHE
    key = _summary_key()
    cached = _read_summaries(path, key)
    if cached is not None:
        return cached
    summaries = [_summarize(entry) for entry in builtin_entries()]
    doc = {"key": key, "entries": [asdict(s) for s in summaries]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(doc, indent=0) + "\n")
    except (OSError, FmmforgeError):
        pass  # no cache this time; the summaries themselves are fine
    return summaries


def resolve(name: str, store: Store | None = None) -> Decomposition:
    """The verified decomposition a catalogue or store name stands for.

    Raises FmmforgeError naming the unknown name and how to list the known ones.
    """
    name = name.strip()
    if "*" in name:
        parts = [p for p in name.split("*")]
        if any(not p.strip() for p in parts):
            raise FmmforgeError(f"cannot read Kronecker product {name!r}; write it like strassen*laderman")
        result = resolve(parts[0], store)
        for part in parts[1:]:
            result = transforms.kron(result, resolve(part, store))
        return result
    loaders = _builtin_loaders()
    if name in loaders:
        return loaders[name]()
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "naive":
        return builtins.naive(*parse_format(rest))
    if sep and prefix in ALPHATENSOR_PREFIX:
        return _alphatensor(prefix, parse_format(rest))
    store = store if store is not None else Store()
    found = store.find(name)
    if found is not None:
        return found.decomposition
    raise FmmforgeError(_unknown_message(name, store.names()))


def _alphatensor(prefix: str, fmt: tuple[int, int, int]) -> Decomposition:
    field = ALPHATENSOR_PREFIX[prefix]
    known = alphatensor.available(field)
    if tuple(sorted(fmt)) not in known:
        name = f"{prefix}:{','.join(map(str, fmt))}"
        raise FmmforgeError(
            f"AlphaTensor has no {field} factorization of {name} (in any order)"
            + _did_you_mean(name, [f"{prefix}:{a},{b},{c}" for a, b, c in known])
            + f"; {prefix}:n,m,p exists for {len(known)} formats n<=m<=p and their permutations"
        )
    return alphatensor.load(fmt, field)


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _unknown_message(name: str, stored_names: list[str]) -> str:
    """Unknown ``name``: the closest known names, why a short hex prefix fails, the name forms."""
    hint = ""
    if re.fullmatch(r"[0-9a-f]{1,7}", name):
        hint = f"; a fingerprint prefix needs at least 8 hex digits ({name!r} has {len(name)})"
    elif re.fullmatch(r"[0-9a-f]{8,24}", name):
        hint = "; no stored algorithm has a fingerprint starting with it"
    candidates = [*BUILTIN_NAMES, *stored_names]
    if ":" in name:  # a misspelt prefix: offer the real ones with the same format
        rest = name.partition(":")[2]
        candidates += [f"{prefix}:{rest}" for prefix in ("naive", *ALPHATENSOR_PREFIX)]
    return f"unknown algorithm {name!r}{hint}{_did_you_mean(name, candidates)}; {NAME_FORMS}"
