"""The application's consoles and the small formatting helpers its commands share."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.console import Console

# Piped output (files, tests, other programs) gets wide lines instead of wrapped table cells.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)

FORMAT_HELP = ("file format: json (fmmforge's own), npz (DeepMind's), fastmm (Benson & Ballard's text), "
               "catalogue (the public catalogue's JSON), formulas (lines M1 = (A11 + A22)·(B11 + B22))")


def counted(n: int, noun: str) -> str:
    """``1 worker``, ``2 workers``: a count and its noun in agreement (for nouns whose plural adds an s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def fmt_e(e: object) -> str:
    """A stability factor for a table: ``-`` when there is none."""
    return "-" if e is None else f"{float(e):g}"  # type: ignore[arg-type]


@contextlib.contextmanager
def task_bar(on: Console, counts: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A transient one-task progress bar: ``with task_bar(console) as progress: progress(text, done, total)``
    (``counts``: also show done/total)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn()]
    if counts:
        columns.append(TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=on, transient=True) as bar:
        task = bar.add_task("starting", total=1)
        yield lambda text, done, total: bar.update(task, description=text[:160], completed=done, total=max(total, 1))
