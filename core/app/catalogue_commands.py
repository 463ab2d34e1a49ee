"""The catalogue commands: list, show, verify, import, export, ranks, version, demo.

A built-in plugin of the application floor: :func:`register_commands` registers each command
through the plugin manager, exactly as a third party's command would be.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.table import Table

from fmmforge.core import catalogue
from fmmforge.core.app.console import FORMAT_HELP, console, counted, err_console, fmt_e
from fmmforge.core.app.scheme_files import load_file, mod2_hint
from fmmforge.core.decomposition import check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Provenance, Store
from fmmforge.core.tensor import parse_format
from fmmforge.core.version import __version__
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl


# ---------------------------------------------------------------------- list
def _format_moved(value: Optional[str]) -> Optional[str]:
    """`list --format` meant the matrix shape once; --format means a file type everywhere else."""
    if value is not None:
        raise typer.BadParameter(
            f"list takes the matrix format as --shape now (`fmmforge list --shape {value}`); "
            "--format means a file type in the other commands"
        )
    return value


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
    console.print(f"{counted(rows, 'algorithm')}; naive:n,m,p gives the classical algorithm for any format, "
                  "NAME*NAME the Kronecker product of two schemes.")


# ---------------------------------------------------------------------- show
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
FieldOpt = Annotated[Optional[str], typer.Option(help="Z (integers/rationals) or Z2 (mod 2); default: as the file says, else Z")]
ShapeOpt = Annotated[Optional[str], typer.Option(help="matrix format n,m,p (default: inferred from the file)")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help=FORMAT_HELP + "; default from the file's content")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="unpickle object arrays in an npz (runs code from the file: only for files you trust)")]


def verify(
    file: Annotated[Path, typer.Argument(help="algorithm file (- for standard input)")],
    format: FormatOpt = None,
    shape: ShapeOpt = None,
    field: FieldOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Check a file's decomposition(s) exactly. Exit 0 valid, 1 invalid (first wrong entry named), 2 unusable input."""
    schemes = load_file(file, format, shape, field, allow_pickle)
    bad = 0
    for label, d in schemes:
        result = d.verify()
        where = f"{label}: {d.target.describe()} rank {d.rank} over {d.field}"
        if result.valid:
            console.print(f"valid    {where}", highlight=False)
        else:
            bad += 1
            console.print(f"INVALID  {where}: {result.first_failure}{mod2_hint(d)}", highlight=False)
    if len(schemes) > 1:
        console.print(f"{len(schemes) - bad} valid, {bad} invalid", highlight=False)
    if bad:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- import / export
def import_cmd(
    file: Annotated[Path, typer.Argument(help="algorithm file, or a folder of them (- for standard input)")],
    format: FormatOpt = None,
    name: Annotated[Optional[str], typer.Option(help="name to use for it anywhere a catalogue name is accepted")] = None,
    shape: ShapeOpt = None,
    field: FieldOpt = None,
    allow_pickle: PickleOpt = False,
) -> None:
    """Verify a file's decomposition(s), or every file in a folder, and add the valid ones to the store."""
    if str(file) != "-" and file.is_dir():
        if name is not None:
            raise FmmforgeError(f"{file} is a folder; --name names one scheme, import its file alone to name it")
        _import_folder(file, format, shape, field, allow_pickle)
        return
    schemes = load_file(file, format, shape, field, allow_pickle)
    if name is not None and len(schemes) > 1:
        raise FmmforgeError(f"{file} holds {len(schemes)} schemes; --name needs one (pick it with --shape)")
    for label, d in schemes:  # all or nothing: check every scheme before writing any
        result = d.verify()
        if not result.valid:  # readable but invalid: exit 1, as verify says it
            err_console.print(f"error: {label} is not a valid scheme, nothing imported: {result.first_failure}"
                              f"{mod2_hint(d)}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1)
    store = Store()
    for label, d in schemes:
        origin = "stdin" if str(file) == "-" else file.name
        res = store.add(d, Provenance(source=f"import:{origin}", params={"label": label}), name=name)
        state = "added" if res.inserted else "already stored"
        console.print(
            f"{state}: {res.name or f'store:{res.id}'} {d.target.describe()} rank {d.rank} over {d.field} "
            f"(fingerprint {res.fingerprint})", highlight=False,
        )


def _folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (sub-folders too), hidden ones left out, in name order."""
    try:
        found = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    except OSError as exc:
        raise FmmforgeError(f"cannot list {folder}: {exc.strerror or exc}") from None
    if not found:
        raise FmmforgeError(f"{folder} holds no files; give a folder of scheme files")
    return found


def _import_folder(folder: Path, fmt: Optional[str], shape: Optional[str], field: Optional[str],
                   allow_pickle: bool) -> None:
    """Import every scheme of every file in ``folder``: each verified exactly, invalid ones never stored;
    a summary of what was imported, already known, invalid (first failing entry) or unsupported."""
    from fmmforge.core.app.console import task_bar

    files = _folder_files(folder)
    store = Store()
    imported = known = 0
    invalid: list[str] = []
    unsupported: list[str] = []
    with task_bar(console, counts=True) as progress:
        for done, path in enumerate(files):
            rel = path.relative_to(folder)
            progress(f"importing {rel}", done, len(files))
            try:
                schemes = load_file(path, fmt, shape, field, allow_pickle)
            except FmmforgeError as exc:
                unsupported.append(str(exc))
                continue
            for label, d in schemes:
                where = str(rel) if len(schemes) == 1 else f"{rel} [{label}]"
                result = d.verify()
                if not result.valid:
                    invalid.append(f"{where}: {d.target.describe()} rank {d.rank}: {result.first_failure}{mod2_hint(d)}")
                    continue
                res = store.add(d, Provenance(source=f"import:{rel}", params={"label": label}))
                imported += res.inserted
                known += not res.inserted
        progress("done", len(files), len(files))
    for line in invalid:
        console.print(f"INVALID      {line}", highlight=False, markup=False)
    for line in unsupported:
        console.print(f"unsupported  {line}", highlight=False, markup=False)
    console.print(
        f"{counted(len(files), 'file')}: {imported:,} imported, {known:,} already known, {len(invalid):,} invalid, "
        f"{len(unsupported):,} unsupported", highlight=False,
    )
    if invalid:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- ranks
def ranks(
    up_to: Annotated[int, typer.Option("--up-to", help="largest side of the formats listed")] = 6,
) -> None:
    """Best rank in the store per format and field beside the best known rank ('-': none known).

    Formats are listed as n <= m <= p: the rank of <n,m,p> is the same for every order of n, m, p
    (a scheme of one order gives one of any other), so the store's best over all orders is shown."""
    from fmmforge.core.known_ranks import best_known

    if not 2 <= up_to <= 12:
        raise FmmforgeError(f"--up-to {up_to} is out of range; give a side from 2 to 12")
    best: dict[tuple[tuple[int, int, int], str], int] = {}
    for (fmt_text, fld), algo in Store().best_ranks().items():
        fmt = tuple(sorted(parse_format(fmt_text)))
        # an integer scheme holds modulo 2 as well, so it counts for Z2 too
        for key_field in (fld, "Z2") if fld == "Z" and algo.decomposition.is_integral() else (fld,):
            key = (fmt, key_field)
            best[key] = min(best.get(key, algo.rank), algo.rank)  # type: ignore[index]
    table = Table("format", "naive", "store Z", "known Z", "store Z2", "known Z2", "open")
    for n in range(2, up_to + 1):
        for m in range(n, up_to + 1):
            for p in range(m, up_to + 1):
                cells, gaps = [], []
                for fld in ("Z", "Z2"):
                    have, known = best.get(((n, m, p), fld)), best_known((n, m, p), fld)
                    cells += ["-" if have is None else str(have), "-" if known is None else str(known)]
                    if known is not None and (have is None or have > known):
                        gaps.append(fld)
                table.add_row(f"<{n},{m},{p}>", str(n * m * p), *cells, " ".join(gaps) or "-")
    console.print(table)
    console.print("open: the fields where the store has no scheme of the best known rank yet; "
                  "store Z2 counts integer Z schemes too (they hold mod 2); "
                  "known '-': not in fmmforge's table (core/known_ranks.py)", highlight=False)


def export(
    name: Annotated[str, typer.Argument(help="catalogue or store name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write (- for standard output)")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help=FORMAT_HELP + "; default from -o's name (json for -o -)")] = None,
) -> None:
    """Write an algorithm to a file in any supported format."""
    from fmmforge.core.formats import check_format_name, encode, guess_write_format, write_file

    to_stdout = str(output) == "-"
    if format is not None:
        fmt = check_format_name(format)
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


def demo() -> None:
    """A walk-through of the catalogue: formulas, exact checks, symmetries, the store."""
    from fmmforge.core.app.demo import run_demo

    run_demo(console)


def version() -> None:
    """Print the fmmforge version."""
    console.print(__version__)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    for name, function in (("list", list_cmd), ("show", show), ("verify", verify), ("import", import_cmd),
                           ("export", export), ("ranks", ranks), ("demo", demo), ("version", version)):
        register(Command.of(name, function))
