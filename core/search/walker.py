"""One independent flip-graph walker: a compiled walk plus its pool, restarts and plus transitions.

The walker keeps a pool of distinct schemes at its best rank. It walks from a pool scheme with
flips (and the reductions they allow); when no reduction comes for ``plateau`` flips it makes a
plus transition (rank + 1, at most ``plus_up`` above the best) and walks on; after ``episode``
flips without a new best it restarts from a pool scheme (preferring those the reward scores
higher). Schemes at the best rank met on the way join the pool (new by their key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fmmforge.core.search import kernels as K
from fmmforge.core.search.scheme import PackedScheme

PackedScorer = Callable[[PackedScheme], float]  # a Scorer (see core.contracts) on packed schemes


@dataclass(frozen=True)
class WalkParams:
    plateau: int = 20_000        # flips without a reduction before a plus transition
    episode: int = 1_000_000     # flips without a new best before a restart from the pool
    plus_up: int = 1             # plus transitions go at most this far above the best rank
    pool_size: int = 100         # distinct schemes kept at the best rank
    bound: int = 1               # Z only: coefficients stay within ±bound through flips
    hard_bound: int = 4          # Z only: ... and within ±hard_bound through reductions
    reset_episodes: int = 8      # episodes without a new best before walking down again from the start
                                 # (doubles after each reset: short walks first, longer ones later)

    @staticmethod
    def for_problem(dims: tuple[int, int, int], rank: int, field: str) -> "WalkParams":
        """Defaults scaled to the problem size (tuned on <3,3,3> and <3,4,4>, see benchmarks/flipgraph.py)."""
        size = sum(dims)
        plateau = int(min(100_000, max(2_000, 5 * rank * size)))
        return WalkParams(plateau=plateau, episode=plateau * 20)


@dataclass
class Found:
    """A scheme a walker reports: ``kind`` is "best" (a new best rank) or "pool" (another at the best rank)."""

    rank: int
    scheme: PackedScheme
    kind: str
    flips: int


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) or 1


class CompiledWalk:
    """The arrays a compiled walk works on, for one field and tensor shape."""

    def __init__(self, field: str, dims: tuple[int, int, int], seed: int, params: WalkParams) -> None:
        self.field = field
        self.dims = dims
        self.params = params
        self.rng = np.array([splitmix64(seed)], dtype=np.uint64)
        self.meta = np.zeros(K.META_SIZE, dtype=np.int64)
        self.dims_arr = np.array(dims, dtype=np.int64)
        self.L = max(dims)
        if field == "Z":
            hrng = np.random.default_rng(splitmix64(seed ^ 0x5151))
            self.H = hrng.integers(0, 2**63, size=(3, self.L), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.X: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return int(self.meta[K.META_RANK])

    def load(self, scheme: PackedScheme, extra: int) -> int:
        """Start walking from ``scheme`` (reduced first); room for ``extra`` more terms. Returns the rank."""
        R = scheme.rank
        cap = R + extra + 2
        self.meta[:] = 0
        if self.field == "Z2":
            self.X = np.zeros((cap, 3), dtype=np.uint64)
            self.X[:R] = scheme.data
            self.N = np.zeros((cap, 3), dtype=np.int64)
            K.z2_counts(self.X, R, self.N)
            self.meta[K.META_RANK] = K.z2_reduce_all(self.X, self.N, R, self.meta)
        else:
            self.X = np.zeros((cap, 3, self.L), dtype=np.int8)
            self.X[:R] = scheme.data
            self.K = np.zeros((cap, 3), dtype=np.uint64)
            for r in range(R):
                for s in range(3):
                    self.K[r, s] = K.z_key(self.X, self.H, r, s, self.dims[s])
            self.meta[K.META_RANK] = K.z_reduce_all(
                self.X, self.K, self.H, self.dims_arr, R, self.params.hard_bound, self.meta)
        return self.rank

    def current(self) -> PackedScheme:
        assert self.X is not None
        return PackedScheme(self.field, self.dims, self.X[: self.rank].copy())

    def walk(self, max_flips: int, plus_limit: int, stop_rank: int, report_rank: int) -> int:
        assert self.X is not None
        plus_limit = min(plus_limit, self.X.shape[0])
        p = self.params
        if self.field == "Z2":
            return int(K.walk_z2(self.X, self.N, self.meta, self.rng, max_flips, p.plateau, plus_limit,
                                 stop_rank, report_rank))
        return int(K.walk_z(self.X, self.K, self.H, self.dims_arr, self.meta, self.rng, max_flips, p.plateau,
                            plus_limit, stop_rank, report_rank, p.bound, p.hard_bound))

    @property
    def last_flips(self) -> int:
        return int(self.meta[K.META_FLIPS])


@dataclass
class Walker:
    """A walker with its pool; :meth:`advance` runs a slice of flips and returns what it found."""

    field: str
    dims: tuple[int, int, int]
    seed: int
    params: WalkParams
    scorer: PackedScorer | None = None
    report_pool_max_rank: int = 1 << 30   # "pool" finds above this rank stay local
    report_pool_per_second: float = 20.0  # ... and at most this many are reported per second
    flips: int = 0
    restarts: int = 0
    best_rank: int = 0
    pool: list[PackedScheme] = field(default_factory=list)
    _keys: set = field(default_factory=set)
    _scores: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.walk = CompiledWalk(self.field, self.dims, self.seed, self.params)
        self._pick = np.random.default_rng(splitmix64(self.seed ^ 0xABCD))
        self._episode = 0
        self._stale = 0
        self._reset_limit = self.params.reset_episodes
        self._origin: list[PackedScheme] = []
        self._last_pool_report = 0.0

    # ------------------------------------------------------------------ pool
    def start(self, schemes: list[PackedScheme]) -> None:
        """Begin from these schemes (reduced first); the lowest rank among them is the best."""
        self._origin = [s.copy() for s in schemes]
        reduced = []
        for s in schemes:
            self.walk.load(s, self.params.plus_up)
            reduced.append(self.walk.current())
        best = min(s.rank for s in reduced)
        self.best_rank = best
        self.pool, self._keys, self._scores = [], set(), {}
        for s in reduced:
            if s.rank == best:
                self._add(s)
        self._restart()

    def _add(self, scheme: PackedScheme) -> bool:
        key = scheme.key()
        if key in self._keys:
            return False
        self._keys.add(key)
        if len(self.pool) >= self.params.pool_size:
            # replace the lowest-scored (or a random) member
            if self.scorer is not None:
                idx = min(range(len(self.pool)), key=lambda q: self._score(q))
            else:
                idx = int(self._pick.integers(len(self.pool)))
            self._keys.discard(self.pool[idx].key())
            self._scores.pop(id(self.pool[idx]), None)
            self.pool[idx] = scheme
        else:
            self.pool.append(scheme)
        return True

    def _score(self, idx: int) -> float:
        s = self.pool[idx]
        if id(s) not in self._scores:
            self._scores[id(s)] = float(self.scorer(s)) if self.scorer is not None else 0.0
        return self._scores[id(s)]

    def _restart(self) -> None:
        n = len(self.pool)
        idx = int(self._pick.integers(n))
        if self.scorer is not None and n > 1:
            other = int(self._pick.integers(n))
            if self._score(other) > self._score(idx):
                idx = other
        self.walk.load(self.pool[idx], self.params.plus_up)
        self._episode = 0
        self.restarts += 1

    def offer(self, scheme: PackedScheme) -> None:
        """A scheme from elsewhere (another walker): adopted if better, pooled if as good."""
        if scheme.rank < self.best_rank:
            self.best_rank = scheme.rank
            self.pool, self._keys, self._scores = [], set(), {}
            self._add(scheme)
            self._restart()
        elif scheme.rank == self.best_rank:
            self._add(scheme)

    # ------------------------------------------------------------------ walking
    def advance(self, max_flips: int) -> list[Found]:
        found: list[Found] = []
        done = 0
        p = self.params
        while done < max_flips:
            chunk = min(max_flips - done, p.episode - self._episode)
            code = self.walk.walk(chunk, self.best_rank + p.plus_up, self.best_rank, self.best_rank)
            n = self.walk.last_flips
            done += n
            self.flips += n
            self._episode += n
            if code == 1:
                scheme = self.walk.current()
                self.best_rank = scheme.rank
                self.pool, self._keys, self._scores = [], set(), {}
                self._add(scheme)
                self._episode = 0
                self._stale = 0
                found.append(Found(scheme.rank, scheme, "best", self.flips))
            elif code == 2:
                scheme = self.walk.current()
                if self._add(scheme) and scheme.rank <= self.report_pool_max_rank:
                    now = time.monotonic()
                    if now - self._last_pool_report >= 1.0 / self.report_pool_per_second:
                        self._last_pool_report = now
                        found.append(Found(scheme.rank, scheme, "pool", self.flips))
            elif code == 3 or self._episode >= p.episode:
                self._stale += 1
                if self._stale >= self._reset_limit and self._origin:
                    # a long stall: walk down again from the start (a fresh path, like a new seed)
                    self._stale = 0
                    self._reset_limit = min(self._reset_limit * 2, 1 << 20)
                    self.start(self._origin)
                else:
                    self._restart()
            if n == 0 and code not in (1, 2):
                done += 1  # nothing moves: count it so the caller's budget still ends
        return found
