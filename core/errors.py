"""Errors a user can act on.

Every error that reaches the command line as a :class:`FmmforgeError` is printed as one
line (what was wrong and what to do) and ends the process with exit code 2.
"""

from __future__ import annotations


class FmmforgeError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class InvalidDecompositionError(FmmforgeError):
    """A decomposition that does not reproduce its target tensor exactly."""


def print_warning(message: str) -> None:
    """The default way a lower floor reports something it worked around: one ``warning:`` line on
    stderr. Callers that own a terminal pass their own ``warn`` callback instead."""
    import sys

    print(f"warning: {message}", file=sys.stderr)
