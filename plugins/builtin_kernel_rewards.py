"""Built-in plugin: the rewards of a scheme's kernels, ``latency`` (measured, codegen.latency) and
``latency-model`` (the device's calibrated cost model, codegen.costmodel).

Registered by the plugin manager as a built-in (one entry of
:data:`fmmforge.plugins.manager.BUILTIN_PLUGINS`); it registers rewards only. Codegen never looks
a backend up by name itself: the latency reward is handed
:func:`fmmforge.plugins.registry.get_backend` here, so a plugin's backend of the same name is the
one it measures with.
"""

from __future__ import annotations

from collections.abc import Callable

from fmmforge.codegen.costmodel import LatencyModelReward
from fmmforge.codegen.latency import LatencyReward
from fmmforge.core.contracts import Reward
from fmmforge.plugins.hookspecs import hookimpl
from fmmforge.plugins.registry import get_backend


@hookimpl
def register_rewards(register: Callable[[Reward], None]) -> None:
    register(LatencyReward(resolve_backend=get_backend))
    register(LatencyModelReward())
