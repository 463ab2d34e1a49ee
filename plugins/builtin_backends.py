"""Built-in plugin: the torch, numpy and cupy codegen backends, the ``latency`` reward and its
calibrated model, the ``latency-model`` reward (codegen.costmodel).

Registered by the plugin manager as a built-in (``fmmforge.plugins.builtin_backends`` in
:data:`fmmforge.plugins.manager.BUILTIN_PLUGINS`). Codegen never looks a backend up by name
itself: the latency reward is handed :func:`fmmforge.plugins.registry.get_backend` here, so a
plugin's backend of the same name is the one it measures with.
"""

from __future__ import annotations

from collections.abc import Callable

from fmmforge.codegen.backends import BUILTIN_BACKENDS, CodegenBackend
from fmmforge.codegen.costmodel import LatencyModelReward
from fmmforge.codegen.latency import LatencyReward
from fmmforge.core.contracts import Reward
from fmmforge.plugins.hookspecs import hookimpl
from fmmforge.plugins.registry import get_backend


@hookimpl
def register_backends(register: Callable[[CodegenBackend], None]) -> None:
    for backend in BUILTIN_BACKENDS:
        register(backend)


@hookimpl
def register_rewards(register: Callable[[Reward], None]) -> None:
    register(LatencyReward(resolve_backend=get_backend))
    register(LatencyModelReward())
