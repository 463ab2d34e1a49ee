"""Storing what a search finds: a ``found`` callback (see :class:`~fmmforge.core.contracts.SearchEvents`).

The engine never writes to the store itself; a caller that wants every reported scheme kept
hands it a :class:`StoreRecorder`. The store verifies each scheme again before inserting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmmforge.core.contracts import FoundScheme, SearchRequest
from fmmforge.core.store import Provenance, Store


@dataclass(frozen=True)
class StoredScheme:
    """One scheme a recorder stored (``inserted`` False: it was already in the store)."""

    id: int
    fingerprint: str
    rank: int
    field: str
    inserted: bool
    kind: str  # "best", "target", "lifted", "result"


class StoreRecorder:
    """Stores each reported scheme with the search's provenance; :attr:`stored` lists them."""

    def __init__(self, store: Store, request: SearchRequest, engine: str) -> None:
        self.store = store
        self.request = request
        self.engine = engine
        self.stored: list[StoredScheme] = []

    def __call__(self, found: FoundScheme) -> None:
        d = found.decomposition
        params = {
            "format": d.target.describe(), "field": d.field, "start": found.start,
            "target_rank": self.request.target_rank, "flips": found.flips, "seconds": found.seconds,
            "worker": found.worker, "kind": found.kind, "epoch": found.epoch,
        }
        res = self.store.add(d, Provenance(source="search", engine=self.engine, seed=self.request.seed, params=params))
        self.stored.append(StoredScheme(res.id, res.fingerprint, d.rank, d.field, res.inserted, found.kind))
