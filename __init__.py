"""fmmforge: fast matrix-multiplication algorithms, found, verified exactly and turned into kernels.

This root package holds only what users call (floor 5, the application, docs/architecture.md):
the drop-in ``fmmforge.matmul(A, B)``, ``fmmforge.nn`` (``FastLinear``, ``accelerate``) and the
loop that fills what matmul uses, ``fmmforge.tune(fmmforge.TuneRequest(...))`` (docs/tuning.md),
and ``fmmforge.__version__``. All are loaded lazily on first use, so ``import fmmforge.core``
stays as light as ever (no torch), and the namespace holds nothing else: no helper of this
module is importable from it. The subpackages are fmmforge.core, .plugins, .hardware, .codegen
and .reports.
"""

__all__ = ["matmul", "nn", "tune", "TuneRequest"]


def __getattr__(name: str) -> object:
    """``matmul``, ``nn``, ``tune``, ``TuneRequest`` and ``__version__``, imported on first use (and
    kept, so later uses cost nothing)."""
    if name == "matmul":
        from fmmforge.core.app.matmul import matmul as found
    elif name == "nn":
        from fmmforge.core.app import nn as found
    elif name == "tune":
        from fmmforge.core.app.tune_commands import tune as found
    elif name == "TuneRequest":
        from fmmforge.codegen.tune import TuneRequest as found
    elif name == "__version__":
        from fmmforge.core.version import __version__ as found
    else:
        raise AttributeError(f"module 'fmmforge' has no attribute {name!r}")
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    """The public API only (the subpackages are imported by name: ``import fmmforge.core``)."""
    return sorted([*__all__, "__version__"])
