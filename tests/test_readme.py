"""The README claims only what exists: every `fmmforge ...` line it shows parses as that command.

Each command line in the README's code blocks is parsed by the real command-line app (the option
names, their values' types, the arguments), without running it; a renamed or removed option, a
misspelt command or an option moved to another command fails here. The README's Python lines name
only attributes the package has.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_code_lines() -> list[str]:
    """The lines of the README's indented code blocks (four spaces), without the indent."""
    return [line[4:] for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("    ")]


def readme_invocations() -> list[list[str]]:
    """Every `fmmforge ...` invocation in the README's code blocks, as argument lists (comments
    dropped, `&&` chains split)."""
    found = []
    for line in readme_code_lines():
        line = line.split("  #", 1)[0].strip()
        for part in line.split("&&"):
            if part.strip().startswith("fmmforge "):
                found.append(shlex.split(part.strip(), comments=True)[1:])
    return found


def test_the_readme_shows_a_first_session_of_real_commands():
    invocations = readme_invocations()
    commands = {words[0] for words in invocations}
    for needed in ("list", "show", "search", "verify", "export", "score", "codegen", "bench", "calibrate", "tune",
                   "report"):
        assert needed in commands, f"the README's first session does not show `fmmforge {needed}`"
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


@pytest.mark.parametrize("words", readme_invocations(), ids=lambda words: " ".join(words)[:60])
def test_every_readme_command_line_parses(words):
    from fmmforge.core.app.cli import build_app

    group = typer.main.get_command(build_app())
    ctx = group.make_context("fmmforge", [], resilient_parsing=True)
    name, cmd, args = group.resolve_command(ctx, list(words))
    assert cmd is not None, f"no command {words[0]!r}"
    while hasattr(cmd, "resolve_command"):  # a sub-group such as `store check`
        sub_ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        name, cmd, args = cmd.resolve_command(sub_ctx, args)
    try:
        cmd.make_context(name, list(args), parent=ctx)
    except Exception as exc:  # typer's (vendored click's) UsageError: an option or argument the command does not take
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"`fmmforge {' '.join(words)}`: {message}")


def test_the_readme_python_names_exist():
    import fmmforge
    import fmmforge.core.catalogue

    text = "\n".join(readme_code_lines())
    for attr in set(re.findall(r"\bfmmforge\.(\w+)", text)) - {"core"}:
        assert hasattr(fmmforge, attr), f"the README uses fmmforge.{attr}, which does not exist"
    assert "resolve" in text and hasattr(fmmforge.core.catalogue, "resolve")
