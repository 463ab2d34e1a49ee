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
    if name == "matmul":
        from fmmforge.core.app.matmul import matmul

        return matmul
    if name == "nn":
        from fmmforge.core.app import nn

        return nn
    raise AttributeError(f"module 'fmmforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
