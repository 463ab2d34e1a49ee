"""Where a report finds the fitted cost model and the tuned choices (sections 6 and 7).

:func:`fitted_cost_model` reads what `fmmforge calibrate` stored (fmmforge.codegen.costmodel)
for the device and machine; `fmmforge tune` does not exist yet, so :func:`tuned_choices` returns
None and the report says what to run. ``write_report`` also takes either one directly (tests
and callers that have a model in hand).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

import pandas as pd

from fmmforge.core.store import Store


class CostModel(Protocol):
    """A model of kernel time: ``predict_ms`` gets one measurement row (the columns of
    fmmforge.reports.data.COLUMNS) and returns the predicted kernel time in ms."""

    name: str

    def predict_ms(self, row: Mapping[str, Any]) -> float: ...


# Tuned choices are a table with (at least) these columns, one row per shape class.
TUNED_COLUMNS = ("shape_class", "choice", "speedup")


class CalibratedCostModel:
    """The calibrated models of one device and machine as a :class:`CostModel`: a row is predicted
    by the model of its threads and dtype from its record's plan; NaN where no model or scheme fits."""

    def __init__(self, store: Store, models: dict) -> None:
        self.store, self.models = store, models
        self.name = "; ".join(f"{m.name}, {k.threads} threads {k.dtype}" for k, m in models.items())
        self._schemes: dict = {}

    def predict_ms(self, row: Mapping[str, Any]) -> float:
        from fmmforge.codegen.calibrate import plan_schemes
        from fmmforge.codegen.records import query_records

        threads = row.get("threads")
        model = next((m for k, m in self.models.items()
                      if k.dtype == row.get("dtype") and not pd.isna(threads) and k.threads == int(threads)), None)
        records = query_records(self.store, id=int(row["record_id"])) if model is not None else []
        got = plan_schemes(records[0], self.store, self._schemes) if records else None
        if model is None or got is None:
            return math.nan
        decomps, cutoff, variant, remainder = got
        return model.predict_s(decomps, cutoff, (int(row["m"]), int(row["k"]), int(row["n"])), variant,
                               remainder) * 1e3


def fitted_cost_model(store: Store, device: str, machine: str) -> CostModel | None:
    """The cost model(s) `fmmforge calibrate` fitted for ``device`` on ``machine``; None when none is stored."""
    from fmmforge.codegen.costmodel import find_model, stored_keys

    models = {k: m for k in stored_keys(store, device, machine) if (m := find_model(k, store)) is not None}
    return CalibratedCostModel(store, models) if models else None


def tuned_choices(store: Store, device: str, machine: str) -> pd.DataFrame | None:
    """The choice stored per shape class for ``device`` on ``machine`` (codegen.choices, which
    `fmmforge tune` fills); None while there is none."""
    from fmmforge.codegen.choices import list_choices

    choices = list_choices(device, machine, store)
    if not choices:
        return None
    return pd.DataFrame({
        "dtype": [c.dtype for c in choices],
        "shape class (M×K×N, at least)": ["x".join(map(str, c.shape_class)) for c in choices],
        "plan": [" / ".join(c.algorithms) + f" L{len(c.algorithms)}"
                 + ("" if c.plan.get("variant", "lowmem") == "lowmem" else f" {c.plan['variant']}") for c in choices],
        "speed-up": [c.speedup for c in choices],
        "vendor ms": [c.baseline_median_s * 1e3 for c in choices],
        "chosen at": [c.created_at for c in choices],
    })
