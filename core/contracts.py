"""What a search engine, a reward and a codegen backend are: typed Protocols and the data they
exchange.

This module sits between the model (decompositions, stores, formats) and the subsystems that
use it: search engines implement :class:`Engine`, rewards implement :class:`Reward`, codegen
backends implement :class:`Backend`, and the application (the CLI, the demo, or any Python
caller) talks to them only through these types. It imports the model only: no torch, no
plugins, no terminal.

One name per concept:

* :class:`Reward` -- a plugin object that scores a verified decomposition for a
  :class:`RewardContext` (``score(decomposition, context)``, higher is better).
* :data:`Scorer` -- a reward bound to its context: a plain ``decomposition -> float`` callable,
  which is what a search engine receives in :class:`SearchRequest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

Size = tuple[int, int, int]
Scorer = Callable[[Decomposition], float]


# ====================================================================== rewards
@dataclass(frozen=True)
class RewardContext:
    """Where and how the algorithm would run. Frozen and hashable: it is part of cache keys.

    ``size`` is (M, K, N) for an M×K by K×N product; ``None`` fields mean "not given" and a
    reward that needs one says so.
    """

    device: str | None = None
    size: Size | None = None
    dtype: str | None = None
    levels: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise FmmforgeError(f"levels must be a positive integer, not {self.levels!r}")
        if self.size is not None and (
            len(self.size) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in self.size)
        ):
            raise FmmforgeError(f"size must be three positive integers M,K,N, not {self.size!r}")

    def require_size(self, who: str) -> Size:
        if self.size is None:
            raise FmmforgeError(f"reward {who} needs a matrix size; pass --size N (or M,K,N)")
        return self.size

    def require_device(self, who: str, hint: str = "") -> str:
        if not self.device:
            raise FmmforgeError(f"reward {who} needs a device; pass --device{(' ' + hint) if hint else ''}")
        return self.device


@dataclass(frozen=True)
class RewardResult:
    """A score and the parts it was computed from (shown by ``fmmforge score``)."""

    value: float
    parts: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    """What a reward plugin registers: ``cheap`` rewards may be called at every search step;
    the others (measured ones) only on finished candidates, with results cached."""

    name: str
    description: str
    cheap: bool

    def score(self, decomposition: Decomposition, context: RewardContext) -> RewardResult | float:
        ...


# ====================================================================== search
@dataclass(frozen=True)
class Budget:
    """When a search stops at the latest: after ``seconds`` and/or after ``flips`` moves."""

    seconds: float | None = None
    flips: int | None = None

    def describe(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        if self.flips is not None:
            parts.append(f"{self.flips:,} flips")
        return " or ".join(parts) or "unlimited"

    def exhausted(self, seconds: float, flips: int) -> bool:
        return (self.seconds is not None and seconds >= self.seconds) or (
            self.flips is not None and flips >= self.flips
        )

    @property
    def unlimited(self) -> bool:
        return self.seconds is None and self.flips is None


@dataclass(frozen=True)
class SearchRequest:
    """Everything a search is asked to do. Checked on construction (one clear error per field).

    ``field`` defaults to the starting scheme's; ``require_z`` asks for a scheme over Z of
    ``target_rank`` reached by walking over Z2 and lifting; ``plateau`` and ``bound`` tune the
    walk (None / 1: chosen by problem size); ``checkpoint`` None means the engine's default file.
    ``collect`` > 0 keeps the search going once the target rank is reached, until that many
    distinct schemes at the target rank have been reported (kind "target") or the budget ends:
    what a tuner wants, many algorithms of one rank to choose from by their cost on a device.
    """

    start: Decomposition
    field: str | None = None
    target_rank: int | None = None
    budget: Budget = Budget()
    workers: int = 1
    seed: int = 0
    scorer: Scorer | None = None
    checkpoint: Path | None = None
    resume: bool = False
    start_label: str = ""
    require_z: bool = False
    lift: bool = True
    plateau: int | None = None
    bound: int = 1
    checkpoint_every: float = 10.0
    collect: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.start, Decomposition):
            raise FmmforgeError(f"a search starts from a Decomposition, not {type(self.start).__name__}")
        if self.workers < 1:
            raise FmmforgeError(f"workers must be at least 1, not {self.workers}")
        if self.target_rank is not None and self.target_rank < 1:
            raise FmmforgeError(f"the target rank must be a positive number of products, not {self.target_rank}")
        if self.budget.unlimited and self.target_rank is None:
            raise FmmforgeError("a search needs a target rank or a budget (seconds or flips); give one")
        if self.plateau is not None and self.plateau < 1:
            raise FmmforgeError(f"the plateau must be a positive number of flips, not {self.plateau}")
        if self.bound < 1:
            raise FmmforgeError(f"the coefficient bound must be at least 1, not {self.bound}")
        if self.collect < 0:
            raise FmmforgeError(f"collect must be a number of schemes >= 0, not {self.collect}")
        if self.collect and self.target_rank is None:
            raise FmmforgeError("collecting schemes needs a target rank to collect them at; give one")
        if self.checkpoint_every <= 0:
            raise FmmforgeError(f"checkpoints are written every positive number of seconds, not {self.checkpoint_every}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, Path):
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))


@dataclass(frozen=True)
class SearchSnapshot:
    """Where a running search stands (what a progress display shows)."""

    target: str  # the format, e.g. "<3,3,3>"
    field: str
    seconds: float
    flips: int
    best_rank: int
    target_rank: int | None
    at_best_rank: int  # distinct schemes kept at the best rank

    @property
    def flips_per_second(self) -> float:
        return self.flips / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class FoundScheme:
    """A verified scheme an engine reports while it runs.

    ``kind``: "best" (a new best rank), "target" (another scheme at the target rank),
    "lifted" (a Z scheme lifted from a Z2 one) or "result" (the reward's choice at the end).
    ``flips`` and ``seconds`` count from the first run of a resumed search; ``start`` says
    what the walk started from.
    """

    decomposition: Decomposition
    kind: str
    seconds: float
    flips: int
    worker: int | None
    epoch: int
    start: str


@dataclass(frozen=True)
class SearchEvents:
    """Optional callbacks a caller hands to :meth:`Engine.run`; all run in the caller's process.

    ``progress(snapshot)`` is called often (throttle in the callback); ``found(scheme)`` once per
    reported scheme, e.g. to store it. A callback that raises KeyboardInterrupt stops the
    search like Ctrl-C (what was found is kept and checkpointed).
    """

    progress: Callable[[SearchSnapshot], None] | None = None
    found: Callable[[FoundScheme], None] | None = None

    def report_progress(self, snapshot: SearchSnapshot) -> None:
        if self.progress is not None:
            self.progress(snapshot)

    def report_found(self, scheme: FoundScheme) -> None:
        if self.found is not None:
            self.found(scheme)


@dataclass
class SearchResult:
    """What a search returns. ``best`` is verified; ``history`` lists (rank, seconds, flips) of each new best."""

    best: Decomposition
    start_rank: int
    target_rank: int | None
    flips: int = 0
    seconds: float = 0.0
    workers: int = 1
    seed: int = 0
    history: list[tuple[int, float, int]] = field(default_factory=list)
    pool_size: int = 1
    score: float | None = None
    lifted: Decomposition | None = None
    interrupted: bool = False
    checkpoint: Path | None = None
    lift_time: float | None = None  # seconds until a lifted Z scheme reached the target rank
    start_description: str = ""  # what the walk started from, in words (a resumed run: its checkpoint)

    @property
    def reached(self) -> bool:
        return self.target_rank is not None and self.best.rank <= self.target_rank

    @property
    def flips_per_second(self) -> float:
        return self.flips / self.seconds if self.seconds > 0 else 0.0

    def time_to_rank(self, rank: int) -> float | None:
        for r, t, _ in self.history:
            if r <= rank:
                return t
        return None


@runtime_checkable
class Engine(Protocol):
    """A search engine: proposes decompositions for ``request``, reports through ``events``.

    It verifies every scheme it reports or returns, asks ``request.scorer`` (if any) which of
    equally good schemes it prefers, never measures hardware and never prints.
    """

    name: str
    description: str

    def run(self, request: SearchRequest, events: SearchEvents | None = None) -> SearchResult:
        ...


# ====================================================================== codegen backends
@runtime_checkable
class Backend(Protocol):
    """A code-generation backend: turns a plan into source code and a callable kernel.

    ``devices`` are the device kinds it emits kernels for; ``emit(plan, schemes)`` gets a plan
    (fmmforge.codegen.plan.Plan) and its exactly verified schemes, one per level, and returns a
    kernel (fmmforge.codegen.kernel.Kernel). Those types live on the subsystem floor above this
    one, so they are not named here; fmmforge.codegen.backends.CodegenBackend is the base class
    the built-in backends share (I/O helpers, vendor baseline, the layouts each emits).
    """

    name: str
    description: str
    devices: tuple[str, ...]

    def emit(self, plan: Any, schemes: Any) -> Any:
        """Generate the kernel for ``plan`` using the verified ``schemes`` (one per level)."""
        ...
