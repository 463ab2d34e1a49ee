"""The `fmmforge devices` command (a built-in command plugin)."""

from __future__ import annotations

from typing import Annotated, Callable

import typer
from rich.table import Table

from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("devices", devices_cmd))


def devices_cmd(
    measure: Annotated[bool, typer.Option("--measure", help="measure the vendor matmul's peak GFLOP/s (cached per machine)")] = False,
) -> None:
    """List the devices: the CPU (BLAS, threads, measured peak), CUDA GPUs, and spec-only accelerators."""
    from fmmforge.core.app.console import console, counted
    from fmmforge.hardware.devices import cached_peak, list_devices, measure_peak

    table = Table("device", "kind", "runs kernels", "peak GFLOP/s fp32", "description")
    for dev in list_devices():
        peak = "-"
        if dev.runnable:
            value = measure_peak(dev.name) if measure else cached_peak(dev.name)
            peak = f"{value:.0f}" if value else "not measured (--measure)"
        elif "peak_tflops" in dev.details:
            fp32 = dev.details["peak_tflops"].get("float32")
            peak = f"{fp32 * 1e3:.0f} (spec)" if fp32 else "-"
        table.add_row(dev.name, dev.kind, "yes" if dev.runnable else "no (spec only)", peak, dev.description)
    console.print(table)
    cpu = list_devices()[0]
    libs = "; ".join(f"{lib.get('internal_api')} ({lib.get('prefix')}, {counted(lib.get('num_threads', 0), 'thread')})"
                     for lib in cpu.details.get("libraries", []))
    console.print(f"cpu libraries: torch uses {cpu.details['torch_blas']} with {counted(cpu.details['torch_threads'], 'thread')}"
                  + (f"; loaded pools: {libs}" if libs else ""), highlight=False, soft_wrap=True)
