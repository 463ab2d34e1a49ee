"""Hook specifications: the one way to extend fmmforge.

Every extension point has the same shape (the ``register`` callback style of simonw/llm):
a plugin implements a hook that receives a ``register`` function and calls it once per
thing it provides. A thing is an object with a ``name`` (lowercase letters, digits, ``-``
and ``_``) and a one-line ``description``; the manager records which plugin registered it,
rejects a name registered twice (naming both plugins), and reports a plugin whose hook
raises instead of failing the whole command.

Why a callback and not returned lists: the plugin can register zero, one or many things
without building a list, and the manager can attribute each registration to the plugin
that made it, which is what ``fmmforge plugins`` shows and what a duplicate-name error
needs.

Write an implementation like this (see docs/plugins.md)::

    from fmmforge.plugins import hookimpl

    @hookimpl
    def register_rewards(register):
        register(MyReward())
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from fmmforge.core.contracts import Backend, Engine, Reward
from fmmforge.plugins.extensions import Command

PROJECT_NAME = "fmmforge"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_rewards(register: Callable[[Reward], None]) -> None:
    """Register rewards: call ``register(reward)`` once per reward.

    A reward follows :class:`fmmforge.core.contracts.Reward`: ``name``, ``description``,
    ``cheap`` (True if it may be called at every search step; False for measured rewards
    that run only on finished candidates, whose results are cached) and
    ``score(decomposition, context)`` returning a number or a
    :class:`~fmmforge.core.contracts.RewardResult`. Higher is better.
    """


@hookspec
def register_engines(register: Callable[[Engine], None]) -> None:
    """Register search engines: call ``register(engine)`` once per engine.

    An engine follows :class:`fmmforge.core.contracts.Engine`: ``name``, ``description``
    and ``run(request, events=None)``, which searches from the verified decomposition
    ``request.start`` (a :class:`~fmmforge.core.contracts.SearchRequest`), reports progress
    and found schemes through the optional callbacks in ``events``, and returns a
    :class:`~fmmforge.core.contracts.SearchResult`; it never prints or measures hardware.
    """


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Register code-generation backends: call ``register(backend)`` once per backend.

    A backend follows :class:`fmmforge.core.contracts.Backend`: ``name``,
    ``description``, ``devices`` (the device kinds it emits kernels for) and
    ``emit(plan, schemes)``, which turns a plan into readable source code and a callable.
    """


@hookspec
def register_commands(register: Callable[[Command], None]) -> None:
    """Register command-line commands: call ``register(command)`` once per command.

    A command is a :class:`fmmforge.plugins.extensions.Command`: ``name``, ``description`` and
    either a typer command function (``callback``) or a ``typer.Typer`` of sub-commands
    (``group``). The CLI's own commands are registered this way too. Import what a command
    needs inside its function, so that a slow import never delays the other commands.
    """
