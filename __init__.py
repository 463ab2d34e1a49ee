"""fmmforge: fast matrix-multiplication algorithms, found, verified exactly and turned into kernels.

This root package holds only what users call (floor 5, the application, docs/architecture.md):
the drop-in ``fmmforge.matmul(A, B)``, ``fmmforge.nn`` (``FastLinear``, ``accelerate``) and the
loop that fills what matmul uses, ``fmmforge.tune(fmmforge.TuneRequest(...))`` (docs/tuning.md).
All are loaded lazily on first use, so ``import fmmforge.core`` stays as light
as ever (no torch). The subpackages are fmmforge.core, .plugins, .hardware, .codegen and .reports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["matmul", "nn", "tune", "TuneRequest"]


def __getattr__(name: str) -> Any:
    """``matmul``, ``nn``, ``tune``, ``TuneRequest``, imported on first use (and kept, so later uses cost nothing)."""
    if name == "matmul":
        from fmmforge.core.app.matmul import matmul as found
    elif name == "nn":
        from fmmforge.core.app import nn as found
    elif name in ("tune", "TuneRequest"):
        from fmmforge.core.app import tuning

        found = getattr(tuning, name)
    else:
        raise AttributeError(f"module 'fmmforge' has no attribute {name!r}")
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
