"""The `fmmforge report` command (a built-in command plugin): benchmark reports (fmmforge.reports) written to a directory and
printed as the same tables in the terminal; ``--compare A B`` puts two runs side by side;
``--runs`` lists the runs that selectors can name. See docs/reports.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.table import Table as RichTable
from rich.text import Text

from fmmforge.core.app.console import console
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl


RUNS_TITLE = ("runs (a run: one fmmforge command that recorded measurements, e.g. bench, score --reward latency, "
              "calibrate, tune; command -: records from before runs were kept, grouped by time)")


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("report", report_cmd))


def _print_table(title: str, frame) -> None:
    from fmmforge.reports.numbers import display

    headers, rows = display(frame)
    table = RichTable(title=Text(title), title_justify="left")
    for h in headers:  # Text, not markup: "[ms]" is a unit here, not a style
        table.add_column(Text(h))
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _print_report(report) -> None:

    console.print(report.subtitle, highlight=False, markup=False, soft_wrap=True)
    for section in report.sections:
        console.print(f"\n{section.title}", style="bold", highlight=False, markup=False)
        for note in section.notes:
            console.print(note, highlight=False, markup=False, soft_wrap=True)
        for table in section.tables:
            _print_table(table.title, table.frame)


def _compare(store, a: str, b: str, output: Optional[Path]) -> None:
    from fmmforge.reports import write_files
    from fmmforge.reports.compare import compare
    from fmmforge.reports.data import load_records
    from fmmforge.reports.render import markdown_table
    from fmmforge.reports.sections import Table

    table = compare(load_records(store), a, b)
    title = f"A = {a}, B = {b}"
    _print_table(title, table)
    console.print("kernel_ratio = B kernel time / A kernel time (below 1: B is faster); "
                  "a row only one side measured has - on the other", highlight=False, soft_wrap=True)
    if output is not None:
        md = f"# fmmforge compare\n\n{markdown_table(Table(title, table))}\n"
        write_files(output, {"compare.csv": table.to_csv(index=False).encode(), "compare.md": md.encode()})
        console.print(f"comparison: {output / 'compare.md'}", highlight=False, markup=False, soft_wrap=True)


def report_cmd(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="directory to write index.html, report.md, records.csv and the plots to")] = None,
    device: Annotated[Optional[str], typer.Option(help="device whose records to report (default: the only one recorded)")] = None,
    algos: Annotated[Optional[str], typer.Option(help="only these algorithms, comma separated")] = None,
    since: Annotated[Optional[str], typer.Option(help="only records measured since this ISO date (UTC), e.g. 2026-12-01")] = None,
    compare: Annotated[Optional[tuple[str, str]], typer.Option("--compare", help="two selectors A B, e.g. run:1 run:2, device:cpu device:cuda:0, version:0.1.0 version:0.2.0")] = None,
    runs: Annotated[bool, typer.Option("--runs", help="list the runs in the store (what run:N names)")] = False,
) -> None:
    """Write a benchmark report (HTML, Markdown, CSV) from the store's records; print its tables."""
    from fmmforge.core.store import Store

    store = Store()
    if runs:
        from fmmforge.reports.data import load_records, run_summary

        _print_table(RUNS_TITLE, run_summary(load_records(store)))
        return
    if compare is not None:
        _compare(store, compare[0], compare[1], output)
        return
    if output is None:
        raise FmmforgeError("give the directory to write the report to with -o DIR (or use --compare A B, or --runs)")
    from fmmforge.codegen.bench import parse_algos
    from fmmforge.reports import build_report, report_files, write_files

    report = build_report(store, device=device, algos=parse_algos(algos) if algos is not None else None, since=since)
    files = report_files(report)
    write_files(output, files)
    _print_report(report)
    console.print(f"\nreport: {output / 'index.html'} (also report.md and records.csv, "
                  f"{sum(name.endswith('.png') for name in files)} plots)", highlight=False, markup=False,
                  soft_wrap=True)
