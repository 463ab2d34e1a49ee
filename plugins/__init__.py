"""fmmforge.plugins: the plugin layer (one pluggy manager) and the built-in rewards.

For plugin authors::

    from fmmforge.plugins import hookimpl, RewardResult

For users of rewards from Python::

    from fmmforge.plugins import get_reward, RewardContext
    get_reward("tpu-cost").score(decomposition, RewardContext(device="tpu-v4", size=(8192,) * 3))

See docs/plugins.md.
"""

from fmmforge.plugins.hookspecs import hookimpl, hookspec
from fmmforge.plugins.manager import (
    ENTRY_POINT_GROUP,
    ENV_VAR,
    Origin,
    plugin_manager,
    reset_plugin_manager,
)
from fmmforge.plugins.mix import (
    RewardMix,
    RewardTerm,
    combine_rewards,
    parse_reward_spec,
    parse_reward_specs,
)
from fmmforge.plugins.registry import (
    backends,
    engines,
    get_backend,
    get_engine,
    get_reward,
    problems,
    rewards,
)
from fmmforge.core.contracts import Engine, Reward, RewardContext, RewardResult, Scorer
from fmmforge.plugins.reward import evaluate

__all__ = [
    "ENTRY_POINT_GROUP", "ENV_VAR", "Engine", "Origin", "Reward", "RewardContext", "RewardMix", "RewardResult",
    "RewardTerm", "Scorer", "backends", "combine_rewards", "engines", "evaluate", "get_backend", "get_engine", "get_reward", "hookimpl",
    "hookspec", "parse_reward_spec", "parse_reward_specs", "plugin_manager", "problems",
    "reset_plugin_manager", "rewards",
]
