"""What a code-generation backend must provide, and the check every registered object passes.

Engines and rewards are defined in :mod:`fmmforge.core.contracts` (re-exported here);
:func:`check_extension` is what the registry runs on every registered object so a malformed
plugin fails with a message naming it.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from fmmforge.core.contracts import Engine, Reward

__all__ = ["Backend", "Engine", "KINDS", "NAME_PATTERN", "REQUIRED_METHOD", "Reward", "check_extension"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


@runtime_checkable
class Backend(Protocol):
    """A code-generation backend: turns a plan into source code and a callable kernel."""

    name: str
    description: str
    devices: tuple[str, ...]

    def emit(self, plan: Any, schemes: Any) -> Any:
        """Generate the kernel for ``plan`` using the verified ``schemes`` (one per level)."""
        ...


KINDS = ("reward", "engine", "backend")
REQUIRED_METHOD = {"reward": "score", "engine": "run", "backend": "emit"}


def check_extension(kind: str, obj: Any) -> str | None:
    """Why ``obj`` cannot be registered as a ``kind``, or None if it can."""
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return (f"a {kind} needs a name of lowercase letters, digits, '-' and '_' "
                f"starting with a letter, not {name!r}")
    description = getattr(obj, "description", None)
    if not isinstance(description, str) or not description.strip():
        return f"{kind} {name!r} needs a one-line description"
    method = REQUIRED_METHOD[kind]
    if not callable(getattr(obj, method, None)):
        return f"{kind} {name!r} has no {method}() method"
    if kind == "reward" and not isinstance(getattr(obj, "cheap", None), bool):
        return f"reward {name!r} must say whether it is cheap (cheap = True or False)"
    return None
