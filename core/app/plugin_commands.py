"""The `fmmforge plugins` and `fmmforge score` commands (a built-in command plugin).

A third-party plugin that fails to import or whose hook raises is recorded as a problem and
listed by ``fmmforge plugins``; it never breaks the other commands.
"""

from __future__ import annotations

import os
from typing import Annotated, Callable

import typer
from rich.table import Table

from fmmforge.core.app.console import console, counted
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl

SECTIONS = (("reward", "rewards"), ("engine", "search engines"), ("backend", "codegen backends"),
            ("command", "commands"))


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("plugins", plugins_cmd))
    register(Command.of("score", score_cmd))


# ---------------------------------------------------------------------- plugins
def plugins_cmd() -> None:
    """List every reward, search engine and codegen backend with its origin and description."""
    from fmmforge.plugins.manager import ENV_VAR, plugin_manager
    from fmmforge.plugins.registry import duplicate_message, registry

    pm = plugin_manager()
    problems = list(pm.problems)
    duplicates = []
    for kind, title in SECTIONS:
        reg = registry(kind)
        problems.extend(reg.problems)
        names = reg.names()
        if not names:
            console.print(f"{title}: none yet", highlight=False)
            continue
        columns = ["name", "origin"] + (["cost"] if kind == "reward" else []) + ["description"]
        table = Table(*columns, title=title, title_justify="left", show_lines=False)
        for name in names:
            regs = reg.entries[name]
            if len(regs) > 1:
                duplicates.append(duplicate_message(kind, name, regs))
            for r in regs:
                row = [name + (" (duplicate)" if len(regs) > 1 else ""), str(r.origin)]
                if kind == "reward":
                    row.append("cheap" if r.obj.cheap else "expensive")
                row.append(r.description)
                table.add_row(*row)
        console.print(table)
    restriction = os.environ.get(ENV_VAR)
    if restriction is None:
        console.print(f"third-party plugins: all installed ({ENV_VAR} is unset)", highlight=False)
    else:
        chosen = ", ".join(x.strip() for x in restriction.split(",") if x.strip())
        console.print(f"third-party plugins: {('only ' + chosen) if chosen else 'none'} ({ENV_VAR}={restriction!r})",
                      highlight=False)
    for line in duplicates:
        console.print(f"error: {line}", highlight=False, markup=False, soft_wrap=True)
    for problem in problems:
        console.print(f"broken: {problem}", highlight=False, markup=False, soft_wrap=True)


# ---------------------------------------------------------------------- score
def parse_size(text: str) -> tuple[int, int, int]:
    """``8192`` -> (8192, 8192, 8192); ``8192,4096,2048`` or ``8192x4096x2048`` -> (M, K, N); every
    side between 1 and 2^31."""
    from fmmforge.core.tensor import parse_shape
    from fmmforge.hardware.limits import MAX_DIMENSION

    return parse_shape(text, "--size", MAX_DIMENSION)


def _remeasuring(name: str):
    """The reward ``name``, measuring again where it measures (``--remeasure``)."""
    from fmmforge.plugins.registry import get_reward

    found = get_reward(name)
    return found.remeasuring() if hasattr(found, "remeasuring") else found


def check_device(name: str) -> str:
    """A ``--device`` that names something: cpu, a CUDA device present here, or a chip spec (by
    name or .toml file); anything else is one clear line (naming the known specs), before any
    reward asks for its other inputs."""
    from fmmforge.hardware.chips import load_chip
    from fmmforge.hardware.devices import get_device

    if name.strip() in ("cpu", "cuda") or name.strip().startswith("cuda:"):
        get_device(name, runnable=False)
    else:
        load_chip(name)
    return name


def score_cmd(
    name: Annotated[str, typer.Argument(help="catalogue or store name, e.g. alphatensor:4,4,4")],
    reward: Annotated[list[str] | None, typer.Option(
        "--reward", "-r", help="NAME or NAME:WEIGHT, repeatable; the score is Σ weight·reward (default: rank)")] = None,
    device: Annotated[str | None, typer.Option(help="target device, e.g. tpu-v4, or a chip spec .toml")] = None,
    size: Annotated[str | None, typer.Option(help="matrix size N (square) or M,K,N")] = None,
    dtype: Annotated[str | None, typer.Option(help="element type, e.g. bfloat16 (default: the device's)")] = None,
    levels: Annotated[int, typer.Option(help="recursion levels of the scheme")] = 1,
    remeasure: Annotated[bool, typer.Option(help="measure again (latency) instead of reading an earlier measurement")] = False,
) -> None:
    """Score an algorithm with one or more rewards; print each score and its parts."""
    from fmmforge.core import catalogue
    from fmmforge.plugins.mix import RewardMix
    from fmmforge.core.contracts import RewardContext

    from fmmforge.hardware.limits import check_reward_levels

    check_reward_levels(levels)
    if device is not None:
        check_device(device)
    mix = RewardMix.from_specs(reward or [], lookup=_remeasuring if remeasure else None)
    if remeasure and not any(hasattr(r, "remeasuring") for r in mix.rewards.values()):
        raise FmmforgeError("--remeasure is for rewards that measure kernels (latency); add --reward latency "
                            "or drop --remeasure")
    context = RewardContext(device=device, size=parse_size(size) if size else None, dtype=dtype, levels=levels)
    d = catalogue.resolve(name)
    result = mix.score(d, context)

    where = ", ".join(x for x in (
        f"device {device}" if device else "",
        f"size {'x'.join(map(str, context.size))}" if context.size else "",
        dtype or "",
        counted(levels, "level"),
    ) if x)
    console.print(f"{name}: {d.target.describe()} rank {d.rank} over {d.field}; {where}", highlight=False)
    table = Table("reward", "weight", "score", "weighted", "cost")
    for t in result.terms:
        table.add_row(t.term.name, f"{t.term.weight:g}", f"{t.result.value:.6g}", f"{t.weighted:.6g}",
                      "cheap" if t.cheap else "expensive")
    table.add_section()
    table.add_row("total", "", "", f"{result.total:.6g}", "")
    console.print(table)
    parts = Table("reward", "part", "value")
    for t in result.terms:
        for key, value in t.result.parts.items():
            parts.add_row(t.term.name, str(key), str(value))
    if parts.row_count:
        console.print(parts)
