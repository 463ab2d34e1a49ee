"""FlipGraphEngine: resumable, multi-core flip-graph search (Kauers & Moosbauer 2022).

The parent process owns everything durable: it verifies each scheme a walker reports
(exactly, :meth:`Decomposition.create`), stores new bests and new schemes at the target rank as
soon as they arrive, keeps the merged pool at the best rank, forwards new bests to the other
walkers, tries to lift Z2 schemes to Z, and writes the checkpoint atomically at intervals.
Walkers (:mod:`fmmforge.core.search.walker`) only walk; with ``workers > 1`` each runs in its
own process and talks to the parent through queues.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmmforge.core.atomic import home_subdir, writable_target, write_text
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.budget import Budget
from fmmforge.core.search.scheme import PackedScheme, pack
from fmmforge.core.search.walker import Found, WalkParams, Walker, splitmix64
from fmmforge.core.tensor import BilinearTarget

Reward = Callable[[Decomposition], float]
CHECKPOINT_VERSION = 1
ENGINE_NAME = "flip"


@dataclass(frozen=True)
class StoredScheme:
    id: int
    fingerprint: str
    rank: int
    field: str
    inserted: bool
    kind: str  # "best", "target", "lifted", "result"


@dataclass
class SearchResult:
    best: Decomposition
    start_rank: int
    target_rank: int | None
    flips: int
    seconds: float
    workers: int
    seed: int
    history: list[tuple[int, float, int]] = field(default_factory=list)  # (rank, seconds, flips) of each new best
    stored: list[StoredScheme] = field(default_factory=list)
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


def default_checkpoint(target: BilinearTarget, field: str, seed: int) -> Path:
    """$FMMFORGE_HOME/checkpoints/flip-FORMAT-FIELD-seedS.json (the folder is created)."""
    what = target.describe().strip("<>").replace(",", "x") if target.format else target.digest
    return home_subdir("checkpoints") / f"flip-{what}-{field}-seed{seed}.json"


def _atomic_write_json(path: Path, doc: dict) -> None:
    write_text(path, json.dumps(doc))


def discard_unread(queues: list[Any]) -> None:
    """Close multiprocessing queues whose unread content nobody will read, without joining their
    feeder threads: a feeder blocked on a full pipe would otherwise hang interpreter exit."""
    for q in queues:
        q.cancel_join_thread()
        q.close()


# ====================================================================== worker process
def _worker_main(wid: int, walker: Walker, schemes: list[PackedScheme], out_q: Any, in_q: Any,
                 stop: Any, chunk: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        walker.start(schemes)
        last = 0.0
        while not stop.is_set():
            while True:
                try:
                    walker.offer(in_q.get_nowait())
                except queue.Empty:
                    break
            t0 = time.perf_counter()
            for f in walker.advance(chunk):
                out_q.put(("found", wid, f))
            dt = time.perf_counter() - t0
            chunk = max(1000, min(chunk * 4, int(chunk * 0.2 / dt))) if dt > 0 else chunk * 2
            now = time.monotonic()
            if now - last > 0.25:
                out_q.put(("progress", wid, walker.flips, walker.best_rank))
                last = now
        out_q.put(("progress", wid, walker.flips, walker.best_rank))
    except BaseException as exc:  # report, never hang the parent
        out_q.put(("error", wid, f"{type(exc).__name__}: {exc}"))


# ====================================================================== engine
class FlipGraphEngine:
    """Flip-graph local search over Z2 or Z, from any integral starting scheme.

    ``run`` walks until the target rank is reached or the budget is used up, and returns a
    :class:`SearchResult`; every new best (and every new scheme at the target rank) is
    verified and stored on arrival when a store is given.
    """

    name = ENGINE_NAME
    description = "flip-graph local search (Kauers & Moosbauer): flips, reductions, plus transitions, pool"

    def __init__(self, params: WalkParams | None = None, *, checkpoint_every: float = 10.0,
                 lift: bool = True, progress: bool = False, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.params = params
        self.checkpoint_every = checkpoint_every
        self.lift = lift
        self.progress = progress
        self.on_event = on_event

    def configured(self, params: WalkParams | None = None, *, lift: bool = True, progress: bool = False) -> "FlipGraphEngine":
        """A copy with the command line's walk settings (the registered plugin uses the defaults)."""
        return FlipGraphEngine(params, checkpoint_every=self.checkpoint_every, lift=lift, progress=progress,
                               on_event=self.on_event)

    # ------------------------------------------------------------------ public
    def run(
        self,
        start: Decomposition,
        *,
        field: str | None = None,
        target_rank: int | None = None,
        budget: Budget = Budget(),
        workers: int = 1,
        seed: int = 0,
        reward: Reward | None = None,
        store: Any = None,
        checkpoint: Path | str | None = None,
        resume: bool = False,
        start_label: str = "",
        require_z: bool = False,
    ) -> SearchResult:
        field = check_field(field or start.field)
        if workers < 1:
            raise FmmforgeError(f"--workers must be at least 1, not {workers}")
        if target_rank is not None and target_rank < 1:
            raise FmmforgeError(f"--rank must be a positive number of products, not {target_rank}")
        if budget.seconds is None and budget.flips is None and target_rank is None:
            raise FmmforgeError("give a target rank (--rank) or a budget (--budget 2m / --flips 10M)")
        if require_z and (field != "Z2" or target_rank is None):
            raise FmmforgeError("lifting to a Z target needs --field Z2 walks and a target rank")
        run = _Run(self, start, field, target_rank, budget, workers, seed, reward, store,
                   Path(checkpoint) if checkpoint else None, resume, start_label)
        run.require_z = require_z
        return run.execute()


class _Run:
    """The state of one call of FlipGraphEngine.run (parent side)."""

    def __init__(self, engine: FlipGraphEngine, start: Decomposition, field: str, target_rank: int | None,
                 budget: Budget, workers: int, seed: int, reward: Reward | None, store: Any,
                 checkpoint: Path | None, resume: bool, start_label: str) -> None:
        self.engine = engine
        self.target = start.target
        self.field = field
        self.target_rank = target_rank
        self.budget = budget
        self.workers = workers
        self.seed = seed
        self.reward = reward
        self.store = store
        self.start_label = start_label or "given scheme"
        self.checkpoint_path = checkpoint or default_checkpoint(self.target, field, seed)
        self.epoch = 0
        self.prior_flips = 0
        self.prior_seconds = 0.0
        self.history: list[tuple[int, float, int]] = []
        self.stored: list[StoredScheme] = []
        self.pool: dict[str, Decomposition] = {}  # fingerprint -> scheme at the best rank
        self.scores: dict[str, float] = {}
        self.lifted: Decomposition | None = None
        self.lift_tried: set[str] = set()
        self.require_z = False
        self.lift_time: float | None = None
        self.t0 = time.monotonic()

        packed = pack(start, field)
        start_schemes = [packed]
        if resume:
            start_schemes = self._load_checkpoint()
        writable_target(self.checkpoint_path)  # a folder that is missing is refused before the walk
        # reduce the starting schemes once here (fast) so the start rank is known
        probe = Walker(field, tuple(self.target.tensor.shape), seed, self._params(packed))
        probe.start(start_schemes)
        self.start_rank = pack(start, field).rank if not resume else probe.best_rank
        self.start_schemes = list(probe.pool)
        self.best_rank = probe.best_rank
        for s in self.start_schemes:
            d = s.to_decomposition(self.target)
            self.pool.setdefault(d.fingerprint, d)
        if not resume and self.best_rank < self.start_rank:
            self.history.append((self.best_rank, 0.0, 0))
        if resume:
            first = min(self.pool.values(), key=lambda d: d.rank)
            self.start_description = (f"checkpoint {self.checkpoint_path}: best scheme {first.fingerprint} "
                                      f"(rank {self.start_rank}, epoch {self.epoch})")
            self.start_label = f"checkpoint {self.checkpoint_path} (rank {self.start_rank})"
        else:
            self.start_description = f"{self.start_label} (rank {self.start_rank})"
        self.flips_by_worker: dict[int, int] = {}

    def _params(self, packed: PackedScheme) -> WalkParams:
        return self.engine.params or WalkParams.for_problem(packed.dims, packed.rank, self.field)

    # ------------------------------------------------------------------ checkpoint
    def _load_checkpoint(self) -> list[PackedScheme]:
        path = self.checkpoint_path
        if not path.exists():
            raise FmmforgeError(f"no checkpoint at {path}; run once without --resume (or give --checkpoint FILE)")
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != CHECKPOINT_VERSION or doc.get("engine") != ENGINE_NAME:
                raise ValueError("not a flip-engine checkpoint of this version")
            if doc["target"] != self.target.digest or doc["field"] != self.field:
                raise FmmforgeError(
                    f"checkpoint {path} is for {doc.get('describe')} over {doc['field']}, not "
                    f"{self.target.describe()} over {self.field}; give the same format and --field"
                )
            schemes = [PackedScheme.from_json(s) for s in doc["pool"]]
        except FmmforgeError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise FmmforgeError(f"checkpoint {path} is unreadable ({exc}); delete it or run without --resume") from None
        if not schemes:
            raise FmmforgeError(f"checkpoint {path} holds no scheme; run without --resume")
        self.epoch = int(doc.get("epoch", 0)) + 1
        self.prior_flips = int(doc.get("flips", 0))
        self.prior_seconds = float(doc.get("seconds", 0.0))
        self.history = [tuple(h) for h in doc.get("history", [])]  # type: ignore[misc]
        return schemes

    def _write_checkpoint(self, seconds: float, flips: int) -> None:
        best = [d for d in self.pool.values() if d.rank == self.best_rank][: 200]
        doc = {
            "version": CHECKPOINT_VERSION, "engine": ENGINE_NAME, "target": self.target.digest,
            "describe": self.target.describe(), "field": self.field, "seed": self.seed,
            "target_rank": self.target_rank, "best_rank": self.best_rank, "epoch": self.epoch,
            "flips": self.prior_flips + flips, "seconds": self.prior_seconds + seconds,
            "history": [list(h) for h in self.history],
            "pool": [pack(d, self.field).to_json() for d in best],
        }
        _atomic_write_json(self.checkpoint_path, doc)

    # ------------------------------------------------------------------ found schemes
    def _score(self, d: Decomposition) -> float | None:
        if self.reward is None:
            return None
        if d.fingerprint not in self.scores:
            self.scores[d.fingerprint] = float(self.reward(d))
        return self.scores[d.fingerprint]

    def _store(self, d: Decomposition, kind: str, seconds: float, flips: int, worker: int | None) -> None:
        if self.store is None:
            return
        from fmmforge.core.store import Provenance

        params = {
            "format": d.target.describe(), "field": d.field, "start": self.start_label,
            "target_rank": self.target_rank, "flips": int(self.prior_flips + flips),
            "seconds": round(self.prior_seconds + seconds, 3), "worker": worker, "kind": kind,
            "epoch": self.epoch,
        }
        res = self.store.add(d, Provenance(source="search", engine=ENGINE_NAME, seed=self.seed, params=params))
        self.stored.append(StoredScheme(res.id, res.fingerprint, d.rank, d.field, res.inserted, kind))

    def _try_lift(self, d: Decomposition, seconds: float, flips: int, worker: int | None) -> None:
        if not self.engine.lift or d.field != "Z2" or d.fingerprint in self.lift_tried:
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
            self._store(z, "lifted", seconds, flips, worker)
            self._event("lifted", rank=z.rank)

    @staticmethod
    def _cheap_lift(d: Decomposition) -> bool:
        a, b, c = d.target.tensor.shape
        return a * b * c * d.rank * (a + b + c) <= 2_000_000

    def handle(self, f: Found, worker: int | None, seconds: float, flips: int) -> Decomposition | None:
        """Verify a reported scheme; store it if it is a new best or new at the target rank."""
        d = f.scheme.to_decomposition(self.target)  # exact check: raises on a bug, never stores junk
        if f.rank < self.best_rank:
            self.best_rank = f.rank
            self.pool = {d.fingerprint: d}
            self.history.append((f.rank, round(seconds, 3), int(flips)))
            self._store(d, "best", seconds, flips, worker)
            self._event("best", rank=f.rank, seconds=seconds, flips=flips)
            if self._cheap_lift(d) or (self.target_rank is not None and f.rank <= self.target_rank):
                self._try_lift(d, seconds, flips, worker)
            return d
        if f.rank == self.best_rank and d.fingerprint not in self.pool:
            if len(self.pool) < 1000:
                self.pool[d.fingerprint] = d
            if self.target_rank is not None and f.rank <= self.target_rank:
                self._store(d, "target", seconds, flips, worker)
                self._try_lift(d, seconds, flips, worker)
            return d
        return None

    def _event(self, kind: str, **info: Any) -> None:
        if self.engine.on_event is not None:
            self.engine.on_event(kind, info)

    def best(self) -> tuple[Decomposition, float | None]:
        cands = [d for d in self.pool.values() if d.rank == self.best_rank]
        if self.reward is None:
            return cands[0], None
        scored = [(self._score(d), i, d) for i, d in enumerate(cands)]
        s, _, d = max(scored, key=lambda x: (x[0], -x[1]))
        return d, s

    def done(self, seconds: float, flips: int) -> bool:
        if self.require_z:
            if self.lifted is not None and self.lifted.rank <= self.target_rank:  # type: ignore[operator]
                return True
        elif self.target_rank is not None and self.best_rank <= self.target_rank:
            return True
        return self.budget.exhausted(seconds, flips)

    # ------------------------------------------------------------------ running
    def _make_walker(self, wid: int) -> Walker:
        scorer = None
        if self.reward is not None:
            reward, target = self.reward, self.target
            scorer = lambda s: float(reward(s.to_decomposition(target)))  # noqa: E731
        seed = splitmix64((self.seed * 1_000_003 + wid) ^ (self.epoch << 40))
        walker = Walker(self.field, tuple(self.target.tensor.shape), seed, self._params(self.start_schemes[0]), scorer)
        if self.reward is None and self.target_rank is not None:
            # without rewards the parent needs only the schemes at the target rank (to store / lift)
            walker.report_pool_max_rank = self.target_rank
        return walker

    def execute(self) -> SearchResult:
        t0 = self.t0 = time.monotonic()
        interrupted = False
        progress = _Progress(self) if self.engine.progress else None
        old_term = None
        if threading.current_thread() is threading.main_thread():
            def _term(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt
            old_term = signal.signal(signal.SIGTERM, _term)
        state = {"flips": 0}
        try:
            if progress:
                progress.start()
            if not self.done(0.0, 0):
                if self.workers == 1:
                    self._run_inline(t0, state, progress)
                else:
                    self._run_processes(t0, state, progress)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if progress:
                progress.stop()
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            seconds = time.monotonic() - t0
            self._write_checkpoint(seconds, state["flips"])
        best, score = self.best()
        if not interrupted and best.field == "Z2":
            self._try_lift(best, seconds, state["flips"], None)
        if self.reward is not None and self.store is not None and not interrupted:
            self._store(best, "result", seconds, state["flips"], None)
        return SearchResult(
            best=best, start_rank=self.start_rank, target_rank=self.target_rank, flips=state["flips"],
            seconds=seconds, workers=self.workers, seed=self.seed, history=list(self.history),
            stored=list(self.stored), pool_size=len(self.pool), score=score, lifted=self.lifted,
            interrupted=interrupted, checkpoint=self.checkpoint_path, lift_time=self.lift_time,
            start_description=self.start_description,
        )

    def _run_inline(self, t0: float, state: dict, progress: "_Progress | None") -> None:
        walker = self._make_walker(0)
        walker.start(self.start_schemes)
        chunk = 2000
        last_ckpt = time.monotonic()
        while True:
            seconds = time.monotonic() - t0
            if self.done(seconds, state["flips"]):
                return
            if self.budget.flips is not None:
                chunk = max(1, min(chunk, self.budget.flips - state["flips"]))
            c0 = time.perf_counter()
            found = walker.advance(chunk)
            dt = time.perf_counter() - c0
            state["flips"] = walker.flips
            seconds = time.monotonic() - t0
            for f in found:
                self.handle(f, 0, seconds, state["flips"])
            chunk = max(1000, min(chunk * 4, int(chunk * 0.1 / dt))) if dt > 0 else chunk * 2
            if progress:
                progress.update(seconds, state["flips"])
            if time.monotonic() - last_ckpt > self.engine.checkpoint_every:
                self._write_checkpoint(seconds, state["flips"])
                last_ckpt = time.monotonic()

    def _run_processes(self, t0: float, state: dict, progress: "_Progress | None") -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        out_q = ctx.Queue()
        stop = ctx.Event()
        inboxes = [ctx.Queue() for _ in range(self.workers)]
        procs = []
        for wid in range(self.workers):
            p = ctx.Process(target=_worker_main, daemon=True,
                            args=(wid, self._make_walker(wid), self.start_schemes, out_q, inboxes[wid], stop, 2000))
            p.start()
            procs.append(p)
        flips_by = {wid: 0 for wid in range(self.workers)}
        last_ckpt = time.monotonic()

        def handle_msg(msg: tuple, forward: bool = True) -> None:
            kind, wid = msg[0], msg[1]
            if kind == "found":
                f: Found = msg[2]
                seconds = time.monotonic() - t0
                d = self.handle(f, wid, seconds, state["flips"])
                if d is not None and forward:
                    for other, box in enumerate(inboxes):
                        if other != wid:
                            box.put(f.scheme)
            elif kind == "progress":
                flips_by[wid] = msg[2]
                state["flips"] = sum(flips_by.values())
            elif kind == "error":
                raise FmmforgeError(f"search worker {wid} failed: {msg[2]}")

        try:
            while True:
                seconds = time.monotonic() - t0
                if self.done(seconds, state["flips"]):
                    break
                if not any(p.is_alive() for p in procs):
                    raise FmmforgeError("all search workers stopped unexpectedly")
                try:
                    handle_msg(out_q.get(timeout=0.1))
                except queue.Empty:
                    pass
                if progress:
                    progress.update(time.monotonic() - t0, state["flips"])
                if time.monotonic() - last_ckpt > self.engine.checkpoint_every:
                    self._write_checkpoint(time.monotonic() - t0, state["flips"])
                    last_ckpt = time.monotonic()
        finally:
            stop.set()
            # Schemes still queued for the workers will never be read: drop them rather than let
            # the queues' feeder threads block at interpreter exit on pipes nobody drains (a
            # search that broadcast many pool schemes near its end hung there).
            discard_unread(inboxes)
            # keep what the workers found before they saw the stop (no forwarding any more)
            deadline = time.monotonic() + 3.0
            while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
                try:
                    msg = out_q.get(timeout=0.05)
                    if msg[0] != "error":
                        handle_msg(msg, forward=False)
                except queue.Empty:
                    pass
            while True:
                try:
                    msg = out_q.get_nowait()
                    if msg[0] != "error":
                        handle_msg(msg, forward=False)
                except (queue.Empty, OSError, ValueError):
                    break
            for p in procs:
                p.join(timeout=1.0)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=1.0)
            discard_unread([out_q])


class _Progress:
    """A one-line rich progress display on stderr: best rank, flips/s, pool size, elapsed."""

    def __init__(self, run: _Run) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.run = run
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task(self._text(0.0, 0))
        self.last = 0.0

    def _text(self, seconds: float, flips: int) -> str:
        target = f" (target {self.run.target_rank})" if self.run.target_rank is not None else ""
        rate = flips / seconds if seconds > 0 else 0.0
        n_best = sum(1 for d in self.run.pool.values() if d.rank == self.run.best_rank)
        return (f"{self.run.target.describe()} {self.run.field}: best rank {self.run.best_rank}{target} | "
                f"{rate / 1e6:.2f}M flips/s | {n_best} at best rank | {flips:,} flips")

    def start(self) -> None:
        self.bar.start()

    def update(self, seconds: float, flips: int) -> None:
        if seconds - self.last >= 0.2:
            self.bar.update(self.task, description=self._text(seconds, flips))
            self.last = seconds

    def stop(self) -> None:
        self.bar.stop()
