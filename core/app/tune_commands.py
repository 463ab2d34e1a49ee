"""The `fmmforge calibrate` command (a built-in command plugin): fit the cost model of a device."""

from __future__ import annotations

from typing import Annotated, Callable

import typer

from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl

INTERRUPTED = 130


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("calibrate", calibrate_cmd))


def calibrate_cmd(
    device: Annotated[str, typer.Option(help="cpu or cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or float64")] = "float32",
    budget: Annotated[float, typer.Option(help="seconds it may spend measuring what the store lacks (0: measure nothing)")] = 180.0,
    threads: Annotated[int, typer.Option(help="threads the model is for (default: torch's current count)")] = 0,
) -> None:
    """Fit the cost model of a device from its benchmark records (measuring what is missing within
    --budget), print its held-out error and store it for the latency-model reward and reports."""
    import math

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fmmforge.codegen.calibrate import calibrate
    from fmmforge.codegen.costmodel import PARAMETERS, current_key
    from fmmforge.core.app.console import console, err_console
    from fmmforge.core.errors import FmmforgeError
    from fmmforge.hardware.devices import get_device
    from fmmforge.hardware.limits import check_int
    from fmmforge.plugins import get_backend

    if not math.isfinite(budget) or budget < 0:
        raise FmmforgeError(f"--budget must be a number of seconds >= 0, not {budget:g}")
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
            bar.update(tasks[phase], completed=done, total=total, description=f"{phase}: {label}")

        try:
            result = calibrate(key, backend=get_backend("torch"), budget_s=budget, progress=progress)
        except KeyboardInterrupt:
            bar.stop()
            err_console.print("interrupted: every measurement already taken is kept in the store; "
                              "run `fmmforge calibrate` again to go on", highlight=False)
            raise typer.Exit(INTERRUPTED) from None
    model = result.model
    console.print(f"cost model for {key.describe()}: fitted on {model.fitted_on} records "
                  f"({result.measured_records} measured now, {result.skipped} not usable), "
                  f"{len(model.gemm.points)} vendor-gemm timings ({result.measured_gemms} measured now)",
                  highlight=False, soft_wrap=True)
    console.print("parameters: " + ", ".join(f"{p} {v:.4g}" for p, v in zip(PARAMETERS, model.parameters)),
                  highlight=False, soft_wrap=True)
    q = model.quality
    if q is not None:
        rho = f"{q.spearman:.3f} (median over {q.sizes_ranked} sizes)" if q.spearman is not None else "- (no size has 3 plans)"
        console.print(f"held-out (leave-one-out) median |error| {q.median_ape:.2f} %; "
                      f"rank correlation across plans at a size {rho}", highlight=False, soft_wrap=True)
