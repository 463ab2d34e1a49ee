"""Built-in plugin: the torch, numpy and cupy codegen backends and the ``latency`` reward.

Registered by the plugin manager as a built-in (``fmmforge.codegen.plugin`` in
``fmmforge.plugins.manager.BUILTIN_PLUGINS``).
"""

from __future__ import annotations

from fmmforge.codegen.backends import BUILTIN_BACKENDS
from fmmforge.codegen.latency import LatencyReward
from fmmforge.plugins.hookspecs import hookimpl


@hookimpl
def register_backends(register) -> None:  # type: ignore[no-untyped-def]
    for backend in BUILTIN_BACKENDS:
        register(backend)


@hookimpl
def register_rewards(register) -> None:  # type: ignore[no-untyped-def]
    register(LatencyReward())
