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
