"""Registers the flip-graph engine as the engine plugin ``flip``.

Built in: the plugin manager loads this module with the other built-ins
(``"fmmforge.core.search.plugin"`` in ``fmmforge.plugins.manager.BUILTIN_PLUGINS``).
"""

from __future__ import annotations

from typing import Any, Callable

from fmmforge.plugins.hookspecs import hookimpl


@hookimpl
def register_engines(register: Callable[[Any], None]) -> None:
    from fmmforge.core.search.engine import FlipGraphEngine

    register(FlipGraphEngine())
