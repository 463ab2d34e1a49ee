"""`fmmforge demo` (what `make demo` runs): the catalogue walk-through on built-in defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fmmforge.core import catalogue
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.formats import read_file, write_file
from fmmforge.core.formulas import render
from fmmforge.core.store import Provenance, Store


def run_demo(console: Console) -> None:
    console.rule("1. Strassen's algorithm, exactly verified")
    strassen = catalogue.resolve("strassen")
    for line in render(strassen):
        console.print("   " + line, highlight=False, markup=False)
    console.print(f"   verify(): {strassen.verify().valid}, stability factor e = {strassen.stability_factor}")

    console.rule("2. The classical schemes and DeepMind's, side by side")
    table = Table("name", "format", "rank", "field", "naive rank", "additions", "e")
    for name in ("naive:2,2,2", "strassen", "strassen-winograd", "strassen-2x2x3", "laderman",
                 "alphatensor:3,4,5", "alphatensor:4,4,4", "alphatensor-mod2:4,4,4", "alphatensor:4,4,5"):
        d = catalogue.resolve(name)
        n, m, p = d.format  # type: ignore[misc]
        e = d.stability_factor
        table.add_row(name, d.target.describe(), str(d.rank), d.field, str(n * m * p), str(d.naive_additions),
                      "-" if e is None else f"{float(e):g}")
    console.print(table)

    console.rule("3. Symmetries keep a scheme valid")
    square = strassen.kron(strassen)
    console.print(f"   strassen ⊗ strassen: {square.target.describe()} rank {square.rank}, valid {square.verify().valid}")
    rotated = catalogue.resolve("alphatensor:3,4,5").rotate()
    console.print(f"   alphatensor:3,4,5 rotated: {rotated.target.describe()} rank {rotated.rank}, valid {rotated.verify().valid}")
    flipped = strassen.flip_signs([-1] * 7, [1] * 7).permute_terms(list(reversed(range(7))))
    console.print(f"   strassen with terms reversed and signs flipped: same fingerprint "
                  f"{flipped.fingerprint == strassen.fingerprint}")
    broken_u = strassen.numerators()[0].copy()
    broken_u[0, 0] += 1
    broken = Decomposition.unchecked(broken_u, *strassen.numerators()[1:], (2, 2, 2))
    console.print(f"   one coefficient changed: {broken.verify().first_failure}", highlight=False)

    console.rule("4. Export, re-import, store")
    store = Store()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "laderman.txt"
        write_file(catalogue.resolve("laderman"), path, "fastmm")
        (label, back), = read_file(path, "fastmm")
        console.print(f"   laderman -> fast-matmul text -> back: identical {back == catalogue.resolve('laderman')}")
    res = store.add(square.require_valid(), Provenance(source="demo"), name="strassen-square")
    console.print(f"   stored strassen-square in {store.path} ({'new' if res.inserted else 'already there'}), "
                  f"{len(store)} algorithm(s) in the store")
    console.print("\nNext: `fmmforge show alphatensor:4,4,5`, `fmmforge list --format 4,4,4`, `fmmforge --help`.")
