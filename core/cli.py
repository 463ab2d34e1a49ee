"""The `fmmforge` command line.

Every command turns a FmmforgeError (bad input the user can fix) into one line on stderr
and exit code 2; usage errors (unknown options, bad values) are folded into one line too.
Other subpackages add their commands through :func:`register` (see plugins/commands.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fmmforge.core import catalogue
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Provenance, Store
from fmmforge.core.tensor import parse_format
from fmmforge.core.version import __version__

app = typer.Typer(
    name="fmmforge",
    help="Discover fast matrix-multiplication algorithms and turn them into fast kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)
# Piped output (files, tests, other programs) gets wide lines instead of wrapped table cells.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=400)

FORMAT_HELP = "file format: json (fmmforge's own), npz (DeepMind's), fastmm (Benson & Ballard's text)"


def fmt_e(e: object) -> str:
    return "-" if e is None else f"{float(e):g}"  # type: ignore[arg-type]


# ---------------------------------------------------------------------- list
def _format_moved(value: Optional[str]) -> Optional[str]:
    """`list --format` meant the matrix shape once; --format means a file type everywhere else."""
    if value is not None:
        raise typer.BadParameter(
            f"list takes the matrix format as --shape now (`fmmforge list --shape {value}`); "
            "--format means a file type in the other commands"
        )
    return value


@app.command("list")
def list_cmd(
    shape: Annotated[Optional[str], typer.Option("--shape", "-s", help="only this matrix format, e.g. 4,4,4")] = None,
    field: Annotated[Optional[str], typer.Option(help="only this field: Z or Z2")] = None,
    _format: Annotated[Optional[str], typer.Option("--format", "-f", hidden=True, callback=_format_moved)] = None,
) -> None:
    """List the catalogue (built-in and DeepMind's schemes) and the store: name, format, rank, field, nnz, e."""
    want = "<{},{},{}>".format(*parse_format(shape)) if shape else None
    if field:
        check_field(field)
    table = Table("name", "format", "rank", "field", "nnz U/V/W", "e", "source")
    table.columns[0].no_wrap = True
    rows = 0
    for entry in catalogue.builtin_summaries():
        if (want and entry.format != want) or (field and entry.field != field):
            continue
        table.add_row(entry.name, entry.format, str(entry.rank), entry.field, "/".join(map(str, entry.nnz)),
                      fmt_e(entry.stability), entry.source)
        rows += 1
    for algo in Store().all():
        if (want and algo.format != want) or (field and algo.field != field):
            continue
        source = algo.provenance.source + (f" ({algo.provenance.engine})" if algo.provenance.engine else "")
        table.add_row(algo.label, algo.format, str(algo.rank), algo.field, "/".join(map(str, algo.nnz)),
                      fmt_e(algo.stability), "store: " + source)
        rows += 1
    console.print(table)
    console.print(f"{rows} algorithms; naive:n,m,p gives the classical algorithm for any format, "
                  "NAME*NAME the Kronecker product of two schemes.")


# ---------------------------------------------------------------------- show
@app.command()
def show(name: Annotated[str, typer.Argument(help="catalogue or store name, e.g. strassen or alphatensor:4,4,5")]) -> None:
    """Print an algorithm as formulas: its products M_r and the outputs C_ik."""
    from fmmforge.core.formulas import render

    d = catalogue.resolve(name)
    s = d.summary()
    console.print(
        f"{name}: {s['format']} rank {d.rank} over {d.field}, nnz U/V/W {'/'.join(map(str, d.nnz))}, "
        f"{d.naive_additions} additions (naive), e = {fmt_e(s['stability'])}, fingerprint {d.fingerprint}",
        highlight=False,
    )
    if d.field == "Z2":
        console.print("coefficients are taken modulo 2 (valid over Z2 only)", highlight=False)
    for line in render(d):
        console.print(line, highlight=False, markup=False)


# ---------------------------------------------------------------------- verify
def _load_file(path: Path, fmt: Optional[str], shape: Optional[str], field: Optional[str],
               allow_pickle: bool) -> list[tuple[str, Decomposition]]:
    """Read a file's schemes (``-``: standard input, format from --format or the content)."""
    from fmmforge.core.formats import format_name, read_data, read_file, read_limited

    kind = None if fmt is None else format_name(fmt)
    if field is not None and field != "auto":
        check_field(field)
    options = dict(shape=parse_format(shape) if shape else None,
                   field=None if field in (None, "auto") else field, allow_pickle=allow_pickle)
    if str(path) == "-":
        data = read_limited(sys.stdin.buffer, "standard input")
        return read_data(data, kind, source="standard input", label="stdin", **options)  # type: ignore[arg-type]
    return read_file(path, kind, **options)  # type: ignore[arg-type]


def _mod2_hint(d: Decomposition) -> str:
    """For a scheme that fails over Z: say so if it would hold modulo 2 (a Z2 scheme read as Z)."""
    if d.field != "Z" or not d.is_integral():
        return ""
    as_z2 = Decomposition.unchecked(*d.numerators(), field="Z2", target=d.target)
    return " (it holds modulo 2: pass --field Z2 if it is a mod-2 scheme)" if as_z2.verify().valid else ""


FieldOpt = Annotated[Optional[str], typer.Option(help="Z (integers/rationals) or Z2 (mod 2); default: as the file says, else Z")]
ShapeOpt = Annotated[Optional[str], typer.Option(help="matrix format n,m,p (default: inferred from the file)")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help=FORMAT_HELP + "; default from the file name")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="unpickle object arrays in an npz (runs code from the file: only for files you trust)")]


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="algorithm file (- for standard input)")],
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    field: FieldOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Check a file's decomposition(s) exactly. Exit 0 valid, 1 invalid (first wrong entry named), 2 unusable input."""
    schemes = _load_file(file, format, shape, field, allow_pickle)
    bad = 0
    for label, d in schemes:
        result = d.verify()
        where = f"{label}: {d.target.describe()} rank {d.rank} over {d.field}"
        if result.valid:
            console.print(f"valid    {where}", highlight=False)
        else:
            bad += 1
            console.print(f"INVALID  {where}: {result.first_failure}{_mod2_hint(d)}", highlight=False)
    if len(schemes) > 1:
        console.print(f"{len(schemes) - bad} valid, {bad} invalid", highlight=False)
    if bad:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- import / export
@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="algorithm file (- for standard input)")],
    format: FormatOpt = None,
    name: Annotated[Optional[str], typer.Option(help="name to use for it anywhere a catalogue name is accepted")] = None,
    shape: ShapeOpt = None,
    field: FieldOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Verify a file's decomposition(s) and add them to the store."""
    schemes = _load_file(file, format, shape, field, allow_pickle)
    if name is not None and len(schemes) > 1:
        raise FmmforgeError(f"{file} holds {len(schemes)} schemes; --name needs one (pick it with --shape)")
    for label, d in schemes:  # all or nothing: check every scheme before writing any
        result = d.verify()
        if not result.valid:
            raise FmmforgeError(f"{label} is not a valid scheme, nothing imported: {result.first_failure}{_mod2_hint(d)}")
    store = Store()
    for label, d in schemes:
        origin = "stdin" if str(file) == "-" else file.name
        res = store.add(d, Provenance(source=f"import:{origin}", params={"label": label}), name=name)
        state = "added" if res.inserted else "already stored"
        console.print(
            f"{state}: {res.name or f'store:{res.id}'} {d.target.describe()} rank {d.rank} over {d.field} "
            f"(fingerprint {res.fingerprint})", highlight=False,
        )


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="catalogue or store name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write (- for standard output)")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help=FORMAT_HELP + "; default from -o's name (json for -o -)")] = None,
) -> None:
    """Write an algorithm to a file in any supported format."""
    from fmmforge.core.formats import encode, format_name, guess_write_format, write_file

    to_stdout = str(output) == "-"
    if format is not None:
        fmt = format_name(format)
    elif to_stdout:
        fmt = "json"  # fmmforge's own format, exact and self-describing
    else:
        fmt = guess_write_format(output)
    if to_stdout and fmt == "npz" and sys.stdout.isatty():
        raise FmmforgeError("npz is binary and standard output is a terminal; redirect it (> file.npz) or use -o FILE")
    d = catalogue.resolve(name)
    if to_stdout:
        data = encode(d, fmt)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_file(d, output, fmt)
    console.print(f"wrote {name} ({d.target.describe()} rank {d.rank}) to {output} as {fmt}", highlight=False)


@app.command()
def demo() -> None:
    """A walk-through of the catalogue: formulas, exact checks, symmetries, the store."""
    from fmmforge.core.demo import run_demo

    run_demo(console)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _top_level(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the fmmforge version and exit")] = False,
) -> None:
    """Discover fast matrix-multiplication algorithms and turn them into fast kernels."""


@app.command()
def version() -> None:
    """Print the fmmforge version."""
    console.print(__version__)


# ---------------------------------------------------------------------- entry point
# Subpackages that add commands: each module defines ``register(app: typer.Typer)``.
COMMAND_MODULES = (
    "fmmforge.core.store_commands",
    "fmmforge.plugins.commands",
    "fmmforge.core.search.commands",
    "fmmforge.hardware.commands",
    "fmmforge.codegen.commands",
    "fmmforge.core.app.report_commands",
)
_registered = False


def _register_extensions() -> None:
    """Add the commands of the other subpackages once (they import lazily what they need)."""
    global _registered
    if _registered:
        return
    _registered = True
    import importlib

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real missing dependency, not a subpackage not written yet
                raise
            continue
        module.register(app)


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point; returns the exit code."""
    _register_extensions()
    command = typer.main.get_command(app)
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
