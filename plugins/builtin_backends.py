"""Built-in plugin: the torch, numpy and cupy codegen backends (codegen.backends).

Registered by the plugin manager as a built-in (one entry of
:data:`fmmforge.plugins.manager.BUILTIN_PLUGINS`); it registers backends only. The rewards that
measure kernels with them are :mod:`fmmforge.plugins.builtin_kernel_rewards`.
"""

from __future__ import annotations

from collections.abc import Callable

from fmmforge.codegen.backends import BUILTIN_BACKENDS, CodegenBackend
from fmmforge.plugins.hookspecs import hookimpl


@hookimpl
def register_backends(register: Callable[[CodegenBackend], None]) -> None:
    for backend in BUILTIN_BACKENDS:
        register(backend)
