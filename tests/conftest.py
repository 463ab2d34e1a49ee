from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Every test gets its own empty store: tests never touch the user's data."""
    home = tmp_path / "fmmforge-home"
    monkeypatch.setenv("FMMFORGE_HOME", str(home))
    return home


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from fmmforge.core.app.cli import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def builtin_rewards_only(monkeypatch):
    """A freshly loaded plugin manager with the built-in rewards only: no third-party plugins and
    no engines or backends, so a test sees a known set of names (the CLI's commands still load)."""
    from fmmforge.plugins import reset_plugin_manager

    monkeypatch.setenv("FMMFORGE_PLUGINS", "")
    from tests.helpers import builtin_rewards_and_commands

    monkeypatch.setattr("fmmforge.plugins.manager.BUILTIN_PLUGINS", builtin_rewards_and_commands())
    reset_plugin_manager()
    yield
    reset_plugin_manager()
