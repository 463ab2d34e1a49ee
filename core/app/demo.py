"""`fmmforge demo` (what `make demo` runs): the whole job on built-in defaults.

Catalogue and exact verification, symmetries, formats and store; then a flip-graph search from
the naive <3,3,3> scheme to rank 23 (lifted to Z, stored); torch kernels generated for it and for
Strassen–Winograd, validated; a benchmark against torch.matmul, recorded in the store; and a
report of those measurements.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fmmforge.core import catalogue, transforms
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
    square = transforms.kron(strassen, strassen)
    console.print(f"   strassen ⊗ strassen: {square.target.describe()} rank {square.rank}, valid {square.verify().valid}")
    rotated = transforms.rotate(catalogue.resolve("alphatensor:3,4,5"))
    console.print(f"   alphatensor:3,4,5 rotated: {rotated.target.describe()} rank {rotated.rank}, valid {rotated.verify().valid}")
    flipped = transforms.permute_terms(transforms.flip_signs(strassen, [-1] * 7, [1] * 7), list(reversed(range(7))))
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
    found = _search(console, store)
    _codegen_and_bench(console, found)
    _report(console, store)
    console.print("\nNext: `fmmforge search 3x4x4 --field Z2 --rank 38`, `fmmforge codegen strassen-winograd --levels 2 "
                  "-o kernel/`, `fmmforge bench --sizes 4096 --levels 1,2`, `fmmforge plugins`, `fmmforge --help`.")


def _search(console: Console, store: Store) -> Decomposition:
    """Flip graphs from the naive <3,3,3> scheme down to Laderman's rank 23, lifted to Z and stored."""
    import os

    from fmmforge.core.contracts import Budget, SearchRequest
    from fmmforge.core.app.search_commands import run_search
    from fmmforge.core.search.engine import FlipGraphEngine

    console.rule("5. Search: flip graphs from naive <3,3,3> (rank 27) to rank 23, mod 2, lifted to Z")
    workers = max(1, min(2, os.cpu_count() or 1))
    request = SearchRequest(catalogue.resolve("naive:3,3,3"), field="Z2", target_rank=23, budget=Budget(seconds=120),
                            workers=workers, seed=1, start_label="naive:3,3,3", require_z=True)
    result, stored = run_search(FlipGraphEngine(), request, store, progress=True)
    found = result.lifted if result.lifted is not None and result.lifted.rank <= 23 else None
    console.print(f"   best mod 2: rank {result.best.rank} after {result.flips:,} flips in {result.seconds:.1f} s "
                  f"({workers} walker(s)); stored: {len(stored)} scheme(s)", highlight=False)
    if found is None:
        console.print("   no Z scheme of rank 23 in the budget this time; the kernels below use Laderman's")
        return catalogue.resolve("laderman")
    console.print(f"   lifted to Z: rank {found.rank}, verify() {found.verify().valid}, "
                  f"fingerprint {found.fingerprint[:12]}, e = {float(found.stability_factor or 0):g}", highlight=False)
    return found


def _codegen_and_bench(console: Console, found: Decomposition) -> None:
    """Kernels for the found scheme and Strassen–Winograd, validated, then timed against torch.mm."""
    from fmmforge.codegen.bench import measure
    from fmmforge.codegen.generate import generate
    from fmmforge.codegen.plan import ceiling, make_plan
    from fmmforge.plugins import get_backend

    torch_backend = get_backend("torch")

    def resolve(name: str) -> Decomposition:
        return found if name == "found-3x3x3" else catalogue.resolve(name)

    console.rule("6. Codegen: standalone torch kernels, validated against float64")
    cases = [("found-3x3x3", 1, 2304), ("strassen-winograd", 1, 2048), ("strassen-winograd", 2, 2048)]
    plans = []
    for name, levels, size in cases:
        plan, decomps = make_plan(name, levels, backend="torch", dtype="float32", device="cpu", resolve=resolve)
        kernel = generate(plan, decomps, backend=torch_backend)
        worst = max(r.max_error / r.bound for r in kernel.validation) if kernel.validation else float("nan")
        console.print(f"   {plan.describe()}: {kernel.module_path} (validated, worst error {worst:.1e} of its bound)",
                      highlight=False)
        plans.append((plan, decomps, size))

    console.rule("7. Benchmark against torch.matmul, interleaved in the same run (recorded in the store)")
    table = Table("kernel", "size", "kernel ms", "torch ms", "speed-up", "ceiling", "max error")
    for plan, decomps, size in plans:
        rec = measure(plan, decomps, (size,) * 3, backend=torch_backend, pairs=3, min_sample_s=0.05)
        table.add_row(plan.describe().split(",")[0] + f" L{plan.levels}", str(size), f"{rec.median_s * 1e3:.1f}",
                      f"{rec.baseline_median_s * 1e3:.1f}", f"{rec.speedup:.3f}", f"{ceiling(decomps):.3f}",
                      f"{rec.max_error:.1e}")
    console.print(table)
    console.print("   small sizes on a busy machine: benchmarks/cpu_speedup.py measures the full sizes", highlight=False)


def _report(console: Console, store: Store) -> None:
    """The benchmark report of what the demo measured (HTML with plots, Markdown, CSV)."""
    from fmmforge.core.paths import home_subdir
    from fmmforge.reports import write_report

    console.rule("8. Report: the measurements as HTML (plots inline), Markdown and CSV")
    index = write_report(store, home_subdir("reports", "demo"), device="cpu")
    console.print(f"   wrote {index} (open it in a browser), with report.md and records.csv beside it", highlight=False)
