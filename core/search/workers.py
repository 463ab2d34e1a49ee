"""The flip engine's worker processes: each runs one walker and talks to the parent through queues.

A worker only walks: it reports ("found", wid, Found), ("progress", wid, flips, best_rank) and,
if it fails, ("error", wid, text); it adopts schemes the parent forwards from other workers.
The parent decides when to stop (workers ignore SIGINT) and verifies everything they report.
"""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.scheme import PackedScheme
from fmmforge.core.search.walker import Found, Walker

Message = tuple[Any, ...]


def discard_unread(queues: list[Any]) -> None:
    """Close multiprocessing queues whose unread content nobody will read, without joining their
    feeder threads: a feeder blocked on a full pipe would otherwise hang interpreter exit."""
    for q in queues:
        q.cancel_join_thread()
        q.close()


def worker_main(wid: int, walker: Walker, schemes: list[PackedScheme], out_q: Any, in_q: Any,
                stop: Any, chunk: int) -> None:
    """The body of one worker process: walk in slices of about 0.2 s until ``stop`` is set."""
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


class WorkerPool:
    """Worker processes for the given walkers; :meth:`messages` yields what they report.

    Use as a context manager: leaving it stops the workers, keeps what they found before they
    saw the stop (through ``on_late``), and never blocks on queues nobody reads.
    """

    def __init__(self, walkers: list[Walker], schemes: list[PackedScheme], chunk: int = 2000) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.out_q = ctx.Queue()
        self.stop = ctx.Event()
        self.inboxes = [ctx.Queue() for _ in walkers]
        self.flips_by = {wid: 0 for wid in range(len(walkers))}
        self.on_late: Callable[[int, Found], None] | None = None
        self.procs = []
        for wid, walker in enumerate(walkers):
            p = ctx.Process(target=worker_main, daemon=True,
                            args=(wid, walker, schemes, self.out_q, self.inboxes[wid], self.stop, chunk))
            p.start()
            self.procs.append(p)

    @property
    def flips(self) -> int:
        return sum(self.flips_by.values())

    def forward(self, source: int, scheme: PackedScheme) -> None:
        """Hand a scheme from worker ``source`` to every other worker."""
        for other, box in enumerate(self.inboxes):
            if other != source:
                box.put(scheme)

    def messages(self, timeout: float = 0.1) -> Iterator[tuple[int, Found] | None]:
        """(worker, found) for each scheme reported; None when ``timeout`` passes without one."""
        while True:
            if not any(p.is_alive() for p in self.procs):
                raise FmmforgeError("all search workers stopped unexpectedly")
            try:
                got = self._take(self.out_q.get(timeout=timeout))
            except queue.Empty:
                got = None
            yield got

    def _take(self, msg: Message) -> tuple[int, Found] | None:
        kind, wid = msg[0], msg[1]
        if kind == "found":
            return wid, msg[2]
        if kind == "progress":
            self.flips_by[wid] = msg[2]
        elif kind == "error":
            raise FmmforgeError(f"search worker {wid} failed: {msg[2]}")
        return None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        # Schemes still queued for the workers will never be read: drop them rather than let
        # the queues' feeder threads block at interpreter exit on pipes nobody drains (a
        # search that broadcast many pool schemes near its end hung there).
        discard_unread(self.inboxes)
        # keep what the workers found before they saw the stop (no forwarding any more)
        deadline = time.monotonic() + 3.0
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            try:
                self._late(self.out_q.get(timeout=0.05))
            except queue.Empty:
                pass
        while True:
            try:
                self._late(self.out_q.get_nowait())
            except (queue.Empty, OSError, ValueError):
                break
        for p in self.procs:
            p.join(timeout=1.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
        discard_unread([self.out_q])

    def _late(self, msg: Message) -> None:
        if msg[0] == "error":
            return
        got = self._take(msg)
        if got is not None and self.on_late is not None:
            self.on_late(*got)
