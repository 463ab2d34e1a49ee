"""The built-in search engine ``flip``, registered through the same hook a third party uses."""

from __future__ import annotations

from collections.abc import Callable

from fmmforge.core.contracts import Engine
from fmmforge.plugins.hookspecs import hookimpl


@hookimpl
def register_engines(register: Callable[[Engine], None]) -> None:
    from fmmforge.core.search.engine import FlipGraphEngine

    register(FlipGraphEngine())
