"""Kernel layouts: how a plan's levels become code. Each layout is one :class:`Layout` here and
:data:`LAYOUTS` is the one list of them; the plan checks (codegen.plan), the backends' ``variants``
and ``emit`` (codegen.backends), the commands' ``--variant`` help, the cost model
(codegen.costmodel) and the tuner read it.

A layout names its emitter and its runtime module as dotted strings, loaded when a kernel is made:
the emitters import the plan module, which imports this one, and the fused emitter imports numba.
The remainder strategies (peel, pad, split: codegen.plan.REMAINDERS) are not layouts; a layout
says which of them its torch kernels have.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT = "lowmem"  # the layout of a plan that names none (absent from its identity: codegen.plan.Plan.key)
AUTO = "auto"  # a command's --variant default: the first layout of AUTO_ORDER the plan can have


@dataclass(frozen=True)
class Layout:
    """One kernel layout.

    ``backends``/``devices``: the backends that emit it and the device kinds it runs on (None:
    every one, a plugin's backend too). ``remainders``: the strategies for sizes that do not divide
    that its torch kernels have besides peeling (the pad and split runtimes are torch code).
    ``emitter``: ``"module:function"`` giving (module source, facts) for a plan (the Python kernels;
    the cupy backend writes CUDA C by its own emitter). ``runtime``: the module of
    :mod:`fmmforge.codegen.runtime` that holds its recursion and top level (inlined into each
    kernel). ``passes``: the cost model's function that prices one of its levels
    (codegen.costmodel; None: the model does not describe it, and the tuner does not try it);
    ``fitted``: the model's fit uses its records. ``tune_padded``: the tuner offers it padded.
    ``help`` and ``words``: what ``--variant``'s help (core.app.codegen_commands) and a plan's
    description say of it.
    """

    name: str
    help: str
    words: str
    emitter: str
    runtime: str
    backends: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    remainders: tuple[str, ...] = ()
    passes: str | None = None
    fitted: bool = False
    tune_padded: bool = False

    def emit(self, plan: Any, schemes: list) -> tuple[str, dict]:
        """(module source, facts): the layout's emitter on ``plan``."""
        module, function = self.emitter.split(":")
        emitter: Callable[..., tuple[str, dict]] = getattr(importlib.import_module(module), function)
        return emitter(plan, schemes)

    def has_backend(self, backend: str | None) -> bool:
        """Whether ``backend`` emits it (None: a backend the list does not name, e.g. a plugin's)."""
        return self.backends is None or (backend is not None and backend in self.backends)

    def runs_on(self, device_kind: str) -> bool:
        return self.devices is None or device_kind in self.devices


LAYOUTS: tuple[Layout, ...] = (
    Layout("lowmem", "small workspaces", "",
           "fmmforge.codegen.emit_python:emit_python", "runtime_lowmem",
           remainders=("pad", "split"), passes="lowmem_level", fitted=True, tune_padded=True),
    Layout("batched", "torch: levels flattened, all leaf products in one bmm",
           "batched: all leaf products in one bmm",
           "fmmforge.codegen.emit_batched:emit_batched", "runtime_batched", backends=("torch",)),
    Layout("fused", "torch on the CPU: compiled element-wise passes, one per side and level",
           "fused: compiled element-wise passes",
           "fmmforge.codegen.fused:emit_fused", "runtime_fused", backends=("torch",), devices=("cpu",),
           remainders=("pad",), passes="fused_level", fitted=True),
    # the low-memory layout with level 0's products run at once on single-threaded workers (not
    # fitted: codegen.costmodel.FITTED_VARIANTS says why)
    Layout("parallel", "torch on the CPU: the top level's products at once on single-threaded workers",
           "parallel: level 0's products on single-threaded workers",
           "fmmforge.codegen.emit_python:emit_python", "runtime_parallel", backends=("torch",), devices=("cpu",),
           remainders=("pad",), passes="parallel_level"),
)
# The tuner offers only the low-memory layout padded (tune_padded): the fused and parallel kernels
# hold up to 2×C of workspace (issue 14's bound, kept by codegen/fused.py), and padded copies of A,
# B and C add up to 3×C more (4.51×C measured for a fused Strassen-Winograd L2 at 4095), so a tune
# never picks them padded; `--remainder pad` still makes such a kernel by hand.

NAMES: tuple[str, ...] = tuple(x.name for x in LAYOUTS)
_BY_NAME = {x.name: x for x in LAYOUTS}

# What AUTO resolves to: the fused layout for torch kernels on the CPU, which measured faster than
# the low-memory one at the same plan in every row of issue 14's benchmarks/cpu_speedup.py runs on
# the project's Intel Xeon (4096 W L1 1.092x against 1.073x, 8192 W L2 1.192x against 1.142x,
# 8192x4096x8192 1.133x against 1.100x, Laderman 4608 1.047x against 1.026x, float64 8192 1.142x
# against 1.141x; 2026-12-07), at up to 2 C of workspace instead of 1; the low-memory layout for
# everything else (and for uneven blocks, which only it has).
AUTO_ORDER = ("fused", DEFAULT)


def layout(name: str) -> Layout:
    """The layout called ``name`` (KeyError when there is none: codegen.plan.check_variant says it to a user)."""
    return _BY_NAME[name]


def for_backend(backend: str | None) -> tuple[str, ...]:
    """The layouts ``backend`` emits (None: a backend the list does not name, e.g. a plugin's)."""
    return tuple(x.name for x in LAYOUTS if x.has_backend(backend))


def with_remainder(remainder: str) -> tuple[str, ...]:
    """The layouts whose torch kernels have the remainder strategy ``remainder`` (pad, split)."""
    return tuple(x.name for x in LAYOUTS if remainder in x.remainders)


def modelled(device_kind: str | None = None) -> tuple[str, ...]:
    """The layouts the cost model describes (and the tuner tries), those running on ``device_kind`` if given."""
    return tuple(x.name for x in LAYOUTS if x.passes and (device_kind is None or x.runs_on(device_kind)))


def fitted() -> tuple[str, ...]:
    """The layouts whose records the cost model's fit uses."""
    return tuple(x.name for x in LAYOUTS if x.fitted)

