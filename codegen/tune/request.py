"""What a tune is asked and what it gives back: the request, the candidates (plans with the cost
model's prediction), the measurements, the progress and the result (docs/tuning.md)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from fmmforge.codegen import layouts as kernel_layouts
from fmmforge.codegen.costmodel import level_format
from fmmforge.codegen.plan import REMAINDER_WORDS, Plan
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

if TYPE_CHECKING:
    from fmmforge.codegen.choices import Choice

Shape = tuple[int, int, int]
Format = tuple[int, int, int]
Family = tuple[object, ...]  # the formats of a plan's levels, its layout and its remainder (family_of)

DEFAULT_DIMS = (2, 3, 4)  # format sides tried by default (each n, m, p)
# the kernel layouts a CPU tune tries (those the cost model describes, codegen.layouts.modelled):
# which one wins depends on the shape (docs/tuning.md)
CPU_VARIANTS = kernel_layouts.modelled("cpu")


@dataclass(frozen=True)
class TuneRequest:
    """What to tune. ``budget_s`` covers everything (search, calibration, measuring)."""

    device: str = "cpu"
    shape: Shape = (4096, 4096, 4096)
    dtype: str = "float32"
    budget_s: float = 1200.0
    engine: str = "flip"
    formats: tuple[Format, ...] | None = None  # None: every n,m,p in DEFAULT_DIMS that fits the shape
    max_levels: int = 3
    top_k: int = 3
    pairs: int = 5
    cutoff: int = 64
    min_leaf: int = 256  # plans whose leaf blocks would be smaller than this are not candidates
    collect: int = 40  # schemes the engine collects from each starting scheme
    search_share: float = 0.15  # of the budget, for the engine
    calibrate_share: float = 0.3  # of the budget, for a first calibration when the device has no model
    min_speedup: float = 1.01  # a kernel must beat the vendor matmul by more than this to be chosen
    threads: int | None = None
    seed: int = 0
    store_choice: bool = True
    variants: tuple[str, ...] | None = None  # kernel layouts; None: every one the device's kernels have

    def variants_for(self, device_kind: str) -> tuple[str, ...]:
        """The kernel layouts candidates take on a device of ``device_kind`` (cpu, cuda, spec): the
        fused and parallel kernels are CPU torch kernels (a CPU tries all three unless told); a
        spec-only chip's analytic model has no layouts."""
        allowed = kernel_layouts.modelled(device_kind)
        if self.variants is None:
            return allowed
        wrong = [v for v in self.variants if v not in allowed]
        if wrong:
            raise FmmforgeError(f"variant {wrong[0]!r} cannot be tuned on this device; use {', '.join(allowed)}")
        return tuple(dict.fromkeys(self.variants))

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in self.shape):
            raise FmmforgeError(f"the shape must be three positive whole numbers M, K, N, not {self.shape!r}")
        if not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise FmmforgeError(f"the budget must be a positive number of seconds, not {self.budget_s!r}")
        for name, value, low, high in (("max_levels", self.max_levels, 1, 4), ("top_k", self.top_k, 1, 100),
                                       ("pairs", self.pairs, 3, 100), ("collect", self.collect, 0, 10_000),
                                       ("cutoff", self.cutoff, 1, 1 << 20), ("min_leaf", self.min_leaf, 1, 1 << 20)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FmmforgeError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
        for name, value in (("search_share", self.search_share), ("calibrate_share", self.calibrate_share)):
            if not 0 <= value < 1:
                raise FmmforgeError(f"{name} must be a fraction from 0 to below 1, not {value!r}")
        if not (math.isfinite(self.min_speedup) and self.min_speedup >= 1):
            raise FmmforgeError(f"min_speedup must be at least 1, not {self.min_speedup!r}")
        if self.variants is not None and (not self.variants or not all(isinstance(v, str) for v in self.variants)):
            raise FmmforgeError(f"variants must name at least one kernel layout ({', '.join(CPU_VARIANTS)}), "
                                f"not {self.variants!r}")
        if self.formats is not None:
            for f in self.formats:
                if len(f) != 3 or min(f) < 1 or max(f) > 6 or math.prod(f) < 2:
                    raise FmmforgeError(f"format {f!r} cannot be tuned: give n,m,p from 1 to 6, not all 1")


def identity(decomps: Iterable[Decomposition], variant: str, remainder: str = "peel") -> tuple[str, ...]:
    """What a measurement is of: the levels' fingerprints, and the layout and remainder strategy
    where they are not the defaults (the identities of low-memory peeling plans are those earlier
    tunes recorded)."""
    fps = tuple(d.fingerprint for d in decomps)
    return fps + ((variant,) if variant != "lowmem" else ()) + ((remainder,) if remainder != "peel" else ())


@dataclass(frozen=True)
class Candidate:
    """A plan the tuner may measure: one scheme per level, the model's prediction."""

    decomps: tuple[Decomposition, ...]
    names: tuple[str, ...]  # one per level: a catalogue name, or the store name tune gave the scheme
    predicted_s: float
    predicted_speedup: float
    variant: str = "lowmem"  # the kernel layout (codegen.plan.VARIANTS)
    remainder: str = "peel"  # a size that does not divide: peeled, padded or split (codegen.plan.REMAINDERS)

    @property
    def label(self) -> str:
        layout = ("" if self.variant == "lowmem" else f", {self.variant}") + REMAINDER_WORDS.get(self.remainder, "")
        return "/".join(self.names) + f" ({len(self.names)} level{'s' if len(self.names) > 1 else ''}{layout})"

    @property
    def identity(self) -> tuple[str, ...]:
        return identity(self.decomps, self.variant, self.remainder)


@dataclass(frozen=True)
class Measured:
    """A candidate measured at the tuned size (``record`` as stored)."""

    candidate: Candidate
    speedup: float
    median_s: float
    baseline_median_s: float
    plan: Plan
    record_id: int | None


@dataclass(frozen=True)
class TuneProgress:
    """Where a tune stands: ``phase`` is search, calibrate, rank, measure, confirm or done."""

    phase: str
    done: int
    total: int
    text: str
    best_speedup: float | None
    elapsed_s: float


Progress = Callable[[TuneProgress], None]


@dataclass
class TuneResult:
    request: TuneRequest
    schemes: int = 0  # distinct schemes considered
    found_by_engine: int = 0
    candidates: int = 0  # plans ranked
    rounds: int = 0
    measured: list[Measured] = field(default_factory=list)
    confirmed: list[Measured] = field(default_factory=list)  # the finalists measured again
    measure_seconds: list[float] = field(default_factory=list)  # wall time of each measurement

    best: Measured | None = None  # the chosen kernel (None: the vendor matmul)
    choice: Choice | None = None  # the stored choice
    vendor_predicted_s: float | None = None
    ranking: list[Candidate] = field(default_factory=list)  # the final model ranking, best first
    model: str = ""
    interrupted: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    spec_only: bool = False  # a spec-only chip: ranked by its analytic model, nothing measured

    def typical_measure_s(self) -> float:
        """Median wall time of one measurement so far (0 before the first)."""
        return statistics.median(self.measure_seconds) if self.measure_seconds else 0.0


def family(c: Candidate) -> Family:
    """The formats of a plan's levels and its layout: plans of one family share how the shape
    divides and peels, and what their element-wise passes are like."""
    return family_of((level_format(d) for d in c.decomps), c.variant, c.remainder)


def family_of(formats: Iterable[Format], variant: str, remainder: str = "peel") -> Family:
    return (*formats, variant) + ((remainder,) if remainder != "peel" else ())
