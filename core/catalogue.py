"""Every algorithm fmmforge knows by name: built-ins, DeepMind's factorizations, the store.

Names:
  strassen, strassen-winograd, laderman, strassen-2x2x3   classical schemes (built in)
  naive:n,m,p                                             the classical algorithm for <n,m,p>
  alphatensor:n,m,p / alphatensor-mod2:n,m,p              DeepMind's published factorizations
  NAME*NAME                                               Kronecker product (e.g. strassen*strassen)
  any name given with `fmmforge import --name`, or store:ID
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from fmmforge.core import alphatensor, builtins
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import parse_format

ALPHATENSOR_PREFIX = {"alphatensor": "Z", "alphatensor-mod2": "Z2"}


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


BUILTIN_NAMES = tuple(_builtin_loaders())
RESERVED_PREFIXES = ("naive:", "store:", *(p + ":" for p in ALPHATENSOR_PREFIX))


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


def is_reserved(name: str) -> bool:
    """Names a user may not give to a stored algorithm (they mean something already)."""
    return name in BUILTIN_NAMES or name.startswith(RESERVED_PREFIXES) or "*" in name


def resolve(name: str, store: "object | None" = None) -> Decomposition:
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
            result = result.kron(resolve(part, store))
        return result
    loaders = _builtin_loaders()
    if name in loaders:
        return loaders[name]()
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "naive":
        return builtins.naive(*parse_format(rest))
    if sep and prefix in ALPHATENSOR_PREFIX:
        return alphatensor.load(parse_format(rest), ALPHATENSOR_PREFIX[prefix])
    from fmmforge.core.store import Store

    found = (store if store is not None else Store()).find(name)  # type: ignore[attr-defined]
    if found is not None:
        return found.decomposition
    raise FmmforgeError(
        f"unknown algorithm {name!r}; run `fmmforge list` to see the catalogue and the store"
    )
