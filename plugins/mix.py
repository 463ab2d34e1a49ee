"""Weighted sums of rewards: ``--reward NAME[:WEIGHT]`` given any number of times.

r = Σ weight_i · reward_i. AlphaTensor's hardware-aware reward r' = r + λ·b is
``--reward rank --reward tpu-cost:λ``. Expensive rewards are cached per (reward,
decomposition, context) inside the mix, so an engine may call :meth:`RewardMix.score` on
the same finished candidate twice without re-measuring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fmmforge.core.contracts import Reward, RewardContext, RewardResult, Scorer
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins.reward import evaluate

DEFAULT_REWARD = "rank"


@dataclass(frozen=True)
class RewardTerm:
    name: str
    weight: float = 1.0

    def __str__(self) -> str:
        return self.name if self.weight == 1.0 else f"{self.name}:{self.weight:g}"


def parse_reward_spec(text: str) -> RewardTerm:
    """``rank`` -> (rank, 1.0); ``tpu-cost:0.1`` -> (tpu-cost, 0.1); bad weights are one clear error."""
    name, sep, weight_text = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise FmmforgeError(f"--reward {text!r} has no reward name; write NAME or NAME:WEIGHT, e.g. tpu-cost:0.1")
    if not sep:
        return RewardTerm(name)
    weight_text = weight_text.strip()
    if not weight_text:
        raise FmmforgeError(f"--reward {text!r} has an empty weight; write NAME:WEIGHT, e.g. {name}:0.1, or just {name}")
    try:
        weight = float(weight_text)
    except ValueError:
        raise FmmforgeError(
            f"--reward {text!r}: weight {weight_text!r} is not a number; write NAME:WEIGHT, e.g. {name}:0.1"
        ) from None
    if not math.isfinite(weight):
        raise FmmforgeError(f"--reward {text!r}: the weight must be a finite number, not {weight_text}")
    return RewardTerm(name, weight)


def parse_reward_specs(texts: Iterable[str]) -> tuple[RewardTerm, ...]:
    """All ``--reward`` options; none given means ``rank``; a name given twice is an error."""
    terms = tuple(parse_reward_spec(t) for t in texts) or (RewardTerm(DEFAULT_REWARD),)
    seen: set[str] = set()
    for term in terms:
        if term.name in seen:
            raise FmmforgeError(f"reward {term.name!r} is given twice; give it once with the weight you want")
        seen.add(term.name)
    return terms


@dataclass(frozen=True)
class TermScore:
    term: RewardTerm
    result: RewardResult
    cheap: bool

    @property
    def weighted(self) -> float:
        return self.term.weight * self.result.value


@dataclass(frozen=True)
class MixScore:
    total: float
    terms: tuple[TermScore, ...]


@dataclass
class RewardMix:
    """A weighted sum of named rewards, resolved through the plugin registry."""

    terms: tuple[RewardTerm, ...]
    rewards: dict[str, Reward] = field(default_factory=dict)
    _cache: dict[tuple, RewardResult] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_specs(cls, specs: Iterable[str], lookup: Callable[[str], Reward] | None = None) -> RewardMix:
        """Parse ``NAME[:WEIGHT]`` strings and look every name up (unknown names fail here)."""
        if lookup is None:
            from fmmforge.plugins.registry import get_reward as lookup
        terms = parse_reward_specs(specs)
        return cls(terms, {t.name: lookup(t.name) for t in terms})

    @classmethod
    def of(cls, weights: Mapping[str, float]) -> RewardMix:
        """From Python: ``RewardMix.of({"rank": 1, "tpu-cost": 0.1})``."""
        return cls.from_specs(f"{name}:{weight!r}" for name, weight in weights.items())

    @property
    def cheap(self) -> bool:
        """True when every reward in the mix may be called at every search step."""
        return all(self.rewards[t.name].cheap for t in self.terms)

    def score(self, decomposition: Decomposition, context: RewardContext | None = None) -> MixScore:
        context = context or RewardContext()
        parts = []
        for term in self.terms:
            reward = self.rewards[term.name]
            if reward.cheap:
                result = evaluate(reward, decomposition, context)
            else:
                key = (term.name, decomposition.field, decomposition.fingerprint, context)
                result = self._cache.get(key)
                if result is None:
                    result = self._cache[key] = evaluate(reward, decomposition, context)
            parts.append(TermScore(term, result, reward.cheap))
        return MixScore(sum(p.weighted for p in parts), tuple(parts))

    def bind(self, context: RewardContext | None = None) -> Scorer:
        """The mix as a :data:`~fmmforge.core.contracts.Scorer` (what a SearchRequest takes)."""
        bound = context or RewardContext()
        return lambda d: self.score(d, bound).total


def combine_rewards(specs: Iterable[str], context: RewardContext | None = None) -> Scorer:
    """``NAME[:WEIGHT]`` specs as one :data:`~fmmforge.core.contracts.Scorer` (what a search engine takes).

    Unknown names and bad weights fail here, before any search starts.
    """
    return RewardMix.from_specs(specs).bind(context)
