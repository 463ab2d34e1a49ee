"""The `fmmforge` command line: the typer app, its commands from the plugin manager, exit codes.

Every command is a plugin's: the application's own command modules (the built-in plugins of kind
"command", fmmforge.plugins.manager.BUILTIN_PLUGINS) register theirs through the
``register_commands`` hook exactly as a third-party package would, and :func:`build_app`
installs whatever the plugin manager holds. A command name registered twice is kept, but running
it says which plugins clash, like any duplicate name.

Every command turns a FmmforgeError (bad input the user can fix) into one line on stderr and exit
code 2; usage errors (unknown options, bad values) are folded into one line too; any other
exception is a bug and exits :data:`INTERNAL_ERROR`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from fmmforge.core.app.console import console, err_console
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.version import __version__
from fmmforge.plugins.manager import load_builtins, plugin_manager
from fmmforge.plugins.registry import duplicate_message, registry


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


def _top_level(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the fmmforge version and exit")] = False,
) -> None:
    """Discover fast matrix-multiplication algorithms and turn them into fast kernels."""


def register_app_plugins() -> None:
    """Register the application's command modules (the built-in plugins of kind "command",
    fmmforge.plugins.manager.BUILTIN_PLUGINS) with the plugin manager (once per manager)."""
    load_builtins(plugin_manager(), commands=True)


def _clash(name: str, message: str) -> Any:
    def clashing() -> None:
        raise FmmforgeError(message)

    clashing.__doc__ = f"(not usable: {message})"
    return clashing


def build_app() -> typer.Typer:
    """A typer app with every registered command (a fresh one each time: no global state)."""
    from fmmforge.plugins.extensions import Command

    register_app_plugins()
    app = typer.Typer(
        name="fmmforge",
        help="Discover fast matrix-multiplication algorithms and turn them into fast kernels.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
    )
    app.callback()(_top_level)
    reg = registry("command")
    for name, regs in sorted(reg.entries.items()):
        if len(regs) == 1:
            regs[0].obj.install(app)
        else:
            Command(name, "a name registered twice", callback=_clash(name, duplicate_message("command", name, regs))).install(app)
    return app


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point; returns the exit code."""
    command = typer.main.get_command(build_app())
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = command.main(args=args, prog_name="fmmforge", standalone_mode=False)
    except FmmforgeError as exc:
        err_console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except Exception as exc:  # click's exceptions (typer may vendor click: match them by class name)
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "UsageError" in kinds:
            ctx = getattr(exc, "ctx", None)
            where = f"fmmforge {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "fmmforge --help"
            err_console.print(f"error: {exc.format_message()} (see `{where}`)", highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]
            return 2
        if "Abort" in kinds:
            err_console.print("interrupted", highlight=False)
            return 130
        if "Exit" in kinds:
            return int(getattr(exc, "exit_code", 0))
        return _internal_error(exc, args)
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        return 130
    except MemoryError:
        err_console.print("error: out of memory; try smaller sizes or formats, or free memory first",
                          highlight=False, markup=False, soft_wrap=True)
        return 2
    except BaseException as exc:  # noqa: BLE001 - anything else is a bug of ours, never a verdict
        if isinstance(exc, SystemExit):
            raise
        return _internal_error(exc, args)
    return int(code or 0)


# Exit codes: 0 fine, 1 a readable but invalid decomposition, 2 unusable input or environment,
# 130 interrupted, INTERNAL_ERROR a bug in fmmforge (EX_SOFTWARE from sysexits.h).
INTERNAL_ERROR = 70


def _internal_error(exc: BaseException, args: list[str]) -> int:
    """A crash is never reported as a verdict: one line that says it is a bug, its own exit code,
    and the traceback in a file for the report."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = ""
    try:
        fd, name = tempfile.mkstemp(prefix="fmmforge-crash-", suffix=".txt")
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(f"fmmforge {__version__}\nargs: {args!r}\n\n{text}")
        where = f"; the traceback is in {name}"
    except OSError:
        pass
    err_console.print(
        f"internal error (a bug in fmmforge {__version__}, not a problem with your input): "
        f"{type(exc).__name__}: {exc}{where}; please report it with the command you ran",
        highlight=False, markup=False, soft_wrap=True,
    )
    return INTERNAL_ERROR


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
