"""Where a report finds the fitted cost model and the tuned choices (sections 6 and 7).

`fmmforge calibrate` and `fmmforge tune` do not exist yet, so both look-ups return None today
and the report says what to run. When those commands land, make :func:`fitted_cost_model`
read what `calibrate` saved (a :class:`CostModel`) and :func:`tuned_choices` what `tune` saved;
nothing else in fmmforge.reports needs to change. ``write_report`` also takes either one
directly (tests and callers that have a model in hand).
"""

from __future__ import annotations

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


def fitted_cost_model(store: Store, device: str, machine: str) -> CostModel | None:
    """The cost model `fmmforge calibrate` fitted for ``device`` on ``machine``; None until then."""
    return None


def tuned_choices(store: Store, device: str, machine: str) -> pd.DataFrame | None:
    """The choice `fmmforge tune` made per shape class for ``device`` on ``machine``; None until then."""
    return None
