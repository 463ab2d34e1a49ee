"""Where a report finds the fitted cost model and the tuned choices (sections 6 and 7).

:func:`fitted_cost_model` reads what `fmmforge calibrate` stored (fmmforge.codegen.costmodel)
for the device and machine; :func:`tuned_choices` what `fmmforge tune` chose: a stored kernel, or
the vendor matmul where a tune run measured and stored no kernel (the tuner clears the class then). ``write_report`` also takes either one directly (tests
and callers that have a model in hand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


VENDOR_CHOICE = "the vendor matmul (no kernel chosen)"


@dataclass(frozen=True)
class TuneMeasured:
    """What the latest `fmmforge tune` run measured in one (dtype, shape class)."""

    words: str
    vendor_ms: float
    at: str


def tune_measured(records: pd.DataFrame | None, device: str, machine: str) -> dict[tuple[str, tuple], TuneMeasured]:
    """(dtype, shape class) -> what the latest tune run on ``device`` and ``machine`` measured there."""
    from fmmforge.codegen.choices import shape_class
    from fmmforge.reports.data import series_labels

    if records is None or not len(records):
        return {}
    rows = records[(records["command"] == "tune") & (records["device"] == device) & (records["machine"] == machine)
                   & (records["levels"] > 0)]
    if not len(rows):
        return {}
    rows = rows.assign(cls=[shape_class(m, k, n) for m, k, n in zip(rows["m"], rows["k"], rows["n"])],
                       label=series_labels(rows))
    out = {}
    for (dtype, cls), g in rows[rows["cls"].notna()].groupby(["dtype", "cls"], sort=False):
        last = g[g["run"] == g["run"].max()]
        best = last.loc[last["speedup"].idxmax()]
        words = f"run {int(best['run'])}: {len(last)} measured, best {best['label']} {best['speedup']:.3f}x"
        out[(str(dtype), tuple(cls))] = TuneMeasured(words, float(last["vendor_median_ms"].median()),
                                                     str(last["created_at"].max()))
    return out


def tuned_choices(store: Store, device: str, machine: str, records: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The choice per shape class for ``device`` on ``machine``: each kernel stored (codegen.choices,
    which `fmmforge tune` fills), and the vendor matmul, said plainly, for each class a tune run
    measured (``records``: the report's rows) without a kernel chosen there; None while there is neither."""
    from fmmforge.codegen.choices import list_choices

    choices = {(c.dtype, c.shape_class): c for c in list_choices(device, machine, store)}
    measured = tune_measured(records, device, machine)
    rows = []
    for key in sorted(set(choices) | set(measured)):
        c, m = choices.get(key), measured.get(key)
        plan = VENDOR_CHOICE if c is None else (
            " / ".join(c.algorithms) + f" L{len(c.algorithms)}"
            + ("" if c.plan.get("variant", "lowmem") == "lowmem" else f" {c.plan['variant']}"))
        rows.append({
            "dtype": key[0], "shape class (M×K×N, at least)": "x".join(map(str, key[1])), "plan": plan,
            "speedup": 1.0 if c is None else c.speedup,
            "vendor_median_ms": m.vendor_ms if c is None else c.baseline_median_s * 1e3,  # type: ignore[union-attr]
            "chosen at": m.at if c is None else c.created_at,  # type: ignore[union-attr]
            "measured by tune": m.words if m is not None else None,
        })
    return pd.DataFrame(rows) if rows else None
