"""fmmforge: fast matrix-multiplication algorithms, found, verified exactly and turned into kernels.

This root package holds only the drop-in matmul that users call (floor 5, the application,
docs/architecture.md): ``fmmforge.matmul(A, B)`` and ``fmmforge.nn`` (``FastLinear``,
``accelerate``). Both are loaded lazily on first use, so ``import fmmforge.core`` stays as light
as ever (no torch). The subpackages are fmmforge.core, .plugins, .hardware, .codegen and .reports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["matmul", "nn"]


def __getattr__(name: str) -> Any:
    """``matmul`` and ``nn``, imported on first use (and kept, so later uses cost nothing)."""
    if name == "matmul":
        from fmmforge.core.app.matmul import matmul as found
    elif name == "nn":
        from fmmforge.core.app import nn as found
    else:
        raise AttributeError(f"module 'fmmforge' has no attribute {name!r}")
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
