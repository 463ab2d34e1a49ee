"""The one interface the tuning loop sees of a cost model (:class:`CostModel`), and its three
implementations: the device's calibrated model (:class:`FittedModel`, codegen.costmodel), the prior
model that ranks while there is none worth trusting (:class:`PriorModel`), and the analytic model
of a spec-only chip (hardware.tpu_model.TpuCostModel). As a search policy of TVM's Ansor sees only
its cost model's interface, the loop (codegen.tune.loop) and its policy (codegen.tune.policy) never
read a model's parameters, caches or gemm tables: they ask for predictions, for cheap estimates
and for the model with the gemm timings measured since (:meth:`CostModel.with_tables`), and
:func:`fit_model` gives them the model the records now support.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence, runtime_checkable

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.costmodel import CalibratedModel, ModelKey, prior_model
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store

Shape = tuple[int, int, int]


@runtime_checkable
class CostModel(Protocol):
    """What the tuner asks of a cost model. ``analytic``: a chip nothing runs on (the tune ranks
    and stops; its plans peel, in one layout); ``trusted``: False for a fit whose held-out error
    says it cannot rank plans (codegen.costmodel.Quality.verdict)."""

    @property
    def name(self) -> str: ...

    @property
    def analytic(self) -> bool: ...

    @property
    def trusted(self) -> bool: ...

    def predict_s(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem",
                  remainder: str = "peel") -> float:
        """Seconds of one call at ``shape`` by the plan ``decomps`` (empty: the vendor matmul)."""
        ...

    def estimate_s(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem") -> float:
        """A cheap stand-in for :meth:`predict_s`, to choose which plans it ranks."""
        ...

    def with_tables(self, store: Store) -> "CostModel":
        """The model with the gemm timings now in ``store`` (nothing refitted)."""
        ...


@dataclass(frozen=True)
class FittedModel:
    """The device's calibrated model, its predictions at the tune's cut-off."""

    model: CalibratedModel
    cutoff: int
    analytic: bool = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def trusted(self) -> bool:
        return self.model.trusted

    @property
    def key(self) -> ModelKey:
        return self.model.key

    def predict_s(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem",
                  remainder: str = "peel") -> float:
        return self.model.predict_s(list(decomps), self.cutoff, shape, variant, remainder)

    def estimate_s(self, decomps: Sequence[Decomposition], shape: Shape, variant: str = "lowmem") -> float:
        return self.model.estimate_s(decomps, shape, variant)

    def with_tables(self, store: Store) -> "FittedModel":
        return replace(self, model=self.model.with_tables(store))


@dataclass(frozen=True)
class PriorModel(FittedModel):
    """The model before any fit (codegen.costmodel.prior_model: the measured gemm times, every
    byte at the bandwidths measured on the spot): it ranks while the records are too few to fit
    one, or fit a poor one."""

    @property
    def name(self) -> str:
        return "the prior model"

    @property
    def trusted(self) -> bool:
        return True


PRIOR = "ranked by the prior model (measured gemm times, streaming bandwidth)"
Calibrate = Callable[[str, int, int, str], None]  # codegen.calibrate.Progress


def prior(key: ModelKey, store: Store, cutoff: int) -> PriorModel:
    return PriorModel(prior_model(key, store), cutoff)


def trusted_or_prior(model: CalibratedModel, store: Store, cutoff: int, notes: list[str]) -> FittedModel:
    """``model``, or the prior model with a note when its fit is poor: a model whose held-out
    error is far above the machine's floor ranks plans no better than chance (a 67 % model once
    predicted 3.1x, and the tune trusted it)."""
    if model.trusted or model.quality is None:
        return FittedModel(model, cutoff)
    _note(notes, f"{PRIOR}: the cost model of {model.key.describe()} is poor (held-out error "
                 f"{model.quality.median_ape:.1f} %, above {model.quality.threshold_pct():.0f} %)")
    return prior(model.key, store, cutoff)


def fit_model(key: ModelKey, store: Store, cutoff: int, backend: CodegenBackend, budget_s: float,
              progress: Calibrate | None, notes: list[str]) -> FittedModel:
    """The device's model fitted on every usable record (codegen.calibrate, measuring within
    ``budget_s`` what is missing); the prior model, with a note, while there are too few records
    to fit one or the fit is poor."""
    from fmmforge.codegen.calibrate import calibrate

    try:
        model = calibrate(key, backend=backend, budget_s=budget_s, store=store, progress=progress).model
    except FmmforgeError as exc:
        _note(notes, f"{PRIOR}: {exc}")
        return prior(key, store, cutoff)
    return trusted_or_prior(model, store, cutoff, notes)


def _note(notes: list[str], text: str) -> None:
    """One note on the prior model per tune, the first reason."""
    if not any(n.startswith(PRIOR) for n in notes):
        notes.append(text)


def measure_leaves(key: ModelKey, plans: Sequence[tuple[Sequence[Decomposition], str, str]], shape: Shape,
                   cutoff: int, store: Store, deadline: float) -> int:
    """Time the vendor gemm at the leaf shapes of ``plans`` (decompositions, variant, remainder) that
    the stored tables lack (as leaves: codegen.costmodel's leaf layout) and at the shape itself, so
    the prediction at this size rests on measured leaves rather than on extrapolation."""
    from fmmforge.codegen.calibrate import measure_tables, needed_shapes

    needed = needed_shapes((decomps, cutoff, shape, variant, remainder) for decomps, variant, remainder in plans)
    needed["contiguous"] = {shape}  # the vendor gemm here; no corners around it
    return measure_tables(key, needed, store, deadline)
