"""The reward interface: what "better" means to a search engine.

A reward scores a complete, verified decomposition for a context (target device, matrix
sizes, dtype, recursion levels). Higher is better. It says whether it is *cheap* (an
engine may call it at every step) or *expensive* (called on finished candidates only, with
results cached, as :class:`~fmmforge.plugins.mix.RewardMix` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError

Size = tuple[int, int, int]


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
    """What a reward plugin registers."""

    name: str
    description: str
    cheap: bool

    def score(self, decomposition: Decomposition, context: RewardContext) -> RewardResult | float:
        ...


def evaluate(reward: Reward, decomposition: Decomposition, context: RewardContext) -> RewardResult:
    """Score a verified decomposition; a reward returning nonsense is named in the error."""
    check = decomposition.verify()
    if not check.valid:
        raise InvalidDecompositionError(
            f"rewards score verified schemes only; this one is wrong: {check.first_failure}"
        )
    raw = reward.score(decomposition, context)
    result = raw if isinstance(raw, RewardResult) else RewardResult(_as_float(reward, raw))
    return RewardResult(_as_float(reward, result.value), dict(result.parts))


def _as_float(reward: Reward, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FmmforgeError(f"reward {reward.name!r} returned {value!r}, not a number") from None
    if not math.isfinite(number):
        raise FmmforgeError(f"reward {reward.name!r} returned {number}, not a finite number")
    return number
