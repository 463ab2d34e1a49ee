"""`fmmforge demo` (what `make demo` runs): the whole loop on built-in defaults, about five minutes.

Catalogue and exact verification, symmetries, formats and store; a flip-graph search from the
naive <3,3,3> scheme to rank 23 (lifted to Z, stored); calibration of this CPU's cost model;
``fmmforge tune`` at 4096 (the engine collects schemes, the model ranks the plans, the best are
generated, validated and measured, the fastest becomes the choice); ``fmmforge.matmul`` called on
that shape; and a report of the measurements.
"""


from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fmmforge.core import catalogue, transforms
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.formats import read_file, write_file
from fmmforge.core.formulas import render
from fmmforge.core.store import Provenance, Store
from fmmforge.core.app.console import counted, task_bar

DEMO_SIZE = 4096
DEMO_CALIBRATE_S = 120.0
DEMO_TUNE_S = 180.0


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
    _search(console, store)
    _calibrate(console)
    _tune(console)
    _use_matmul(console)
    _report(console, store)
    console.print("\nNext: `fmmforge tune --shape 8192 --budget 20m`, `fmmforge tune --device tpu-v4 --shape 8192`, "
                  "`fmmforge search 3x4x4 --field Z2 --rank 38`, `fmmforge bench --sizes 4096 --levels 1,2`, "
                  "`fmmforge --help`.")


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
        console.print("   no Z scheme of rank 23 in the budget this time; the tuner still has Laderman's and DeepMind's")
        return catalogue.resolve("laderman")
    console.print(f"   lifted to Z: rank {found.rank}, verify() {found.verify().valid}, "
                  f"fingerprint {found.fingerprint[:12]}, e = {float(found.stability_factor or 0):g}", highlight=False)
    return found


def _calibrate(console: Console) -> None:
    """Fit this CPU's cost model, measuring the records and vendor-gemm timings it needs."""
    from fmmforge.codegen.calibrate import calibrate
    from fmmforge.codegen.costmodel import current_key
    from fmmforge.plugins import get_backend

    console.rule("6. Calibrate: this CPU's cost model, fitted on measured kernels (held-out error beside it)")
    try:
        with task_bar(console) as progress:
            result = calibrate(current_key("cpu", "float32"), backend=get_backend("torch"), budget_s=DEMO_CALIBRATE_S,
                               progress=lambda phase, done, total, label: progress(f"{phase}: {label}", done, total))
    except FmmforgeError as exc:  # too few records in the time given: the tuner ranks by its prior model
        console.print(f"   not calibrated: {exc}", highlight=False)
        return
    q = result.model.quality
    console.print(f"   fitted on {counted(result.model.fitted_on, 'record')} ({result.measured_records} measured now), "
                  f"{len(result.model.gemm.points)} vendor-gemm timings", highlight=False)
    if q is not None:
        rho = "-" if q.spearman is None else f"{q.spearman:.2f}"
        console.print(f"   held-out median |error| {q.median_ape:.1f} %, rank correlation across plans {rho}", highlight=False)
        if q.repeat_line():
            console.print(f"   {q.repeat_line()}", highlight=False)
        if q.poor_line():
            console.print(f"   {q.poor_line()}", highlight=False)


def _tune(console: Console) -> object:
    """Tune 4096x4096x4096 float32: collect, rank by the model, measure the best, choose."""
    from fmmforge.codegen.tune import TuneRequest
    from fmmforge.core.app.tune_commands import _print_tune, tune

    console.rule(f"7. Tune {DEMO_SIZE}x{DEMO_SIZE}x{DEMO_SIZE} float32: the engine collects schemes, the model ranks "
                 "every plan, the best are measured")
    with task_bar(console) as progress:
        result = tune(TuneRequest(shape=(DEMO_SIZE,) * 3, budget_s=DEMO_TUNE_S, top_k=2, collect=20),
                      progress=lambda p: progress(f"{p.phase} | best {p.best_speedup or 0:.3f}x | {p.text}", p.done, p.total))
    _print_tune(result, console)
    return result


def _use_matmul(console: Console) -> None:
    """fmmforge.matmul on the tuned shape: which kernel it runs, its error, its time beside torch's."""
    import time

    import torch

    import fmmforge

    console.rule("8. fmmforge.matmul(A, B): the tuned kernel where it measured faster, torch.matmul otherwise")
    A, B = torch.rand(DEMO_SIZE, DEMO_SIZE) * 2 - 1, torch.rand(DEMO_SIZE, DEMO_SIZE) * 2 - 1
    fmmforge.matmul.refresh()
    route = fmmforge.matmul.decide(A, B)
    C = fmmforge.matmul(A, B)
    ref = A.double() @ B.double()
    err = float((C.double() - ref).abs().max())
    times = {"fmmforge.matmul": [], "torch.matmul": []}
    for _ in range(3):
        for name, fn in (("fmmforge.matmul", fmmforge.matmul), ("torch.matmul", torch.matmul)):
            t0 = time.perf_counter()
            fn(A, B)
            times[name].append(time.perf_counter() - t0)
    fast, slow = min(times["fmmforge.matmul"]), min(times["torch.matmul"])
    what = "torch.matmul (no tuned kernel beats it here)" if route is None else route.choice.to_plan().describe()
    console.print(f"   routes to: {what}", highlight=False)
    console.print(f"   max |C - A·B| against float64: {err:.1e}; best of 3: fmmforge.matmul {fast * 1e3:.0f} ms, "
                  f"torch.matmul {slow * 1e3:.0f} ms ({slow / fast:.3f}x)", highlight=False)


def _report(console: Console, store: Store) -> None:
    """The benchmark report of what the demo measured (HTML with plots, Markdown, CSV)."""
    from fmmforge.core.paths import home_subdir
    from fmmforge.reports import write_report

    console.rule("9. Report: the measurements, the model and the choice as HTML (plots inline), Markdown and CSV")
    index = write_report(store, home_subdir("reports", "demo"), device="cpu")
    console.print(f"   wrote {index} (open it in a browser), with report.md and records.csv beside it", highlight=False)
