"""The `fmmforge store` commands (a built-in command plugin): check the store, repair it.

``fmmforge store check`` verifies every stored row again, ignoring the cached verdicts, and
lists the rows that no longer read back as valid schemes (data unreadable or corrupted, a
scheme that fails the exact check, summary columns that disagree with the data, unreadable
provenance). Exit codes: 0 every row is healthy (or ``--repair`` removed the bad ones),
1 bad rows were found and left in place, 2 the store cannot be used at all.

``--repair`` removes the bad rows (and names left pointing at nothing); importing the scheme
again stores it anew. A bad row is never "fixed" in place: only data that verifies is stored.
"""

from __future__ import annotations

from typing import Annotated, Callable

import typer

from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl

store_app = typer.Typer(
    name="store", help="Check the algorithm store and remove the rows that no longer verify.",
    no_args_is_help=True, rich_markup_mode=None,
)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command("store", "Check the algorithm store and remove the rows that no longer verify.", group=store_app))


@store_app.command("check")
def check_cmd(
    repair: Annotated[bool, typer.Option("--repair", help="remove the bad rows (import their schemes again to restore them)")] = False,
) -> None:
    """Verify every stored row again. Exit 0 all healthy (or repaired), 1 bad rows found, 2 unusable store."""
    from fmmforge.core.app.console import console
    from fmmforge.core.store import Store

    store = Store()
    good, bad = store.check()
    for row in bad:
        console.print(f"BAD  {row.label}: {row.reason}", highlight=False, markup=False)
    total = len(good) + len(bad)
    if not bad:
        console.print(f"{total} stored algorithms checked in {store.path}: all healthy", highlight=False)
        return
    if not repair:
        console.print(f"{total} stored algorithms checked: {len(good)} healthy, {len(bad)} bad; "
                      "`fmmforge store check --repair` removes the bad ones", highlight=False)
        raise typer.Exit(1)
    removed = store.repair()
    for row in removed:
        console.print(f"removed {row.label}", highlight=False, markup=False)
    console.print(f"removed {len(removed)} bad rows; import their schemes again (`fmmforge import FILE`) "
                  "to store them anew", highlight=False)
    if len(removed) < len(bad):  # changed by another process meanwhile: check again
        raise typer.Exit(1)
