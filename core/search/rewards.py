"""Rewards for the search, always obtained from the plugin layer (fmmforge.plugins).

The engine takes any callable ``Decomposition -> float`` (higher is better); this module turns
the command line's ``--reward NAME[:WEIGHT]`` specs into one such callable with
:func:`fmmforge.plugins.combine_rewards`. Nothing here scores a scheme by itself.
"""

from __future__ import annotations

from typing import Callable

from fmmforge.core.decomposition import Decomposition

Scorer = Callable[[Decomposition], float]


def combined(specs: list[str], context: object = None) -> Scorer:
    """One scorer for several ``NAME[:WEIGHT]`` specs (unknown names fail here, before searching).

    ``context`` (a :class:`fmmforge.plugins.RewardContext`) tells rewards such as tpu-cost the
    device and matrix size to score for.
    """
    from fmmforge.plugins import combine_rewards

    return combine_rewards(list(specs), context)  # type: ignore[arg-type]
