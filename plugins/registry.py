"""Rewards, engines, backends and commands by name, collected from every plugin's register hook.

Each plugin's hook implementation is called through pluggy on its own -- a hook caller
for that one plugin (:meth:`pluggy.PluginManager.subset_hook_caller` without the others) --
with a ``register`` callback bound to that plugin, so every registered object carries its
origin (built-in, or package and version). One call of the whole hook could not say which
plugin made each registration, which is what duplicate-name errors and ``fmmforge plugins``
need. A name registered twice is kept out of use and reported naming both plugins; a
hook that raises, or registers something malformed, becomes a reported problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fmmforge.core.errors import FmmforgeError
from fmmforge.core.contracts import Engine, Reward
from fmmforge.plugins.extensions import KINDS, check_extension
from fmmforge.plugins.manager import (
    ENV_VAR,
    FmmforgePluginManager,
    Origin,
    PluginProblem,
    plugin_manager,
)

HOOK_OF = {"reward": "register_rewards", "engine": "register_engines", "backend": "register_backends",
           "command": "register_commands"}


@dataclass(frozen=True)
class Registered:
    """One registered object and the plugin that registered it."""

    kind: str
    name: str
    obj: Any
    origin: Origin
    plugin: str

    @property
    def description(self) -> str:
        return " ".join(str(self.obj.description).split())


@dataclass
class Registry:
    """Everything of one kind that the plugins registered."""

    kind: str
    entries: dict[str, list[Registered]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def usable(self) -> dict[str, Registered]:
        """Names registered exactly once."""
        return {name: regs[0] for name, regs in sorted(self.entries.items()) if len(regs) == 1}

    def conflicts(self) -> dict[str, list[Registered]]:
        return {name: regs for name, regs in sorted(self.entries.items()) if len(regs) > 1}

    def get(self, name: str, broken: list[PluginProblem] | None = None) -> Any:
        """The object registered as ``name``; unknown or duplicate names are one clear error."""
        regs = self.entries.get(name)
        if not regs:
            known = ", ".join(self.names()) or "none installed"
            skipped = broken if broken is not None else self.problems
            hint = ""
            if skipped:
                hint = f" ({len(skipped)} broken plugin(s) skipped: {', '.join(sorted({str(p.origin) for p in skipped}))})"
            raise FmmforgeError(f"unknown {self.kind} {name!r}; known: {known}; run `fmmforge plugins`{hint}")
        if len(regs) > 1:
            raise FmmforgeError(duplicate_message(self.kind, name, regs))
        return regs[0].obj


def duplicate_message(kind: str, name: str, regs: list[Registered]) -> str:
    who = " and by ".join(f"{r.origin} (plugin {r.plugin})" for r in regs)
    return (f"{kind} {name!r} is registered twice: by {who}; uninstall one, "
            f"or leave one out with {ENV_VAR}=<packages to load>")


def collect(pm: FmmforgePluginManager, kind: str) -> Registry:
    """Call every plugin's hook for ``kind`` and gather what they register."""
    if kind not in KINDS:
        raise ValueError(f"unknown extension kind {kind!r}")
    found = Registry(kind)
    hook_name = HOOK_OF[kind]
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    for impl in impls:
        origin = pm.origin_of(impl.plugin_name)
        where = f"{hook_name} in {getattr(impl.plugin, '__name__', impl.plugin_name)}"

        def register(obj: Any, _origin: Origin = origin, _plugin: str = impl.plugin_name, _where: str = where) -> None:
            problem = check_extension(kind, obj)
            if problem is not None:
                found.problems.append(PluginProblem(_origin, _where, problem))
                return
            found.entries.setdefault(obj.name, []).append(Registered(kind, obj.name, obj, _origin, _plugin))

        only_this = pm.subset_hook_caller(hook_name, remove_plugins=[i.plugin for i in impls if i is not impl])
        try:
            only_this(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            found.problems.append(PluginProblem(origin, where, f"{type(exc).__name__}: {exc}"))
    return found


def registry(kind: str) -> Registry:
    """The (cached) registry of ``kind``: "reward", "engine", "backend" or "command"."""
    pm = plugin_manager()
    cached = pm.registries.get(kind)
    if cached is None:
        cached = pm.registries[kind] = collect(pm, kind)
    return cached


def problems() -> list[PluginProblem]:
    """Plugins that failed to load and hooks that failed, across all kinds."""
    found = list(plugin_manager().problems)
    for kind in KINDS:
        found.extend(registry(kind).problems)
    return found


def _get(kind: str, name: str) -> Any:
    reg = registry(kind)
    return reg.get(name, broken=plugin_manager().problems + reg.problems)


def get_reward(name: str) -> Reward:
    """The reward registered as ``name`` (e.g. ``get_reward("tpu-cost")``)."""
    return _get("reward", name)


def get_engine(name: str) -> Engine:
    """The search engine registered as ``name`` (``get_engine("flip")``)."""
    return _get("engine", name)


def get_backend(name: str) -> Any:
    return _get("backend", name)


def rewards() -> dict[str, Reward]:
    """Usable rewards by name (a name registered twice is left out; see :func:`registry`)."""
    return {name: reg.obj for name, reg in registry("reward").usable().items()}


def engines() -> dict[str, Engine]:
    return {name: reg.obj for name, reg in registry("engine").usable().items()}


def backends() -> dict[str, Any]:
    return {name: reg.obj for name, reg in registry("backend").usable().items()}


def commands() -> dict[str, Any]:
    """Usable command-line commands by name (a name registered twice is left out and reported)."""
    return {name: reg.obj for name, reg in registry("command").usable().items()}
