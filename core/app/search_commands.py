"""`fmmforge search` (a built-in command plugin): run a search engine on a matrix format."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from fmmforge.core.app.console import counted, err_console
from fmmforge.core.atomic import writable_target
from fmmforge.core.contracts import (
    Budget,
    Engine,
    RewardContext,
    Scorer,
    SearchEvents,
    SearchRequest,
    SearchResult,
    SearchSnapshot,
)
from fmmforge.core.decomposition import Decomposition, check_field
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.recording import StoredScheme, StoreRecorder
from fmmforge.core.store import Store
from fmmforge.plugins.extensions import Command
from fmmforge.plugins.hookspecs import hookimpl

MAX_DIM = 6


def parse_search_format(text: str) -> tuple[int, int, int]:
    from fmmforge.core.tensor import parse_format

    fmt = parse_format(text)
    if max(fmt) > MAX_DIM:
        raise FmmforgeError(f"matrix format {text!r} is too large for the flip engine; n, m, p must be at most {MAX_DIM}")
    return fmt


MAX_SEED = 2**32 - 1
MAX_PLATEAU = 10**9
MAX_SECONDS = 30 * 24 * 3600.0  # a month
MAX_FLIPS = 10**15


def read_budget(budget: str | None, flips: str | None) -> Budget:
    """``--budget`` and ``--flips``, refused beyond a month or 10^15 flips (1e999 is not a budget)."""
    from fmmforge.core.search.budget import parse_budget

    try:
        plan = parse_budget(budget, flips)
    except OverflowError:
        plan = None
    if plan is None or (plan.seconds or 0) > MAX_SECONDS or (plan.flips or 0) > MAX_FLIPS:
        raise FmmforgeError(f"budget {budget or flips!r} is too large; give at most 30 days or {MAX_FLIPS:.0e} flips")
    return plan


def check_search_numbers(fmt: tuple[int, int, int], field: str, *, rank: int | None, workers: int,
                         plateau: int | None, bound: int, seed: int, levels: int) -> None:
    """search's numeric options: positive where they must be, no larger than a search can use, and
    a --rank that a scheme can have (not below the proven lower bound of the format)."""
    from fmmforge.core.known_ranks import proven_lower_bound
    from fmmforge.hardware.limits import MAX_WORKERS, check_int, check_reward_levels

    naive = fmt[0] * fmt[1] * fmt[2]
    if rank is not None and rank < 1:
        raise FmmforgeError(f"--rank must be a positive number of products, not {rank}")
    check_int(rank, "--rank (at most the naive rank n·m·p)", maximum=naive)
    lowest = proven_lower_bound(fmt, field)
    if rank is not None and rank < lowest.rank:
        raise FmmforgeError(f"--rank {rank} cannot be reached: every scheme of <{fmt[0]},{fmt[1]},{fmt[2]}> over "
                            f"{field} has at least {lowest.rank} products ({lowest.source}); "
                            f"ask for --rank {lowest.rank} or more")
    if workers < 1:
        raise FmmforgeError(f"--workers must be at least 1, not {workers}")
    check_int(workers, "--workers", maximum=MAX_WORKERS)
    if plateau is not None and plateau < 1:
        raise FmmforgeError(f"--plateau must be positive, not {plateau}")
    check_int(plateau, "--plateau", maximum=MAX_PLATEAU)
    if bound < 1 or bound > 50:
        raise FmmforgeError(f"--bound must be between 1 and 50, not {bound}")
    check_int(seed, "--seed", minimum=0, maximum=MAX_SEED)
    check_reward_levels(levels)


def resolve_rewards(specs: list[str], context: RewardContext | None = None) -> Scorer | None:
    """Combine ``NAME[:WEIGHT]`` reward specs through the plugin layer (unknown names fail here)."""
    if not specs:
        return None
    from fmmforge.plugins import combine_rewards

    return combine_rewards(list(specs), context)


class ProgressDisplay:
    """A one-line rich progress display on stderr: best rank, flips/s, pool size, elapsed.

    Use as a context manager and hand it to the engine as ``SearchEvents(progress=display)``.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task("starting the search")
        self.last = -1.0

    @staticmethod
    def text(snap: SearchSnapshot) -> str:
        target = f" (target {snap.target_rank})" if snap.target_rank is not None else ""
        return (f"{snap.target} {snap.field}: best rank {snap.best_rank}{target} | "
                f"{snap.flips_per_second / 1e6:.2f}M flips/s | {snap.at_best_rank} at best rank | {snap.flips:,} flips")

    def __call__(self, snap: SearchSnapshot) -> None:
        if snap.seconds - self.last >= 0.2:
            self.bar.update(self.task, description=self.text(snap))
            self.last = snap.seconds

    def __enter__(self) -> "ProgressDisplay":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def run_search(engine: Engine, request: SearchRequest, store: Store, *,
               progress: bool) -> tuple[SearchResult, list[StoredScheme]]:
    """Run ``engine`` through its contract, storing what it reports; a progress bar if asked.

    The result must be a SearchResult whose best scheme verifies: an engine plugin that
    returns anything else is named in one clear error (nothing unverified is passed on).
    """
    recorder = StoreRecorder(store, request, engine.name)
    with contextlib.ExitStack() as stack:
        display = stack.enter_context(ProgressDisplay()) if progress else None
        result = engine.run(request, SearchEvents(progress=display, found=recorder))
    if not isinstance(result, SearchResult) or not isinstance(result.best, Decomposition):
        raise FmmforgeError(f"search engine {engine.name!r} returned {type(result).__name__}, not a SearchResult "
                            "with a Decomposition as best; report it to the engine's authors")
    check = result.best.verify()
    if not check.valid:
        raise FmmforgeError(f"search engine {engine.name!r} returned an invalid scheme ({check.first_failure}); "
                            "report it to the engine's authors")
    return result, recorder.stored


def search_cmd(
    format: Annotated[str, typer.Argument(help="matrix format n,m,p or NxMxP (each at most 6), e.g. 3x3x3")],
    engine: Annotated[str, typer.Option(help="search engine: flip (flip graphs, Kauers & Moosbauer)")] = "flip",
    field: Annotated[str, typer.Option(help="Z2 (mod 2; found schemes are also lifted to Z) or Z (integer coefficients)")] = "Z2",
    rank: Annotated[Optional[int], typer.Option("--rank", "-r", help="stop when a scheme of this rank is found")] = None,
    budget: Annotated[Optional[str], typer.Option(help="time budget (90s, 2m, 1h) or flips ('10M flips'); default 1m without --rank")] = None,
    flips: Annotated[Optional[str], typer.Option(help="flip budget (10M, 1e9)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="independent walkers, one process each (default: all cores)")] = None,
    reward: Annotated[Optional[list[str]], typer.Option(help="reward NAME[:WEIGHT] preferring schemes at the best rank (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="random seed (runs are reproducible with --workers 1 and a flip budget)")] = 0,
    start: Annotated[Optional[str], typer.Option(help="starting scheme: catalogue/store name, NAME*NAME or a scheme file (default naive:n,m,p)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the checkpoint of the same format, field and seed")] = False,
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint file (default $FMMFORGE_HOME/checkpoints/flip-FORMAT-FIELD-seedS.json)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="also write the best scheme to this file")] = None,
    out_format: Annotated[Optional[str], typer.Option("--format", "-f", help="file format for -o: json, npz, fastmm (default from the name)")] = None,
    plateau: Annotated[Optional[int], typer.Option(help="flips without a reduction before a plus transition (default: by size)")] = None,
    bound: Annotated[int, typer.Option(help="Z only: largest |coefficient| a flip may create")] = 1,
    via_z2: Annotated[bool, typer.Option("--via-z2", help="with --field Z and --rank: walk mod 2 and Hensel-lift until a Z scheme of the rank is found")] = False,
    lift: Annotated[bool, typer.Option("--lift/--no-lift", help="try to lift Z2 schemes to Z (Hensel lifting)")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    device: Annotated[Optional[str], typer.Option(help="reward context: device (e.g. tpu-v4, cpu) for rewards that need one")] = None,
    size: Annotated[Optional[str], typer.Option(help="reward context: matrix size N or M,K,N")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="reward context: dtype (e.g. float32, bfloat16)")] = None,
    levels: Annotated[int, typer.Option(help="reward context: recursion levels")] = 1,
) -> None:
    """Search for a low-rank scheme of <n,m,p>; new bests are verified and stored as they are found."""
    import os

    from fmmforge.core import catalogue
    from fmmforge.core.search.budget import parse_budget
    from fmmforge.hardware.limits import MAX_WORKERS

    console = Console()
    fmt = parse_search_format(format)
    check_field(field)
    from fmmforge.plugins import get_engine

    chosen = get_engine(engine)  # unknown or broken names fail here with one clear line
    plan = read_budget(budget, flips)
    if plan.seconds is None and plan.flips is None and rank is None:
        plan = parse_budget("1m")
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
    check_search_numbers(fmt, field, rank=rank, workers=n_workers, plateau=plateau, bound=bound, seed=seed, levels=levels)
    if output is not None:
        from fmmforge.core.formats import write_format

        write_format(output, out_format)
        writable_target(output)  # before the walk, not after it
    from fmmforge.core.app.plugin_commands import check_device, parse_size

    if device is not None:
        check_device(device)
    context = RewardContext(device=device, size=parse_size(size) if size else None, dtype=dtype, levels=levels)
    scorer = resolve_rewards(list(reward or []), context)
    start_name = start or "naive:{},{},{}".format(*fmt)
    from fmmforge.core.app.scheme_files import resolve_or_file

    d0 = resolve_or_file(start_name, fmt)
    if d0.format != fmt:
        raise FmmforgeError(
            f"starting scheme {start_name} is for {d0.target.describe()}, not <{fmt[0]},{fmt[1]},{fmt[2]}>"
        )
    walk_field = field
    if via_z2:
        if field != "Z" or rank is None:
            raise FmmforgeError("--via-z2 needs --field Z and a target --rank")
        if not lift:
            raise FmmforgeError("--via-z2 finds its Z scheme by lifting the mod-2 ones; drop --no-lift")
        walk_field = "Z2"
    request = SearchRequest(
        d0, field=walk_field, target_rank=rank, budget=plan, workers=n_workers, seed=seed, scorer=scorer,
        checkpoint=checkpoint, resume=resume, start_label=start_name, require_z=via_z2, lift=lift,
        plateau=plateau, bound=bound,
    )
    result, stored = run_search(chosen, request, Store(), progress=not quiet and sys.stderr.isatty())
    answer = scheme_over(result, field)
    print_result(console, result, stored, fmt, field, start_name, answer)
    if answer is None and not result.interrupted:
        err_console.print(f"error: no scheme over {field} was found: the best mod-2 scheme (rank {result.best.rank}) "
                          f"did not lift to {field}{'' if output is None else f'; nothing written to {output}'}; "
                          "try a larger --budget or another --seed", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if output is not None and answer is not None:
        from fmmforge.core.formats import write_file

        write_file(answer, output, out_format, name=f"{chosen.name}-{format}-rank{answer.rank}")
        console.print(f"wrote the best scheme (rank {answer.rank} over {answer.field}, "
                      f"{where_stored(answer, stored)}) to {output}", highlight=False)
    if result.interrupted:
        again = " ".join(a for a in sys.argv[1:] if a != "--resume") or f"search {format}"
        console.print(
            f"interrupted: everything found so far is stored; continue with `fmmforge {again} --resume`"
            f" (checkpoint {result.checkpoint})", highlight=False,
        )
        raise typer.Exit(130)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command.of("search", search_cmd))


def scheme_over(result: SearchResult, field: str) -> Decomposition | None:
    """The scheme the user asked for: over Z, a scheme verified over Z (the walk's best, or with
    ``--via-z2`` the best one lifted from the mod-2 walk), None when there is none; mod 2, the
    walk's best (a scheme over Z is valid mod 2 as well)."""
    if field == "Z2" or result.best.field == field:
        return result.best
    lifted = result.lifted
    return lifted if lifted is not None and lifted.field == field else None


def where_stored(d: Decomposition, stored: list[StoredScheme]) -> str:
    """``store:ID`` of the row that holds ``d`` (the recorder stored every scheme the engine reported)."""
    ids = [s.id for s in stored if s.fingerprint == d.fingerprint and s.field == d.field]
    return f"store:{ids[-1]}" if ids else "not stored"


def print_result(console: Console, result: SearchResult, stored_all: list[StoredScheme],
                 fmt: tuple[int, int, int], field: str, start_name: str, answer: Decomposition | None) -> None:
    """The summary of a search, about ``answer`` (the scheme over ``field``; None: none was found),
    with the mod-2 walk's best beside it when the two differ."""
    from rich.table import Table

    walked = result.best
    t = Table("search", "result", show_header=False)
    t.columns[1].overflow = "fold"  # long paths (a resumed run's checkpoint) are wrapped, never cut
    ttb = result.history[-1][1] if result.history else 0.0
    if answer is not None and answer is not walked:
        ttb = result.lift_time if result.lift_time is not None else result.seconds
    stored = [s for s in stored_all if s.inserted]
    reached = answer is not None and result.target_rank is not None and answer.rank <= result.target_rank
    target = "-" if result.target_rank is None else f"{result.target_rank} ({'reached' if reached else 'not reached'})"
    rows = [
        ("format", "<{},{},{}> over {}".format(*fmt, field) + ("" if walked.field == field else f", walked over {walked.field}")),
        ("start", result.start_description or f"{start_name} (rank {result.start_rank})"),
        ("best rank", str(answer.rank) if answer is not None else f"none over {field}"),
        ("target rank", target),
        ("time to best", f"{ttb:.2f} s"),
        ("flips", f"{result.flips:,} in {result.seconds:.1f} s"),
        ("flips/s", f"{result.flips_per_second / 1e6:.2f}M ({counted(result.workers, 'worker')})"),
        ("new in store", str(len(stored))),
        ("fingerprint", answer.fingerprint if answer is not None else "-"),
    ]
    if answer is not walked:
        rows.append((f"best over {walked.field}", f"rank {walked.rank} (fingerprint {walked.fingerprint})"))
    for key, value in rows:
        t.add_row(key, value)
    console.print(t)
    ids = ", ".join(f"store:{s.id} (rank {s.rank} {s.field}{', ' + s.kind if s.kind != 'best' else ''})" for s in stored)
    if ids:
        console.print(f"stored: {ids}; print one with `fmmforge show store:ID`", highlight=False)
    if result.score is not None:
        of = "the best scheme" if answer is walked else f"the best {walked.field} scheme"
        console.print(f"reward of {of}: {result.score:g} "
                      f"({counted(result.pool_size, 'distinct scheme')} at rank {walked.rank})", highlight=False)
    if result.lifted is not None and result.lifted is not answer:
        console.print(f"lifted to Z: rank {result.lifted.rank} (fingerprint {result.lifted.fingerprint})", highlight=False)
