"""The `fmmforge calibrate` and `fmmforge tune` commands (a built-in command plugin): fit the cost
model of a device, and tune the device's choice of kernel for a shape (codegen.tune, handed the
registered search engine and the torch backend here: :func:`tune`); and --for-model's shapes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Callable

import typer

from fmmforge.codegen import layouts as kernel_layouts
from fmmforge.core.app.console import counted
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from rich.console import Console

    from fmmforge.codegen.tune import TuneProgress, TuneRequest, TuneResult
    import torch

    from fmmforge.core.store import Store

Shape = tuple[int, int, int]

INTERRUPTED = 130


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("calibrate", calibrate_cmd))
    register(Command.of("tune", tune_cmd))


def calibrate_cmd(
    device: Annotated[str, typer.Option(help="cpu or cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or float64")] = "float32",
    budget: Annotated[str, typer.Option(help="time it may spend measuring what the store lacks, e.g. 90s, 4m, 240 (0: measure nothing)")] = "240",
    threads: Annotated[int, typer.Option(help="threads the model is for (default: torch's current count)")] = 0,
) -> None:
    """Fit the cost model of a device from its benchmark records (measuring what is missing within
    --budget), print its held-out error and store it for the latency-model reward and reports."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fmmforge.codegen.calibrate import calibrate
    from fmmforge.codegen.costmodel import PARAMETERS, current_key
    from fmmforge.core.app.console import console, err_console
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.hardware.devices import get_device
    from fmmforge.hardware.limits import check_int
    from fmmforge.plugins import get_backend

    budget_s = calibrate_budget(budget)
    if threads:
        check_int(threads, "--threads")
    if threads < 0:
        raise FmmforgeError(f"--threads must be >= 1 (or 0 for torch's current count), not {threads}")
    dev = get_device(device)
    key = current_key(dev.name, dtype, threads or None)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int, label: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total,
                       description=f"{phase} (budget {budget_s:g} s): {label}")

        try:
            result = calibrate(key, backend=get_backend("torch"), budget_s=budget_s, progress=progress)
        except KeyboardInterrupt:
            bar.stop()
            err_console.print("interrupted: every measurement already taken is kept in the store; "
                              "run `fmmforge calibrate` again to go on", highlight=False)
            raise typer.Exit(INTERRUPTED) from None
    model = result.model
    console.print(f"cost model for {key.describe()}: fitted on {counted(model.fitted_on, 'record')} "
                  f"({result.measured_records} measured now, {result.skipped} not usable), "
                  f"{len(model.gemm.points)} vendor-gemm timings ({result.measured_gemms} measured now)",
                  highlight=False, soft_wrap=True)
    console.print("parameters: " + ", ".join(f"{p} {v:.4g}" for p, v in zip(PARAMETERS, model.parameters)),
                  highlight=False, soft_wrap=True)
    q = model.quality
    if q is not None:
        rho = f"{q.spearman:.3f} (median over {counted(q.sizes_ranked, 'size')})" if q.spearman is not None else "- (no size has 3 plans)"
        console.print(f"held-out (leave-one-out) median |error| {q.median_ape:.2f} %; "
                      f"rank correlation across plans at a size {rho}", highlight=False, soft_wrap=True)
        if q.repeat_line():
            console.print(q.repeat_line(), highlight=False, soft_wrap=True)
        if q.poor_line():
            console.print(q.poor_line(), highlight=False, soft_wrap=True)


def calibrate_budget(text: str) -> float:
    """``--budget`` of calibrate: a time in the grammar of tune's and search's (core.search.budget.
    parse_duration: 90s, 2m, 1h30m, a bare number of seconds), or 0: measure nothing."""
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.core.search.budget import parse_duration

    wrong = FmmforgeError(f"cannot read --budget {text!r}; give a time like 90s, 4m or 240 (seconds), "
                          "or 0 to measure nothing")
    try:
        seconds = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except FmmforgeError:
            raise wrong from None
    if not math.isfinite(seconds) or seconds < 0:
        raise wrong
    return seconds


def parse_formats(text: str) -> tuple[tuple[int, int, int], ...]:
    """``4x4x4,2x2x3`` (or ``4,4,4;2,2,3``): the formats the tuner may use."""
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.core.tensor import parse_format

    items = [t.strip() for t in text.replace(";", " ").replace(",", " ").split()] if "x" in text else \
        [t.strip() for t in text.split(";")]
    out = tuple(parse_format(t) for t in items if t)
    if not out:
        raise FmmforgeError(f"no formats in {text!r}; write e.g. --formats 4x4x4,2x2x3")
    return out


def tune_cmd(
    device: Annotated[str, typer.Option(help="cpu, cuda:N, or a spec-only chip (tpu-v4: ranked by its analytic model, nothing runs)")] = "cpu",
    shape: Annotated[str, typer.Option(help="M×K×N to tune for, e.g. 4096x4096x4096 (one number: square)")] = "4096",
    dtype: Annotated[str, typer.Option(help="float32 or float64 (a TPU: bfloat16, its default)")] = "",
    budget: Annotated[str, typer.Option(help="time for everything: search, calibration, measuring (90s, 20m, 1h)")] = "20m",
    engine: Annotated[str, typer.Option(help="search engine that collects schemes (any registered engine)")] = "flip",
    formats: Annotated[str, typer.Option(help="formats to use, e.g. 4x4x4,2x2x3 (default: every n,m,p in 2..4 that fits)")] = "",
    max_levels: Annotated[int, typer.Option(help="deepest plan (levels of recursion)")] = 3,
    top_k: Annotated[int, typer.Option(help="candidates measured per round")] = 3,
    pairs: Annotated[int, typer.Option(help="interleaved timing pairs per measurement")] = 5,
    collect: Annotated[int, typer.Option(help="distinct schemes the engine collects from each starting scheme (0: no search)")] = 40,
    min_leaf: Annotated[int, typer.Option(help="smallest leaf block side a plan may reach")] = 256,
    threads: Annotated[int, typer.Option(help="threads (default: torch's current count)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the search")] = 0,
    for_model: Annotated[str, typer.Option(help="module:callable giving a torch model: tune its Linear layers' shapes (the budget is shared)")] = "",
    rows: Annotated[int, typer.Option(help="with --for-model: input rows per call (batch x tokens)")] = 0,
    variants: Annotated[str, typer.Option(help=f"kernel layouts to try, e.g. lowmem,fused (default: every one the device has; cpu: {', '.join(kernel_layouts.modelled('cpu'))})")] = "",
) -> None:
    """Tune the device's kernel for a shape: the engine collects schemes, the cost model ranks every
    plan, the best are generated, validated and measured, the model is refitted, and the fastest
    measured is stored as the device's choice (what fmmforge.matmul uses). Ctrl-C keeps every record."""
    from fmmforge.core.app.console import console, err_console
    from fmmforge.codegen.tune import TuneRequest
    from fmmforge.codegen.tune.candidates import formats_for
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.core.search.budget import parse_duration
    from fmmforge.core.tensor import parse_shape
    from fmmforge.hardware.devices import get_device
    from fmmforge.hardware.limits import MAX_DIMENSION, check_int

    dev = get_device(device, runnable=False)
    if not dtype:
        dtype = "float32"
        if dev.kind == "spec":
            from fmmforge.hardware.chips import load_chip

            dtype = load_chip(dev.name).default_dtype
    if threads:
        check_int(threads, "--threads")
    if threads < 0:
        raise FmmforgeError(f"--threads must be >= 1 (or 0 for torch's current count), not {threads}")
    check_int(seed, "--seed", minimum=0, maximum=2**32 - 1)
    shapes = [parse_shape(shape, "shape", MAX_DIMENSION)]
    if for_model:
        if rows < 1:
            raise FmmforgeError("--for-model needs --rows, the input rows per call (batch x tokens), e.g. --rows 2048")
        check_int(rows, "--rows", maximum=MAX_DIMENSION)
        shapes = linear_shapes(load_model_callable(for_model), rows)
        if not shapes:
            raise FmmforgeError(f"{for_model} has no torch.nn.Linear layers: nothing to tune")
    elif rows:
        raise FmmforgeError("--rows is for --for-model; give the shape with --shape")
    total_s = parse_duration(budget)
    chosen_layouts = tuple(v.strip() for v in variants.split(",") if v.strip()) or None
    if variants and chosen_layouts is None:
        raise FmmforgeError(f"--variants {variants!r} names no layout; write e.g. --variants lowmem,fused")
    requests = [TuneRequest(device=dev.name, shape=s, dtype=dtype, budget_s=total_s / len(shapes), engine=engine,
                            formats=parse_formats(formats) if formats else None, max_levels=max_levels, top_k=top_k,
                            pairs=pairs, collect=collect, min_leaf=min_leaf, threads=threads or None, seed=seed,
                            variants=chosen_layouts)
                for s in shapes]
    for request in requests[:1]:
        request.variants_for(dev.kind)  # a layout the device has not is refused before anything runs
    if dev.kind != "spec":
        from fmmforge.plugins import get_engine

        get_engine(engine)  # an unknown engine is refused before anything runs
    if for_model:
        console.print(f"{for_model}: {len(shapes)} Linear shape(s) at {rows} rows: "
                      + ", ".join("x".join(map(str, s)) for s in shapes), highlight=False, soft_wrap=True)
    for request in requests:
        if for_model and not formats_for(request.shape, request):
            console.print(f"{'x'.join(map(str, request.shape))}: too small for any plan with leaves of at least "
                          f"{request.min_leaf}; the vendor matmul it stays", highlight=False)
            continue
        _tune_one(request, console, err_console)


def tune(request: TuneRequest, *, store: Store | None = None,
         progress: Callable[[TuneProgress], None] | None = None) -> TuneResult:
    """The tuning loop (codegen.tune.tune) with what it is handed from above codegen: the
    registered engine ``request.engine`` collecting schemes (none when ``request.collect`` is 0)
    and the torch backend measuring. ``fmmforge.tune`` is this."""
    from fmmforge.codegen.tune import tune as tuning_loop
    from fmmforge.plugins import get_backend, get_engine

    engine = get_engine(request.engine) if request.collect else None
    return tuning_loop(request, engine=engine, backend=get_backend("torch"), store=store, progress=progress)


def _tune_one(request: TuneRequest, console: Console, err_console: Console) -> None:
    """One shape's tune, with its progress bar and what it found."""
    from fmmforge.codegen.tune import TuneProgress
    from fmmforge.core.app.console import task_bar

    with task_bar(err_console, counts=True) as update:

        def progress(p: TuneProgress) -> None:
            best = f"best measured {p.best_speedup:.3f}x" if p.best_speedup else "nothing measured yet"
            update(f"{p.phase} | {best} | {p.text}", p.done, p.total)

        result = tune(request, progress=progress)
    _print_tune(result, console)
    if result.interrupted:
        err_console.print("interrupted: every measurement taken is kept in the store; run `fmmforge tune` again "
                          "to go on (measured plans are not measured again)", highlight=False)
        raise typer.Exit(INTERRUPTED)


def _print_tune(result: TuneResult, console: Console) -> None:
    """The ranking's head, what was measured, and the choice, in words."""
    from rich.table import Table

    r = result.request
    where = f"{r.device}, {'x'.join(map(str, r.shape))} {r.dtype}"
    console.print(f"tune {where}: {counted(result.schemes, 'scheme')} ({result.found_by_engine} found by {r.engine}), "
                  f"{counted(result.candidates, 'plan')} ranked by {result.model}, {counted(result.rounds, 'round')}, "
                  f"{counted(len(result.measured), 'measurement')} in {result.seconds:.0f} s", highlight=False, soft_wrap=True)
    if result.measured:
        again = {m.candidate.identity: m for m in result.confirmed}
        table = Table("plan", "predicted", "measured", "again", "kernel ms", "vendor ms")
        for m in sorted(result.measured, key=lambda m: -m.speedup)[:10]:
            p = m.candidate.predicted_speedup
            a = again.get(m.candidate.identity)
            table.add_row(m.candidate.label, "-" if p != p else f"{p:.3f}x", f"{m.speedup:.3f}x",
                          "" if a is None else f"{a.speedup:.3f}x", f"{m.median_s * 1e3:.1f}",
                          f"{m.baseline_median_s * 1e3:.1f}")
        console.print(table)
    elif result.ranking:
        table = Table("plan", "predicted speed-up", "predicted ms")
        for c in result.ranking[:10]:
            table.add_row(c.label, f"{c.predicted_speedup:.3f}x", f"{c.predicted_s * 1e3:.3f}")
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.spec_only:
        top = result.ranking[0]
        console.print(f"best predicted on {r.device}: {top.label}, {top.predicted_speedup:.3f}x the standard matmul "
                      "(analytic model; nothing ran, so no choice is stored)", highlight=False, soft_wrap=True)
    elif result.best is not None:
        b = result.best
        p = b.candidate.predicted_speedup
        console.print(f"choice for {where}: {b.candidate.label}, measured {b.speedup:.3f}x the vendor matmul "
                      f"(model predicted {'-' if p != p else f'{p:.3f}x'}); stored, fmmforge.matmul uses it",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"choice for {where}: the vendor matmul. Nothing measured beat it by more than "
                      f"{(r.min_speedup - 1) * 100:.0f} %", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------- --for-model: a model's shapes
def load_model_callable(spec: str) -> torch.nn.Module:
    """``package.module:name``: the torch module ``name`` is, or returns when called with no arguments."""
    import importlib

    from fmmforge.core.errors import FmmforgeError

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FmmforgeError(f"--for-model {spec!r} is not module:callable; write it like mypkg.models:build")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any failure to import it is their input, said in one line
        raise FmmforgeError(f"cannot import {module_name!r} for --for-model ({type(exc).__name__}: {exc})") from None
    target = getattr(module, attr, None)
    if target is None:
        raise FmmforgeError(f"{module_name!r} has no {attr!r}; give module:callable returning a torch.nn.Module")
    import torch

    if not isinstance(target, torch.nn.Module):
        if not callable(target):
            raise FmmforgeError(f"{spec} is neither a torch.nn.Module nor callable")
        try:
            target = target()
        except Exception as exc:
            raise FmmforgeError(f"calling {spec}() failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(target, torch.nn.Module):
        raise FmmforgeError(f"{spec} gave a {type(target).__name__}, not a torch.nn.Module")
    return target


def linear_shapes(model: torch.nn.Module, rows: int) -> list[Shape]:
    """The distinct M×K×N products of the model's nn.Linear layers (x @ W.T) for ``rows`` input
    rows (batch × tokens), largest first: what fmmforge.nn.accelerate would send to fmmforge.matmul."""
    import torch

    shapes = {(rows, m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sorted(shapes, key=lambda s: (-math.prod(s), s))
