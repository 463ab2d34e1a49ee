"""What a command must provide, and the check every registered object passes.

Engines, rewards and codegen backends are defined in :mod:`fmmforge.core.contracts` (re-exported here);
:func:`check_extension` is what the registry runs on every registered object so a malformed
plugin fails with a message naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from fmmforge.core.contracts import Backend, Engine, Reward

__all__ = ["Backend", "Command", "Engine", "KINDS", "NAME_PATTERN", "REQUIRED_METHOD", "Reward", "check_extension"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Command:
    """A command of the ``fmmforge`` command line, registered by a plugin (built-in or not).

    Give ``callback``, a typer command function (its parameters, annotated with typer's
    ``Annotated[..., typer.Option(...)]``, are the command's options; its docstring is the help),
    or ``group``, a ``typer.Typer`` of sub-commands (``fmmforge store check``). The application
    installs each command once; a name registered twice is refused like any duplicate.
    """

    name: str
    description: str
    callback: Callable[..., Any] | None = None
    group: Any = None  # a typer.Typer

    @classmethod
    def of(cls, name: str, callback: Callable[..., Any]) -> "Command":
        """A command from a typer command function; the first line of its docstring describes it."""
        lines = (callback.__doc__ or "").strip().splitlines()
        return cls(name, lines[0] if lines else name, callback=callback)

    def install(self, app: Any) -> None:
        """Add this command to the typer ``app``."""
        if self.group is not None:
            app.add_typer(self.group, name=self.name, help=self.description)
        elif self.callback is not None:
            app.command(self.name)(_one_run(self.name, self.callback))
        else:
            raise ValueError(f"command {self.name!r} has neither a callback nor a group")


def _one_run(name: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` as the command line runs it: what it records is one run named ``name``
    (fmmforge.core.store.measurement_run; a command that records nothing leaves no run)."""
    import functools

    from fmmforge.core.store import measurement_run

    @functools.wraps(callback)
    def command(*args: Any, **kwargs: Any) -> Any:
        with measurement_run(name):
            return callback(*args, **kwargs)

    return command


KINDS = ("reward", "engine", "backend", "command")
REQUIRED_METHOD = {"reward": "score", "engine": "run", "backend": "emit", "command": "install"}


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
    if kind == "command" and (getattr(obj, "callback", None) is None) == (getattr(obj, "group", None) is None):
        return f"command {name!r} needs exactly one of a callback and a group"
    if kind == "reward" and not isinstance(getattr(obj, "cheap", None), bool):
        return f"reward {name!r} must say whether it is cheap (cheap = True or False)"
    return None
