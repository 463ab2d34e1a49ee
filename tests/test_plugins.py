"""The plugin layer: one manager, registration by name with origins, duplicates, broken hooks."""

from __future__ import annotations

import importlib
import inspect

import pytest
from helpers import one_error
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import (
    get_reward,
    hookimpl,
    hookspecs,
    manager,
    plugin_manager,
    reset_plugin_manager,
    rewards,
)
from fmmforge.plugins.registry import (
    engines,
    get_backend,
    get_engine,
    problems,
    registry,
)

BUILTIN_REWARDS = {"rank", "additions", "stability", "tpu-cost"}
SHIPPED_BUILTINS = manager.BUILTIN_PLUGINS  # before the fixture narrows them


pytestmark = pytest.mark.usefixtures("builtin_rewards_only")


class Named:
    """A minimal registrable object of any kind."""

    def __init__(self, name: str, description: str = "a test object", **attrs):
        self.name = name
        self.description = description
        self.cheap = True
        self.devices = ("cpu",)
        for key, value in attrs.items():
            setattr(self, key, value)

    def score(self, d, context):
        return 0.0

    def run(self, request, events=None):
        return None

    def emit(self, plan, schemes):
        return None


def plugin(**hooks):
    """A plugin object implementing the given register_* hooks (each registers a list)."""

    class Plugin:
        pass

    for hook_name, objects in hooks.items():
        def impl(register, _objects=objects):
            for obj in _objects:
                register(obj)

        impl.__name__ = hook_name
        setattr(Plugin, hook_name, staticmethod(hookimpl(impl)))
    return Plugin


def test_hookspecs_are_docstring_only_functions_for_four_extension_points():
    specs = {name for name, obj in vars(hookspecs).items() if inspect.isfunction(obj)}
    assert specs == {"register_rewards", "register_engines", "register_backends", "register_commands"}
    for name in specs:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and "register(" in fn.__doc__
        assert list(inspect.signature(fn).parameters) == ["register"]
        assert fn(lambda obj: None) is None  # the body is only the docstring
    pm = plugin_manager()
    assert pm.project_name == "fmmforge"
    assert all(hasattr(pm.hook, name) for name in specs)


def test_one_manager_per_process_with_builtins_registered_explicitly():
    assert plugin_manager() is plugin_manager()
    assert set(rewards()) == BUILTIN_REWARDS
    for name in BUILTIN_REWARDS:
        reg = registry("reward").usable()[name]
        assert str(reg.origin) == "built-in"
        assert reg.description and get_reward(name).name == name
    assert problems() == []


def test_the_shipped_builtin_modules_load_cleanly(monkeypatch):
    """Every module in BUILTIN_PLUGINS (other subpackages' too) imports and registers."""
    monkeypatch.setattr(manager, "BUILTIN_PLUGINS", SHIPPED_BUILTINS)
    reset_plugin_manager()
    assert SHIPPED_BUILTINS[0].module == "fmmforge.plugins.builtin_rewards"
    assert BUILTIN_REWARDS <= set(rewards())
    assert problems() == []
    assert {str(r.origin) for r in registry("reward").usable().values()} == {"built-in"}


def test_each_builtin_module_registers_only_its_own_kind():
    """A built-in module implements the one hook of the kind the list gives it (builtin_backends
    registered the latency rewards too)."""
    from fmmforge.plugins.registry import HOOK_OF

    for builtin in SHIPPED_BUILTINS:
        module = importlib.import_module(builtin.module)
        hooks = {name for name in HOOK_OF.values() if hasattr(getattr(module, name, None), "fmmforge_impl")}
        assert hooks == {HOOK_OF[builtin.kind]}, builtin.module


def test_the_one_list_gives_every_builtin_command_and_reward(monkeypatch, cli):
    """The command line's commands come from the built-in list, as its rewards, engines and
    backends do (the application kept a second list of its command modules)."""
    monkeypatch.setattr(manager, "BUILTIN_PLUGINS", SHIPPED_BUILTINS)
    reset_plugin_manager()
    assert cli("--help")[0] == 0
    for kind in ("command", "reward", "engine", "backend"):
        plugins = {r.plugin for r in registry(kind).usable().values() if str(r.origin) == "built-in"}
        assert plugins == {b.module for b in SHIPPED_BUILTINS if b.kind == kind}, kind
    assert {"latency", "latency-model"} <= set(rewards())
    assert problems() == []


def test_unknown_reward_names_the_known_ones():
    with pytest.raises(FmmforgeError) as info:
        get_reward("speed")
    message = str(info.value)
    assert "unknown reward 'speed'" in message
    assert "known: additions, rank, stability, tpu-cost" in message
    assert "fmmforge plugins" in message


def test_engines_and_backends_register_the_same_way():
    pm = plugin_manager()
    assert engines() == {} and registry("backend").names() == []
    engine, backend = Named("toy-search"), Named("toy-codegen", devices=("cpu", "cuda"))
    pm.register(plugin(register_engines=[engine], register_backends=[backend]), name="toys")
    assert get_engine("toy-search") is engine
    assert get_backend("toy-codegen") is backend
    assert str(registry("engine").usable()["toy-search"].origin) == "runtime (toys)"
    pm.unregister(name="toys")
    assert engines() == {}


def test_duplicate_names_are_an_error_naming_both_plugins(cli):
    plugin_manager().register(plugin(register_rewards=[Named("rank", "a second rank")]), name="rank-again")
    with pytest.raises(FmmforgeError) as info:
        get_reward("rank")
    message = str(info.value)
    assert "reward 'rank' is registered twice" in message
    assert "built-in" in message and "runtime (rank-again)" in message
    assert "rank" not in rewards() and "additions" in rewards()

    code, _, err = cli("score", "strassen", "--reward", "rank")
    assert code == 2
    assert "registered twice" in one_error(err)
    code, out, _ = cli("score", "strassen", "--reward", "additions")
    assert code == 0  # the other rewards still work

    code, out, _ = cli("plugins")
    assert code == 0
    assert "rank (duplicate)" in out and "a second rank" in out
    assert "error: reward 'rank' is registered twice" in out


def test_malformed_registrations_and_raising_hooks_are_reported_not_raised(cli):
    class Raising:
        @staticmethod
        @hookimpl
        def register_rewards(register):
            raise RuntimeError("cannot reach the licence server")

    pm = plugin_manager()
    pm.register(Raising, name="raising")
    pm.register(plugin(register_rewards=[Named("Bad Name"), Named("ok-reward")],
                       register_engines=[Named("no-run", run=None)]), name="sloppy")
    assert "ok-reward" in rewards()
    found = {str(p) for p in problems()}
    assert any("cannot reach the licence server" in p and "raising" in p for p in found)
    assert any("'Bad Name'" in p for p in found)
    assert any("no run() method" in p for p in found)
    code, out, _ = cli("plugins")
    assert code == 0
    assert "ok-reward" in out and "cannot reach the licence server" in out


def test_plugins_command_lists_builtins_with_descriptions_and_empty_sections(cli):
    code, out, err = cli("plugins")
    assert code == 0, err
    for name in BUILTIN_REWARDS:
        assert name in out
    assert "built-in" in out and "cheap" in out
    assert "minus the rank" in out and "common-subexpression" in out
    assert "search engines: none yet" in out
    assert "codegen backends: none yet" in out
    assert "FMMFORGE_PLUGINS" in out


def test_commands_come_from_the_plugin_manager_once_each(cli):
    from fmmforge.core.app.cli import build_app

    for _ in range(3):
        assert cli("plugins")[0] == 0
    names = [info.name for info in build_app().registered_commands]
    assert names.count("plugins") == 1 and names.count("score") == 1 and "list" in names

def test_a_plugin_adds_a_command_and_a_clashing_name_is_one_clear_error(cli):
    from fmmforge.plugins.extensions import Command

    def hello(name: str = "world") -> None:
        """Say hello (a third party's command)."""
        print(f"hello {name}")

    def fake_list() -> None:
        """A second `list`."""

    plugin_manager().register(plugin(register_commands=[Command.of("hello", hello)]), name="greeter")
    code, out, _ = cli("hello", "--name", "fmmforge")
    assert code == 0 and out.strip() == "hello fmmforge"
    code, out, _ = cli("plugins")
    assert "hello" in out and "Say hello" in out
    plugin_manager().register(plugin(register_commands=[Command.of("list", fake_list)]), name="shadow")
    code, _, err = cli("list")
    assert code == 2
    assert "command 'list' is registered twice" in one_error(err)
    assert cli("show", "strassen")[0] == 0  # the other commands are untouched


def test_a_command_needs_exactly_one_of_callback_and_group():
    from fmmforge.plugins.extensions import Command, check_extension

    assert "exactly one" in check_extension("command", Command("x", "an x"))
    assert "description" in check_extension("command", Command("x", " ", callback=lambda: None))
    assert check_extension("command", Command.of("x", lambda: None)) is None  # no docstring: its name describes it


def test_the_backend_contract_is_on_the_contracts_floor():
    """core/contracts.py says what a codegen backend is (docs/architecture.md, floor 2), and the
    built-in backends follow it; the plugin layer re-exports it."""
    from fmmforge.codegen.backends import BUILTIN_BACKENDS
    from fmmforge.core import contracts
    from fmmforge.plugins import extensions

    assert extensions.Backend is contracts.Backend
    assert all(isinstance(b, contracts.Backend) for b in BUILTIN_BACKENDS)
    assert not isinstance(object(), contracts.Backend)
