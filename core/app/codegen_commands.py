"""The `fmmforge codegen` and `fmmforge bench` commands (a built-in command plugin)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.table import Table

from fmmforge.codegen import layouts
from fmmforge.core.app.console import counted
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl


def _variant_help() -> str:
    """``--variant``'s help: auto (what it resolves to), then every layout and what it is."""
    first = layouts.layout(layouts.AUTO_ORDER[0])
    where = f"{'/'.join(first.backends or ('any backend',))} on the {'/'.join(first.devices or ('any device',)).upper()}"
    named = [f"{x.name} ({x.help})" for x in layouts.LAYOUTS]
    return (f"{layouts.AUTO} ({first.name} for {where}, where it measures faster; else {layouts.AUTO_ORDER[-1]}), "
            + ", ".join(named[:-1]) + f" or {named[-1]}")


VARIANT_HELP = _variant_help()
REMAINDER_HELP = (f"sizes that do not divide: peel (fix-up gemms for the remainder), pad (torch "
                  f"{'/'.join(layouts.with_remainder('pad'))}: operands copied into zero-bordered buffers of the "
                  f"next multiple) or split (torch {'/'.join(layouts.with_remainder('split'))}: uneven blocks, the "
                  f"last ones shorter, no copies)")


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("codegen", codegen_cmd))
    register(Command.of("bench", bench_cmd))


def _mib(x: float) -> str:
    return f"{x / 2**20:.1f} MiB"


def check_output_dir(output: Path) -> None:
    """``-o`` must be a directory or a new path (checked before anything is generated)."""
    if output.exists() and not output.is_dir():
        raise FmmforgeError(f"-o {output} is an existing file, not a directory; give a directory (new or existing)")


def codegen_cmd(
    name: Annotated[str, typer.Argument(help="catalogue or store name; NAME/NAME for a different scheme per level")],
    backend: Annotated[str, typer.Option(help="torch, numpy or cupy (or a plugin's backend)")] = "torch",
    device: Annotated[str, typer.Option(help="cpu or cuda:N")] = "cpu",
    levels: Annotated[int, typer.Option(help="recursion levels (0 = the vendor gemm)")] = 1,
    dtype: Annotated[str, typer.Option(help="float32 or float64")] = "float32",
    cutoff: Annotated[int, typer.Option(help="blocks smaller than this go to the vendor gemm")] = 64,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="directory to write the kernel to")] = None,
    size: Annotated[Optional[int], typer.Option(help="square size N for the workspace figure (default 4096)")] = None,
    emit_only: Annotated[bool, typer.Option("--emit-only", help="write the source without running or validating it (e.g. CUDA code on a machine without a GPU); never cached")] = False,
    variant: Annotated[str, typer.Option(help=VARIANT_HELP)] = "auto",
    remainder: Annotated[str, typer.Option(help=REMAINDER_HELP)] = "peel",
) -> None:
    """Generate a validated kernel; print the plan, additions, workspace size and the module's path."""
    from fmmforge.codegen.generate import generate, gpu_offline_reason
    from fmmforge.codegen.plan import ceiling, check_layout, make_plan, resolve_variant, stability
    from fmmforge.core.additions import eliminate
    from fmmforge.core.app.console import console
    from fmmforge.hardware.devices import get_device
    from fmmforge.hardware.limits import MAX_LEVELS, check_int
    from fmmforge.plugins import get_backend

    variant = resolve_variant(variant, backend, device, remainder)
    check_layout(variant, backend, device, remainder)
    codegen_backend = get_backend(backend)
    check_int(levels, "--levels", minimum=0, maximum=MAX_LEVELS)
    check_int(cutoff, "--cutoff")
    check_int(size, "--size")
    if output is not None:
        check_output_dir(output)
    offline = None if emit_only else gpu_offline_reason(device, codegen_backend)
    if not emit_only and offline is None:
        get_device(device)
    plan, decomps = make_plan(name, levels, backend=backend, dtype=dtype, device=device, cutoff=cutoff,
                              variant=variant, remainder=remainder)
    note = None
    if offline is not None:  # a GPU kernel from a machine without one: written, compiled, marked unvalidated
        note = _offline_note(offline, generate(plan, decomps, backend=codegen_backend, validate=False, use_cache=False))
    kernel = generate(plan, decomps, backend=codegen_backend, validate=not emit_only and offline is None,
                      unvalidated_note=note)
    if output is not None:
        module_path = _write_output(kernel, output, note)
    else:
        module_path = kernel.module_path
    console.print(f"plan: {plan.describe()}", highlight=False)
    console.print(f"ceiling (n·m·p/R)^L = {ceiling(decomps):.4f}; error growth Π e = {stability(decomps):g}", highlight=False)
    table = Table("level", "algorithm", "format", "rank", "additions naive", "after CSE", "block passes emitted (set/acc)")
    for i, (d, lvl) in enumerate(zip(decomps, kernel.facts.get("levels", []))):
        adds = eliminate(d)
        cse = f"{adds.eliminated} (U {adds.U.eliminated}, V {adds.V.eliminated}, W {adds.W.eliminated})"
        passes = (f"{lvl.get('passes_set', '-')}/{lvl.get('passes_acc', '-')}" if "passes_set" in lvl
                  else lvl.get("passes", "fused (1 pass per side)"))
        table.add_row(str(i), plan.algorithms[i], "<{},{},{}>".format(*d.format), str(d.rank), str(d.naive_additions), cse, passes)
    if decomps:
        console.print(table)
    n = size or 4096
    itemsize = 4 if dtype == "float32" else 8
    frac = kernel.facts.get("workspace_fraction_square", 0.0)
    console.print(f"workspace: {frac:.3f} × size of C ({_mib(frac * n * n * itemsize)} at N={n}, {dtype})", highlight=False)
    if kernel.validation:
        worst = max(kernel.validation, key=lambda r: r.max_error / r.bound if r.bound else 0)
        console.print(f"validated on {len(kernel.validation)} shapes against float64: worst max error "
                      f"{worst.max_error:.2e} (bound {worst.bound:.2e})", highlight=False)
    elif note is not None:
        nvcc = note.get("nvcc")
        if nvcc:
            console.print(f"nvcc: {nvcc['command']}: {'compiled' if nvcc['ok'] else 'FAILED'} ({nvcc['message']})",
                          highlight=False, soft_wrap=True)
        elif "nvcc_skipped" in note:
            console.print(f"nvcc: {note['nvcc_skipped']}", highlight=False)
        console.print(f"NOT validated on this machine ({offline}): it is validated on its first use on "
                      f"{plan.device} and is never benchmarked or recorded before that", highlight=False, soft_wrap=True)
    else:
        console.print("NOT validated (--emit-only): run it on a machine with the device before trusting it", highlight=False)
    if "kernel.cu" in kernel.files and output is not None:
        console.print(f"cuda source: {output / 'kernel.cu'}", highlight=False)
    console.print(f"kernel: {module_path if module_path else '(not written; use -o DIR)'}", highlight=False)


def _offline_note(reason: str, kernel) -> dict:
    """What stands in for validation of a GPU kernel emitted here: why it was not run, and the
    nvcc compile of its CUDA C where there is one and nvcc is installed (a failure is an error)."""
    from fmmforge.codegen.backends import nvcc_check, nvcc_path

    note: dict = {"reason": reason, "validate_on": "first use on the device"}
    source = kernel.files.get("kernel.cu")
    if source is None:
        return note
    if nvcc_path() is None:
        note["nvcc_skipped"] = "not installed here; the CUDA C was not compiled"
        return note
    result = nvcc_check(source)
    if not result.ok:
        raise FmmforgeError(f"nvcc could not compile the generated CUDA C ({result.message}); "
                            "nothing was written (please report this)")
    note["nvcc"] = {"command": result.command, "ok": result.ok, "message": result.message}
    return note


def _write_output(kernel, output: Path, note: dict | None) -> Path:
    """The kernel's files in ``output``; an unvalidated one gets its validation.json (validated: false)."""
    import json

    from fmmforge.codegen.generate import VALIDATION_FILE, entry_info
    from fmmforge.codegen.kernel import writable_target_in
    from fmmforge.core.atomic import write_text

    module_path = kernel.write(output)
    if note is not None:
        write_text(writable_target_in(output, VALIDATION_FILE), json.dumps(entry_info(kernel, [], note), indent=1, default=str))
    return module_path


def check_bench_numbers(*, cutoff: int, threads: int | None, pairs: int, min_sample_ms: float) -> None:
    """bench's numeric options: positive, finite, and no larger than any run could use."""
    from fmmforge.hardware.limits import MAX_THREADS, check_float, check_int

    check_int(cutoff, "--cutoff")
    check_int(threads, "--threads", maximum=MAX_THREADS)
    check_int(pairs, "--pairs", maximum=1000)
    check_float(min_sample_ms, "--min-sample-ms", minimum=0.0, maximum=60_000.0, unit=" ms")


def bench_cmd(
    device: Annotated[str, typer.Option(help="cpu or cuda:N")] = "cpu",
    sizes: Annotated[str, typer.Option(help="N or MxKxN, comma separated")] = "2048,4096",
    algos: Annotated[str, typer.Option(help="algorithm names, comma separated")] = "strassen,strassen-winograd",
    levels: Annotated[str, typer.Option(help="recursion levels, comma separated")] = "1,2",
    dtype: Annotated[str, typer.Option(help="float32 or float64")] = "float32",
    backend: Annotated[str, typer.Option(help="torch, numpy or cupy")] = "torch",
    cutoff: Annotated[int, typer.Option(help="leaf cut-off")] = 64,
    threads: Annotated[Optional[int], typer.Option(help="threads (default: as configured)")] = None,
    pairs: Annotated[int, typer.Option(help="interleaved kernel/baseline samples per row")] = 5,
    memory: Annotated[bool, typer.Option("--memory", help="also measure each kernel's peak extra memory")] = False,
    min_sample_ms: Annotated[float, typer.Option(help="each timed sample repeats the call for at least this long")] = 50.0,
    variant: Annotated[str, typer.Option(help=VARIANT_HELP)] = "auto",
    remainder: Annotated[str, typer.Option(help=REMAINDER_HELP)] = "peel",
    ignore_memory: Annotated[bool, typer.Option("--ignore-memory", help="run even when the largest size needs more memory than the device has available")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as one JSON document on standard output (progress goes to standard error)")] = False,
) -> None:
    """Measure kernels against the vendor matmul in the same run; record every row; print the table."""
    from fmmforge.codegen.bench import parse_algos, parse_levels, parse_sizes, run_bench
    from fmmforge.codegen.plan import check_layout, resolve_variant
    from fmmforge.core.app.console import console, err_console
    from fmmforge.plugins import get_backend

    variant = resolve_variant(variant, backend, device, remainder)
    check_layout(variant, backend, device, remainder)
    size_list = parse_sizes(sizes)
    algo_list = parse_algos(algos)
    level_list = parse_levels(levels)
    codegen_backend = get_backend(backend)
    check_bench_numbers(cutoff=cutoff, threads=threads, pairs=pairs, min_sample_ms=min_sample_ms)
    table = Table("algorithm", "L", "size", "kernel ms", "IQR", "vendor ms", "IQR", "speed-up", "GFLOP/s",
                  "ceiling", "eff", "max err", "peak extra")
    problems: list[str] = []

    progress = err_console if as_json else console

    def on_row(row) -> None:
        r = row.record
        progress.print(f"measured {r.algorithm} L{r.levels} {r.m}x{r.k}x{r.n}: {r.speedup:.3f}x", highlight=False)

    rows = run_bench(algo_list, level_list, size_list, device=device, backend=codegen_backend, dtype=dtype,
                     cutoff=cutoff, threads=threads, pairs=pairs, measure_memory=memory, on_row=on_row, on_error=problems.append,
                     min_sample_s=min_sample_ms / 1e3, variant=variant, memory_check=not ignore_memory,
                     remainder=remainder)
    if as_json:
        _print_json(rows, problems)
        if problems:
            raise typer.Exit(2)
        return
    for row in rows:
        r = row.record
        table.add_row(r.algorithm, str(r.levels), f"{r.m}x{r.k}x{r.n}", f"{r.median_s * 1e3:.2f}", f"{r.iqr_s * 1e3:.2f}",
                      f"{r.baseline_median_s * 1e3:.2f}", f"{r.baseline_iqr_s * 1e3:.2f}", f"{r.speedup:.3f}",
                      f"{r.gflops:.1f}", f"{row.ceiling:.3f}", f"{row.efficiency:.2f}",
                      f"{r.max_error:.1e}" if r.max_error is not None else "-",
                      _mib(r.peak_extra_bytes) if r.peak_extra_bytes is not None else "-")
    console.print(table)
    layout = "" if variant == "lowmem" else f", variant {variant}"
    console.print(f"{counted(len(rows), 'measurement')} recorded in the store ({dtype}, {device}, backend {backend}{layout}); "
                  "speed-up = vendor median / kernel median, GFLOP/s = 2MKN/t, ceiling = (nmp/R)^L, eff = speed-up/ceiling",
                  highlight=False, soft_wrap=True)
    for p in problems:
        err_console.print(f"error: {p}", highlight=False, markup=False, soft_wrap=True)
    if problems:
        raise typer.Exit(2)  # exit 1 means an invalid decomposition, never "some rows failed"


def _print_json(rows: list, problems: list[str]) -> None:
    """The bench results for scripts and CI: every recorded row with its derived figures."""
    import dataclasses
    import json
    import sys

    from fmmforge.core.version import __version__

    doc = {
        "schema": "fmmforge.bench", "version": 1, "fmmforge_version": __version__,
        "rows": [{**dataclasses.asdict(row.record), "gflops": row.record.gflops, "ceiling": row.ceiling,
                  "efficiency": row.efficiency} for row in rows],
        "problems": problems,
        "units": {"median_s": "s", "iqr_s": "s", "baseline_median_s": "s", "baseline_iqr_s": "s",
                  "gflops": "GFLOP/s (2MKN/t)", "peak_extra_bytes": "bytes", "workspace_bytes": "bytes"},
    }
    sys.stdout.write(json.dumps(doc, indent=1) + "\n")
