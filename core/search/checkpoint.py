"""Checkpoints of the flip engine: the pool at the best rank, written atomically, read back on resume.

A checkpoint is one JSON document per (format, field, seed) by default, under
$FMMFORGE_HOME/checkpoints. Reading one checks that it is a flip-engine checkpoint of this
version for the same tensor and field; anything else is one clear error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fmmforge.core.atomic import write_text
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.paths import home_subdir
from fmmforge.core.search.scheme import PackedScheme, pack
from fmmforge.core.tensor import BilinearTarget

CHECKPOINT_VERSION = 1
ENGINE_NAME = "flip"
MAX_CHECKPOINT_SCHEMES = 200


@dataclass
class Checkpoint:
    """What a resumed run continues from: its pool and the counters of the runs before it."""

    schemes: list[PackedScheme]
    epoch: int = 0  # the number of the run that reads it (the first run is epoch 0)
    flips: int = 0
    seconds: float = 0.0
    history: list[tuple[int, float, int]] = field(default_factory=list)


def default_checkpoint(target: BilinearTarget, field: str, seed: int) -> Path:
    """$FMMFORGE_HOME/checkpoints/flip-FORMAT-FIELD-seedS.json (the folder is created)."""
    what = target.describe().strip("<>").replace(",", "x") if target.format else target.digest
    return home_subdir("checkpoints") / f"flip-{what}-{field}-seed{seed}.json"


def load_checkpoint(path: Path, target: BilinearTarget, field: str) -> Checkpoint:
    """The checkpoint at ``path`` for ``target`` over ``field``; one clear error if it is not one."""
    if not path.exists():
        raise FmmforgeError(f"no checkpoint at {path}; run once without resume first (or name another checkpoint file)")
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION or doc.get("engine") != ENGINE_NAME:
            raise ValueError("not a flip-engine checkpoint of this version")
        if doc["target"] != target.digest or doc["field"] != field:
            raise FmmforgeError(
                f"checkpoint {path} is for {doc.get('describe')} over {doc['field']}, not "
                f"{target.describe()} over {field}; search the same format and field to resume it"
            )
        schemes = [PackedScheme.from_json(s) for s in doc["pool"]]
        shape = tuple(target.tensor.shape)
        if any(s.field != field or s.dims != shape for s in schemes):
            raise ValueError(f"its pool holds schemes that are not {target.describe()} over {field}")
        found = Checkpoint(schemes, int(doc.get("epoch", 0)) + 1, int(doc.get("flips", 0)),
                           float(doc.get("seconds", 0.0)), [tuple(h) for h in doc.get("history", [])])  # type: ignore[misc]
    except FmmforgeError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise FmmforgeError(f"checkpoint {path} is unreadable ({exc}); delete it or start without resume") from None
    if not schemes:
        raise FmmforgeError(f"checkpoint {path} holds no scheme; start without resume")
    return found


def write_checkpoint(path: Path, target: BilinearTarget, field: str, seed: int, *, target_rank: int | None,
                     best: list[Decomposition], epoch: int, flips: int, seconds: float,
                     history: list[tuple[int, float, int]]) -> None:
    """Write the schemes at the best rank (at most 200) and the run's counters, atomically."""
    best = best[:MAX_CHECKPOINT_SCHEMES]
    doc = {
        "version": CHECKPOINT_VERSION, "engine": ENGINE_NAME, "target": target.digest,
        "describe": target.describe(), "field": field, "seed": seed,
        "target_rank": target_rank, "best_rank": min(d.rank for d in best), "epoch": epoch,
        "flips": flips, "seconds": seconds, "history": [list(h) for h in history],
        "pool": [pack(d, field).to_json() for d in best],
    }
    write_text(path, json.dumps(doc))
