"""Tuned choices in the store: the ``choices`` table, which this module owns (:data:`TABLES`).

A choice says which kernel plan is *the* one to use for a (device, machine, dtype, shape class):
the plan that measured faster than the vendor matmul for that class. ``fmmforge tune`` fills the
table (:func:`store_choice`); ``fmmforge.matmul`` reads it (:func:`lookup_choice`). One row per key:
storing a choice again replaces the earlier one (the latest tuning wins).

A choice names the emitter revision (codegen.generate.EMITTER_REVISION) of the kernels it was
measured with. When the emitter changes, the same plan becomes other code, which may run at
another speed: a choice of another revision (or of a store from before the column) is not used,
and :func:`lookup_choice` says once to tune again.

The shape class of an M×K×N product is each dimension rounded down to its power of two
(:func:`shape_class`), so 256..511 are all class 256. Products with a dimension below
:data:`MIN_DIMENSION` have no class: they always go to the vendor matmul.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from fmmforge.codegen.generate import EMITTER_REVISION
from fmmforge.codegen.plan import Plan, plan_from_dict
from fmmforge.core.errors import FmmforgeError, print_warning
from fmmforge.core.store import OwnedTables, Store
from fmmforge.core.version import __version__

# below this (in any dimension) the vendor matmul is used without looking anything up
MIN_DIMENSION = 128

ShapeClass = tuple[int, int, int]

TABLES = OwnedTables("codegen.choices", (
    """
        CREATE TABLE choices (
            device TEXT NOT NULL,
            machine TEXT NOT NULL,
            dtype TEXT NOT NULL,
            m_class INTEGER NOT NULL, k_class INTEGER NOT NULL, n_class INTEGER NOT NULL,
            plan TEXT NOT NULL,
            speedup REAL NOT NULL,
            baseline_median_s REAL NOT NULL,
            created_at TEXT NOT NULL,
            fmmforge_version TEXT NOT NULL,
            PRIMARY KEY (device, machine, dtype, m_class, k_class, n_class)
        );
        """,
    # version 2: the model's predicted speed-up beside the measured one
    "ALTER TABLE choices ADD COLUMN predicted_speedup REAL",
    # version 3: the emitter revision of the kernels the choice was measured with (NULL: before it)
    "ALTER TABLE choices ADD COLUMN emitter INTEGER",
))


def dimension_class(size: int) -> int | None:
    """``size`` rounded down to a power of two; None below :data:`MIN_DIMENSION`."""
    return None if size < MIN_DIMENSION else 1 << (int(size).bit_length() - 1)


def shape_class(m: int, k: int, n: int) -> ShapeClass | None:
    """The class of an M×K×N product, or None when it is too small to have one (vendor matmul)."""
    cm, ck, cn = dimension_class(m), dimension_class(k), dimension_class(n)
    return None if cm is None or ck is None or cn is None else (cm, ck, cn)


@dataclass(frozen=True)
class Choice:
    """The tuned kernel for one (device, machine, dtype, shape class)."""

    device: str
    machine: str
    dtype: str
    shape_class: ShapeClass
    plan: dict[str, Any]  # Plan.as_dict(): algorithm names and fingerprints, one per level
    speedup: float  # vendor median / kernel median, measured by the tuner
    baseline_median_s: float  # the vendor matmul's median time at the tuned size
    created_at: str = ""
    fmmforge_version: str = __version__
    predicted_speedup: float | None = None  # what the cost model predicted for it before measuring
    emitter: int | None = EMITTER_REVISION  # codegen.generate's revision when it was measured

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(self.plan["fingerprints"])

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self.plan["algorithms"])

    def to_plan(self) -> Plan:
        return plan_from_dict(self.plan)


def _check_class(shape: object) -> ShapeClass:
    if (not isinstance(shape, tuple) or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or dimension_class(s) != s for s in shape)):
        raise FmmforgeError(f"shape class {shape!r} is not three powers of two >= {MIN_DIMENSION}; "
                            "make it with shape_class(m, k, n)")
    m, k, n = shape
    return m, k, n


def check_choice(choice: Choice) -> Choice:
    """Refuse a choice that could not be used as it stands (one FmmforgeError line)."""
    _check_class(choice.shape_class)
    plan = plan_from_dict(choice.plan)
    if plan.dtype != choice.dtype:
        raise FmmforgeError(f"the plan is for {plan.dtype}, the choice for {choice.dtype}; they must agree")
    if plan.device != choice.device:
        raise FmmforgeError(f"the plan is for device {plan.device}, the choice for {choice.device}; they must agree")
    for value, what in ((choice.speedup, "speed-up"), (choice.baseline_median_s, "baseline time")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise FmmforgeError(f"the {what} of a choice must be a positive finite number, not {value!r}")
    if not plan.algorithms:
        raise FmmforgeError("a choice needs a plan with at least one level (0 levels is the vendor matmul)")
    return choice


def store_choice(plan: Plan, *, machine: str, shape: ShapeClass, speedup: float, baseline_median_s: float,
                 predicted_speedup: float | None = None, store: Store | None = None) -> Choice:
    """Record ``plan`` as the choice for its device and dtype on ``machine`` for the shape class
    ``shape`` (replacing any earlier one), and return it."""
    choice = check_choice(Choice(plan.device, machine, plan.dtype, shape, plan.as_dict(), float(speedup),
                                 float(baseline_median_s),
                                 datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 predicted_speedup=None if predicted_speedup is None else float(predicted_speedup)))
    store = store if store is not None else Store()
    with store.writing(TABLES) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO choices (device, machine, dtype, m_class, k_class, n_class, plan, speedup, "
            "baseline_median_s, created_at, fmmforge_version, predicted_speedup, emitter) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (choice.device, choice.machine, choice.dtype, *choice.shape_class, json.dumps(choice.plan, sort_keys=True),
             choice.speedup, choice.baseline_median_s, choice.created_at, choice.fmmforge_version,
             choice.predicted_speedup, choice.emitter))
    return choice


def clear_choice(device: str, machine: str, dtype: str, shape: ShapeClass, store: Store | None = None) -> bool:
    """Remove the choice for this key (the vendor matmul is used for the class); True if there was one."""
    _check_class(shape)
    store = store if store is not None else Store()
    with store.writing(TABLES) as conn:
        cur = conn.execute("DELETE FROM choices WHERE device = ? AND machine = ? AND dtype = ? AND m_class = ? "
                           "AND k_class = ? AND n_class = ?", (device, machine, dtype, *shape))
        return cur.rowcount > 0


def lookup_choice(device: str, machine: str, dtype: str, shape: ShapeClass, store: Store | None = None,
                  warn: Callable[[str], None] = print_warning) -> Choice | None:
    """The choice for this key, or None. A row that cannot be read as a usable choice (a damaged
    store) or that was measured with another emitter revision's kernels is skipped with one
    ``warn`` line: it reads as no choice."""
    store = store if store is not None else Store()
    with store.reading(TABLES) as conn:
        if conn is None:
            return None
        row = conn.execute(
            "SELECT plan, speedup, baseline_median_s, created_at, fmmforge_version, predicted_speedup, emitter "
            "FROM choices "
            "WHERE device = ? "
            "AND machine = ? AND dtype = ? AND m_class = ? AND k_class = ? AND n_class = ?",
            (device, machine, dtype, *shape)).fetchone()
    if row is None:
        return None
    try:
        if row[6] != EMITTER_REVISION:
            measured = "kernels from before emitter revisions were kept" if row[6] is None else \
                f"kernels of emitter revision {row[6]}"
            raise FmmforgeError(f"measured with {measured}; this fmmforge emits revision {EMITTER_REVISION}, "
                                "whose kernels may run at another speed")
        choice = Choice(device, machine, dtype, _check_class(tuple(shape)), json.loads(row[0]), row[1], row[2],
                        str(row[3]), str(row[4]), None if row[5] is None else float(row[5]), int(row[6]))
        return check_choice(choice)
    except (FmmforgeError, ValueError, TypeError) as exc:
        warn(f"skipped the tuned choice for {dtype} {'x'.join(map(str, shape))} on {device} in {store.path} "
             f"({exc}); run `fmmforge tune` again to replace it")
        return None


def list_choices(device: str, machine: str, store: Store | None = None) -> list[Choice]:
    """Every stored choice for ``device`` on ``machine`` (any dtype), by dtype and shape class."""
    store = store if store is not None else Store()
    with store.reading(TABLES) as conn:
        if conn is None:
            return []
        rows = conn.execute(
            "SELECT dtype, m_class, k_class, n_class FROM choices WHERE device = ? AND machine = ? "
            "ORDER BY dtype, m_class, k_class, n_class", (device, machine)).fetchall()
    found = (lookup_choice(device, machine, dtype, (m, k, n), store) for dtype, m, k, n in rows)
    return [c for c in found if c is not None]
