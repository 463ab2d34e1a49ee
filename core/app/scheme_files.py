"""Reading scheme files for the commands (verify, import, search --start): the format from the
content unless given, ``-`` for standard input, and a hint for a mod-2 scheme read as Z."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from fmmforge.core import catalogue
from fmmforge.core.app.console import console
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.tensor import parse_format


def load_file(path: Path, fmt: Optional[str], shape: Optional[str], field: Optional[str],
               allow_pickle: bool) -> list[tuple[str, Decomposition]]:
    """Read a file's schemes (``-``: standard input, format from --format or the content)."""
    from fmmforge.core.formats import check_format_name, read_data, read_file, read_limited

    kind = None if fmt is None else check_format_name(fmt)
    if field is not None and field != "auto":
        check_field(field)
    options = dict(shape=parse_format(shape) if shape else None,
                   field=None if field in (None, "auto") else field, allow_pickle=allow_pickle)
    if str(path) == "-":
        data = read_limited(sys.stdin.buffer, "standard input")
        return read_data(data, kind, source="standard input", label="stdin", **options)  # type: ignore[arg-type]
    return read_file(path, kind, **options)  # type: ignore[arg-type]


def resolve_or_file(name: str, fmt: tuple[int, int, int] | None = None) -> Decomposition:
    """A catalogue or store name's scheme, else the scheme in the file of that path (format from its
    content; of an npz holding many, the one of matrix format ``fmt``), verified exactly: an invalid one is
    printed with its first wrong entry and exits 1, as `verify` does."""
    try:
        return catalogue.resolve(name)
    except FmmforgeError:
        path = Path(name)
        if not path.is_file():
            raise
    schemes = load_file(path, None, None, None, False)
    if len(schemes) > 1 and fmt is not None:  # an npz of many: the one of the format asked for
        schemes = [s for s in schemes if s[1].format == fmt] or schemes
    if len(schemes) != 1:
        raise FmmforgeError(f"{path} holds {len(schemes)} schemes; give a file of one (or import it and use a store name)")
    label, d = schemes[0]
    result = d.verify()
    if not result.valid:
        console.print(f"INVALID  {label}: {d.target.describe()} rank {d.rank} over {d.field}: "
                      f"{result.first_failure}{mod2_hint(d)}", highlight=False)
        raise typer.Exit(1)
    return d


def mod2_hint(d: Decomposition) -> str:
    """For a scheme that fails over Z: say so if it would hold modulo 2 (a Z2 scheme read as Z)."""
    if d.field != "Z" or not d.is_integral():
        return ""
    as_z2 = Decomposition.unchecked(*d.numerators(), field="Z2", target=d.target)
    return " (it holds modulo 2: pass --field Z2 if it is a mod-2 scheme)" if as_z2.verify().valid else ""
