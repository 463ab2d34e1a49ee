"""FlipGraphEngine: resumable, multi-core flip-graph search (Kauers & Moosbauer 2022).

The engine follows :class:`fmmforge.core.contracts.Engine`: ``run(request, events)``. The
parent process owns the policy: it verifies each scheme a walker reports (exactly,
:meth:`Decomposition.create`), keeps the merged pool at the best rank, forwards new bests to
the other walkers, tries to lift Z2 schemes to Z, reports new bests and new schemes at the
target rank through ``events.found`` as soon as they arrive (the caller stores them), and
writes the checkpoint (:mod:`~fmmforge.core.search.checkpoint`) at intervals. Walkers
(:mod:`~fmmforge.core.search.walker`) only walk; with ``workers > 1`` each runs in its own
process (:mod:`~fmmforge.core.search.workers`). Nothing here prints.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fmmforge.core.atomic import writable_target
from fmmforge.core.contracts import (
    FoundScheme,
    SearchEvents,
    SearchRequest,
    SearchResult,
    SearchSnapshot,
)
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.checkpoint import (
    ENGINE_NAME,
    Checkpoint,
    default_checkpoint,
    load_checkpoint,
    write_checkpoint,
)
from fmmforge.core.search.scheme import PackedScheme, pack
from fmmforge.core.search.walker import Found, WalkParams, Walker, splitmix64
from fmmforge.core.search.workers import WorkerPool

MAX_POOL = 1000  # distinct schemes the parent keeps at the best rank


class FlipGraphEngine:
    """Flip-graph local search over Z2 or Z, from any integral starting scheme.

    ``run`` walks until the target rank is reached or the budget is used up, and returns a
    :class:`~fmmforge.core.contracts.SearchResult`. ``params`` fixes every walk setting
    (default: :meth:`WalkParams.for_problem`, or the request's plateau and bound).
    """

    name = ENGINE_NAME
    description = "flip-graph local search (Kauers & Moosbauer): flips, reductions, plus transitions, pool"

    def __init__(self, params: WalkParams | None = None) -> None:
        self.params = params

    def run(self, request: SearchRequest, events: SearchEvents | None = None) -> SearchResult:
        field = check_field(request.field or request.start.field)
        if request.require_z and (field != "Z2" or request.target_rank is None):
            raise FmmforgeError("a Z scheme through lifting needs walks over Z2 and a target rank")
        return _Run(self.params, request, field, events or SearchEvents()).execute()


def walk_params(request: SearchRequest, packed: PackedScheme, field: str) -> WalkParams:
    """The walk settings for a request: by problem size, with its plateau and bound if given."""
    base = WalkParams.for_problem(packed.dims, packed.rank, field)
    if request.plateau is None and request.bound == 1:
        return base
    plateau = request.plateau or base.plateau
    return WalkParams(plateau=plateau, episode=plateau * 50, bound=request.bound, hard_bound=max(4, request.bound * 2))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, SIGTERM stops the search like Ctrl-C (what was found is kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Run:
    """The state of one call of FlipGraphEngine.run (parent side)."""

    def __init__(self, params: WalkParams | None, request: SearchRequest, field: str, events: SearchEvents) -> None:
        start = request.start
        self.request = request
        self.events = events
        self.target = start.target
        self.field = field
        self.target_rank = request.target_rank
        self.checkpoint_path = request.checkpoint or default_checkpoint(self.target, field, request.seed)
        self.history: list[tuple[int, float, int]] = []
        self.pool: dict[str, Decomposition] = {}  # fingerprint -> scheme at the best rank
        self.scores: dict[str, float] = {}
        self.lifted: Decomposition | None = None
        self.lift_tried: set[str] = set()
        self.lift_time: float | None = None
        self.reported_at_target = 0  # distinct schemes reported at the target rank (request.collect)
        self.t0 = time.monotonic()

        packed = pack(start, field)
        self.params = params or walk_params(request, packed, field)
        prior = load_checkpoint(self.checkpoint_path, self.target, field) if request.resume else Checkpoint([packed])
        self.epoch, self.prior_flips, self.prior_seconds = prior.epoch, prior.flips, prior.seconds
        self.history = list(prior.history)
        writable_target(self.checkpoint_path)  # a folder that is missing is refused before the walk
        # reduce the starting schemes once here (fast) so the start rank is known
        probe = Walker(field, tuple(self.target.tensor.shape), request.seed, self.params)
        probe.start(prior.schemes)
        self.start_rank = probe.best_rank if request.resume else packed.rank
        self.start_schemes = list(probe.pool)
        self.best_rank = probe.best_rank
        for s in self.start_schemes:
            d = s.to_decomposition(self.target)
            self.pool.setdefault(d.fingerprint, d)
        label = request.start_label or "given scheme"
        if request.resume:
            first = min(self.pool.values(), key=lambda d: d.rank)
            self.start_description = (f"checkpoint {self.checkpoint_path}: best scheme {first.fingerprint} "
                                      f"(rank {self.start_rank}, epoch {self.epoch})")
            self.start_label = f"checkpoint {self.checkpoint_path} (rank {self.start_rank})"
        else:
            if self.best_rank < self.start_rank:
                self.history.append((self.best_rank, 0.0, 0))
            self.start_description = f"{label} (rank {self.start_rank})"
            self.start_label = label

    # ------------------------------------------------------------------ checkpoint
    def _write_checkpoint(self, seconds: float, flips: int) -> None:
        write_checkpoint(self.checkpoint_path, self.target, self.field, self.request.seed,
                         target_rank=self.target_rank, best=[d for d in self.pool.values() if d.rank == self.best_rank],
                         epoch=self.epoch, flips=self.prior_flips + flips, seconds=self.prior_seconds + seconds,
                         history=self.history)

    # ------------------------------------------------------------------ found schemes
    def _score(self, d: Decomposition) -> float | None:
        scorer = self.request.scorer
        if scorer is None:
            return None
        if d.fingerprint not in self.scores:
            self.scores[d.fingerprint] = float(scorer(d))
        return self.scores[d.fingerprint]

    def _report(self, d: Decomposition, kind: str, seconds: float, flips: int, worker: int | None) -> None:
        self.events.report_found(FoundScheme(d, kind, round(self.prior_seconds + seconds, 3),
                                             int(self.prior_flips + flips), worker, self.epoch, self.start_label))

    def _try_lift(self, d: Decomposition, seconds: float, flips: int, worker: int | None) -> None:
        if not self.request.lift or d.field != "Z2" or d.fingerprint in self.lift_tried:
            return
        if self.lifted is not None and self.lifted.rank <= d.rank:
            return
        self.lift_tried.add(d.fingerprint)
        from fmmforge.core.search.lift import lift_to_z

        z = lift_to_z(d)
        if z is not None:
            self.lifted = z
            if self.target_rank is not None and z.rank <= self.target_rank and self.lift_time is None:
                self.lift_time = round(time.monotonic() - self.t0, 3)
            self._report(z, "lifted", seconds, flips, worker)

    @staticmethod
    def _cheap_lift(d: Decomposition) -> bool:
        a, b, c = d.target.tensor.shape
        return a * b * c * d.rank * (a + b + c) <= 2_000_000

    def handle(self, f: Found, worker: int | None, seconds: float, flips: int) -> Decomposition | None:
        """Verify a reported scheme; report it if it is a new best or new at the target rank."""
        d = f.scheme.to_decomposition(self.target)  # exact check: raises on a bug, never passes junk on
        at_target = self.target_rank is not None and f.rank <= self.target_rank
        if f.rank < self.best_rank:
            self.best_rank = f.rank
            self.pool = {d.fingerprint: d}
            self.history.append((f.rank, round(seconds, 3), int(flips)))
            self._report(d, "best", seconds, flips, worker)
            if self._cheap_lift(d) or at_target:
                self._try_lift(d, seconds, flips, worker)
            return d
        if f.rank == self.best_rank and d.fingerprint not in self.pool:
            if len(self.pool) < MAX_POOL:
                self.pool[d.fingerprint] = d
            if at_target:
                self.reported_at_target += 1
                self._report(d, "target", seconds, flips, worker)
                self._try_lift(d, seconds, flips, worker)
            return d
        return None

    def best(self) -> tuple[Decomposition, float | None]:
        cands = [d for d in self.pool.values() if d.rank == self.best_rank]
        if self.request.scorer is None:
            return cands[0], None
        scored = [(self._score(d), i, d) for i, d in enumerate(cands)]
        s, _, d = max(scored, key=lambda x: (x[0], -x[1]))
        return d, s

    def done(self, seconds: float, flips: int) -> bool:
        if self.request.collect and self.best_rank <= self.target_rank:  # type: ignore[operator]
            return self.reported_at_target >= self.request.collect or self.request.budget.exhausted(seconds, flips)
        if self.request.require_z:
            if self.lifted is not None and self.lifted.rank <= self.target_rank:  # type: ignore[operator]
                return True
        elif self.target_rank is not None and self.best_rank <= self.target_rank:
            return True
        return self.request.budget.exhausted(seconds, flips)

    def _progress(self, seconds: float, flips: int) -> None:
        if self.events.progress is not None:
            self.events.report_progress(SearchSnapshot(
                self.target.describe(), self.field, seconds, flips, self.best_rank, self.target_rank,
                sum(1 for d in self.pool.values() if d.rank == self.best_rank)))

    # ------------------------------------------------------------------ running
    def _make_walker(self, wid: int) -> Walker:
        scorer = None
        if self.request.scorer is not None:
            reward, target = self.request.scorer, self.target
            scorer = lambda s: float(reward(s.to_decomposition(target)))  # noqa: E731
        seed = splitmix64((self.request.seed * 1_000_003 + wid) ^ (self.epoch << 40))
        walker = Walker(self.field, tuple(self.target.tensor.shape), seed, self.params, scorer)
        if scorer is None and self.target_rank is not None:
            # without rewards the parent needs only the schemes at the target rank (to report / lift)
            walker.report_pool_max_rank = self.target_rank
        return walker

    def execute(self) -> SearchResult:
        t0 = self.t0 = time.monotonic()
        interrupted = False
        flips = [0]  # the walk loops update it, so an interrupted walk still counts its flips
        try:
            with sigterm_as_interrupt():
                if not self.done(0.0, 0):
                    if self.request.workers == 1:
                        self._run_inline(t0, flips)
                    else:
                        self._run_processes(t0, flips)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            seconds = time.monotonic() - t0
            self._write_checkpoint(seconds, flips[0])
        best, score = self.best()
        if not interrupted and best.field == "Z2":
            self._try_lift(best, seconds, flips[0], None)
        if self.request.scorer is not None and not interrupted:
            self._report(best, "result", seconds, flips[0], None)
        return SearchResult(
            best=best, start_rank=self.start_rank, target_rank=self.target_rank, flips=flips[0],
            seconds=seconds, workers=self.request.workers, seed=self.request.seed, history=list(self.history),
            pool_size=len(self.pool), score=score, lifted=self.lifted, interrupted=interrupted,
            checkpoint=self.checkpoint_path, lift_time=self.lift_time, start_description=self.start_description,
        )

    def _checkpointer(self) -> Callable[[float, int], None]:
        """Writes the checkpoint when ``checkpoint_every`` seconds have passed since the last one."""
        last = [time.monotonic()]

        def maybe(seconds: float, flips: int) -> None:
            if time.monotonic() - last[0] > self.request.checkpoint_every:
                self._write_checkpoint(seconds, flips)
                last[0] = time.monotonic()

        return maybe

    def _run_inline(self, t0: float, flips: list[int]) -> None:
        walker = self._make_walker(0)
        walker.start(self.start_schemes)
        budget = self.request.budget
        checkpoint = self._checkpointer()
        chunk = 2000
        while not self.done(time.monotonic() - t0, flips[0]):
            if budget.flips is not None:
                chunk = max(1, min(chunk, budget.flips - flips[0]))
            c0 = time.perf_counter()
            found = walker.advance(chunk)
            dt = time.perf_counter() - c0
            flips[0] = walker.flips
            seconds = time.monotonic() - t0
            for f in found:
                self.handle(f, 0, seconds, flips[0])
            chunk = max(1000, min(chunk * 4, int(chunk * 0.1 / dt))) if dt > 0 else chunk * 2
            self._progress(seconds, flips[0])
            checkpoint(seconds, flips[0])

    def _run_processes(self, t0: float, flips: list[int]) -> None:
        walkers = [self._make_walker(wid) for wid in range(self.request.workers)]
        checkpoint = self._checkpointer()
        pool = WorkerPool(walkers, self.start_schemes)

        def late(wid: int, f: Found) -> None:  # found before a worker saw the stop
            self.handle(f, wid, time.monotonic() - t0, pool.flips)

        pool.on_late = late
        try:
            with pool:
                for got in pool.messages():
                    flips[0] = pool.flips
                    seconds = time.monotonic() - t0
                    if got is not None:
                        wid, f = got
                        if self.handle(f, wid, seconds, flips[0]) is not None:
                            pool.forward(wid, f.scheme)
                    if self.done(seconds, flips[0]):
                        break
                    self._progress(seconds, flips[0])
                    checkpoint(seconds, flips[0])
        finally:
            flips[0] = pool.flips
