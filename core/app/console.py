"""The application's consoles and the small formatting helpers its commands share."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output (files, tests, other programs) gets wide lines instead of wrapped table cells.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)

FORMAT_HELP = "file format: json (fmmforge's own), npz (DeepMind's), fastmm (Benson & Ballard's text)"


def fmt_e(e: object) -> str:
    """A stability factor for a table: ``-`` when there is none."""
    return "-" if e is None else f"{float(e):g}"  # type: ignore[arg-type]
