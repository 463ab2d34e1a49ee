"""The plugin manager: the one pluggy manager of fmmforge, and where each plugin came from.

Built-in plugins are one list (:data:`BUILTIN_PLUGINS`), each loaded like a third party's entry
point (imported by name, registered under it, reported when broken); third-party packages are
found through the entry-point group ``fmmforge``::

    [project.entry-points.fmmforge]
    my_rewards = "my_package.rewards"

The environment variable ``FMMFORGE_PLUGINS`` restricts which third-party plugins load: a
comma-separated list of distribution (package) names or entry-point names; empty means
none; unset means all. Built-ins always load.

A plugin that fails to import is recorded as a :class:`PluginProblem` with its package
name and version instead of raising, so commands that do not need it keep working and
``fmmforge plugins`` can report it.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

import pluggy
from fmmforge.plugins import hookspecs
from fmmforge.plugins.hookspecs import PROJECT_NAME

ENTRY_POINT_GROUP = "fmmforge"
ENV_VAR = "FMMFORGE_PLUGINS"


@dataclass(frozen=True)
class Builtin:
    """A built-in plugin: the module, and the one kind of thing (extensions.KINDS) it registers."""

    kind: str
    module: str


# Every built-in plugin, in the order they register. The manager loads the rewards, engines and
# backends when it is made; the command modules are the application's (floor 5, above this one)
# and load when the command line is built (core.app.cli.build_app), so a Python caller of
# fmmforge.plugins imports no typer. A module that fails to import is reported like a broken
# third-party plugin (origin "built-in").
BUILTIN_PLUGINS: tuple[Builtin, ...] = (
    Builtin("reward", "fmmforge.plugins.builtin_rewards"),
    Builtin("reward", "fmmforge.plugins.builtin_kernel_rewards"),
    Builtin("engine", "fmmforge.plugins.builtin_engines"),
    Builtin("backend", "fmmforge.plugins.builtin_backends"),
    Builtin("command", "fmmforge.core.app.catalogue_commands"),
    Builtin("command", "fmmforge.core.app.store_commands"),
    Builtin("command", "fmmforge.core.app.plugin_commands"),
    Builtin("command", "fmmforge.core.app.search_commands"),
    Builtin("command", "fmmforge.core.app.hardware_commands"),
    Builtin("command", "fmmforge.core.app.codegen_commands"),
    Builtin("command", "fmmforge.core.app.report_commands"),
    Builtin("command", "fmmforge.core.app.tune_commands"),
)
COMMAND_KIND = "command"  # the kind the application's modules register, loaded by the application


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from: built into fmmforge, an installed package, or code at runtime."""

    kind: str  # "built-in", "package" or "runtime"
    package: str = ""
    version: str = ""

    def __str__(self) -> str:
        if self.kind == "built-in":
            return "built-in"
        if self.kind == "package":
            return f"{self.package} {self.version}".strip()
        return f"runtime ({self.package})"


BUILTIN = Origin("built-in")


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be loaded or whose hook failed; reported, not raised."""

    origin: Origin
    where: str
    error: str

    def __str__(self) -> str:
        who = f"package {self.origin}" if self.origin.kind == "package" else str(self.origin)
        return f"plugin {who} ({self.where}) is broken and was skipped: {self.error}"


class FmmforgePluginManager(pluggy.PluginManager):
    """pluggy's manager plus the origin of every plugin and the problems met while loading."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, Origin] = {}
        self.problems: list[PluginProblem] = []
        self.registries: dict[str, Any] = {}  # kind -> Registry, rebuilt after any (un)register

    def register(self, plugin: object, name: str | None = None, origin: Origin | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            self.origins[registered] = origin or Origin("runtime", registered)
        self.registries.clear()
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        if name is None and plugin is not None:
            name = self.get_name(plugin)
        removed = super().unregister(plugin, name)
        if name is not None:
            self.origins.pop(name, None)
        self.registries.clear()
        return removed

    def origin_of(self, plugin_name: str) -> Origin:
        return self.origins.get(plugin_name, Origin("runtime", plugin_name))


def normalize(name: str) -> str:
    """PEP 503 normalisation, so ``My_Plugin`` and ``my-plugin`` mean the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_plugins() -> set[str] | None:
    """The normalised names FMMFORGE_PLUGINS allows; None when unset (everything loads)."""
    value = os.environ.get(ENV_VAR)
    if value is None:
        return None
    return {normalize(part) for part in value.split(",") if part.strip()}


def _entry_point_origin(ep: metadata.EntryPoint) -> Origin:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return Origin("package", ep.module.split(".")[0])
    return Origin("package", dist.metadata["Name"] or ep.module.split(".")[0], dist.version or "")


def load_entry_points(pm: FmmforgePluginManager) -> None:
    """Register every allowed third-party plugin; record the ones that fail instead of raising."""
    allowed = allowed_plugins()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = _entry_point_origin(ep)
        if allowed is not None and normalize(origin.package) not in allowed and normalize(ep.name) not in allowed:
            continue
        # the package is part of the plugin's name, so two packages may both call
        # their entry point "rewards" without one silently replacing the other
        name = f"{normalize(origin.package)}:{ep.name}"
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        _load(pm, name, origin, f"entry point {ep.name} = {ep.value}", ep.load)


def load_builtins(pm: FmmforgePluginManager, commands: bool = False) -> None:
    """Register the built-in plugins of :data:`BUILTIN_PLUGINS`, in order: the command modules
    (``commands``) or the others; each one once, as an entry point would be."""
    for builtin in BUILTIN_PLUGINS:
        if (builtin.kind == COMMAND_KIND) == commands and pm.get_plugin(builtin.module) is None:
            _load(pm, builtin.module, BUILTIN, f"module {builtin.module}",
                  lambda module=builtin.module: importlib.import_module(module))


def _load(pm: FmmforgePluginManager, name: str, origin: Origin, where: str, load: Callable[[], object]) -> None:
    """Load one plugin and register it as ``name``; a failure is recorded, not raised."""
    try:
        pm.register(load(), name=name, origin=origin)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
        pm.problems.append(PluginProblem(origin, where, f"{type(exc).__name__}: {exc}"))


_manager: FmmforgePluginManager | None = None


def plugin_manager() -> FmmforgePluginManager:
    """The process-wide manager, built on first use (the only global mutable state)."""
    global _manager
    if _manager is None:
        pm = FmmforgePluginManager()
        load_builtins(pm)
        load_entry_points(pm)
        _manager = pm
    return _manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next use reloads plugins (tests; after changing FMMFORGE_PLUGINS)."""
    global _manager
    _manager = None
