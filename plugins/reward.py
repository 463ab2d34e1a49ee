"""Scoring through a reward plugin: :func:`evaluate` checks the scheme and what the reward returns.

What a reward *is* (:class:`Reward`, :class:`RewardContext`, :class:`RewardResult`) lives in
:mod:`fmmforge.core.contracts` (plugin authors also find them in :mod:`fmmforge.plugins`).
"""

from __future__ import annotations

import math
from typing import Any

from fmmforge.core.contracts import Reward, RewardContext, RewardResult
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError

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
