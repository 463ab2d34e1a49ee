"""Plans: which algorithm at each recursion level, how deep, the leaf cut-off, backend, dtype, device."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from math import prod
from typing import Any

from fmmforge.codegen import layouts
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError

DTYPES = ("float32", "float64")
DEFAULT_CUTOFF = 64
LEVEL_SEPARATOR = "/"
# code layouts ("variants"): codegen.layouts.LAYOUTS, the one list (backends, devices, remainders)
VARIANTS = layouts.NAMES
DEFAULT_VARIANT = layouts.DEFAULT
# sizes that do not divide: "peel" (the fast algorithm on the largest core that divides, fix-up
# gemms for the rest) or "pad" (operands copied into zero-bordered buffers of the next multiples,
# the fast algorithm on those, the result copied out: codegen.runtime.runtime_pad) or "split" (uneven
# blocks, the last ones shorter and treated as zero-bordered, without copies or fix-ups:
# codegen.runtime.runtime_split); pad and split for torch kernels of the layouts that have them
# (codegen.layouts.Layout.remainders)
REMAINDERS = ("peel", "pad", "split")
DEFAULT_REMAINDER = "peel"
REMAINDER_WORDS = {"pad": ", padded", "split": ", uneven blocks"}  # in a plan's description


@dataclass(frozen=True)
class Plan:
    """What to generate. ``algorithms[l]`` is the scheme used at recursion level l.

    A block is split at a level only when every dimension of the resulting blocks is at least
    ``cutoff``; smaller problems go to the vendor gemm. Sizes that do not divide are handled by
    dynamic peeling, once at the top: the fast algorithm on the largest core that every level
    splitting at these sizes divides, fix-up gemms for the remainder rows, columns and inner
    dimension.

    ``variant`` picks the code layout (codegen.layouts.LAYOUTS; ``"lowmem"`` by default).
    It is part of the plan's identity only when it is not the default, so low-memory plans keep
    their keys (and their cached kernels and records). ``remainder`` says what a size that does
    not divide gets (:data:`REMAINDERS`): peeling (the default, as above), padding or uneven blocks; likewise in
    the identity only when it is not the default.
    """

    algorithms: tuple[str, ...]
    fingerprints: tuple[str, ...]
    backend: str = "torch"
    dtype: str = "float32"
    device: str = "cpu"
    cutoff: int = DEFAULT_CUTOFF
    variant: str = DEFAULT_VARIANT
    remainder: str = DEFAULT_REMAINDER

    @property
    def levels(self) -> int:
        return len(self.algorithms)

    def describe(self) -> str:
        algos = LEVEL_SEPARATOR.join(self.algorithms) if self.algorithms else "vendor gemm"
        words = layouts.layout(self.variant).words if self.variant in VARIANTS else self.variant
        layout = f" ({words})" if words else ""
        pad = REMAINDER_WORDS.get(self.remainder, "")
        return (f"{algos}, {self.levels} level{'s' if self.levels != 1 else ''}, cutoff {self.cutoff}{pad}, "
                f"backend {self.backend}{layout}, {self.dtype} on {self.device}")

    def as_dict(self) -> dict:
        d = {"algorithms": list(self.algorithms), "fingerprints": list(self.fingerprints),
             "levels": self.levels, "backend": self.backend, "dtype": self.dtype,
             "device": self.device, "cutoff": self.cutoff}
        if self.variant != DEFAULT_VARIANT:  # absent for lowmem: existing keys stay the same
            d["variant"] = self.variant
        if self.remainder != DEFAULT_REMAINDER:
            d["remainder"] = self.remainder
        return d

    def key(self) -> str:
        """Identity of the generated code (device *kind* only: cuda:0 and cuda:1 share kernels)."""
        d = self.as_dict()
        d["device"] = self.device.split(":")[0]
        d.pop("algorithms")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


def split_names(name: str) -> list[str]:
    parts = [p.strip() for p in name.split(LEVEL_SEPARATOR)]
    if not parts or any(not p for p in parts):
        raise FmmforgeError(f"cannot read algorithm list {name!r}; write NAME or NAME/NAME (one per level)")
    return parts


# What a command's ``--variant auto`` (its default) resolves to: codegen.layouts.AUTO_ORDER (and why)
AUTO_VARIANT = layouts.AUTO


def resolve_variant(variant: str, backend: str, device: str = "cpu", remainder: str = DEFAULT_REMAINDER) -> str:
    """``variant`` itself, or for :data:`AUTO_VARIANT` the first layout of codegen.layouts.AUTO_ORDER
    that the backend, device and ``remainder`` can have: "fused" for backend torch on the CPU
    (unless ``remainder`` needs another layout), else "lowmem"."""
    if variant != AUTO_VARIANT:
        return variant
    for name in layouts.AUTO_ORDER[:-1]:
        try:
            check_layout(name, backend, device, remainder)
        except FmmforgeError:
            continue
        return name
    return layouts.AUTO_ORDER[-1]


def check_layout(variant: str, backend: str, device: str, remainder: str) -> None:
    """A layout the backend, device or remainder strategy cannot have is one FmmforgeError line."""
    check_variant(variant, backend)
    check_remainder(remainder, variant, backend)
    devices = layouts.layout(variant).devices
    if devices is not None and str(device).split(":")[0] not in devices:
        raise FmmforgeError(f"variant {variant} runs on {', '.join(devices)} only, not {device}; "
                            f"use --variant {DEFAULT_VARIANT} on {device}")


def check_variant(variant: str, backend: str | None = None) -> None:
    """An unknown variant, or one the backend cannot emit, is a one-line FmmforgeError."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise FmmforgeError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)} (or auto in a command)")
    allowed = layouts.layout(variant).backends
    if backend is not None and allowed is not None and backend not in allowed:
        raise FmmforgeError(f"variant {variant} is only for backend {', '.join(allowed)}, not {backend}; "
                            f"use --variant {DEFAULT_VARIANT} with backend {backend}")


def plan_from_dict(data: Any) -> Plan:
    """The :class:`Plan` that ``Plan.as_dict()`` wrote; anything else is one FmmforgeError."""
    try:
        plan = Plan(tuple(str(a) for a in data["algorithms"]), tuple(str(f) for f in data["fingerprints"]),
                    str(data["backend"]), str(data["dtype"]), str(data["device"]), data["cutoff"],
                    str(data.get("variant", DEFAULT_VARIANT)), str(data.get("remainder", DEFAULT_REMAINDER)))
    except (KeyError, TypeError, AttributeError) as exc:
        raise FmmforgeError(f"not a kernel plan ({type(exc).__name__}: {exc}); write plans with Plan.as_dict()") from None
    if len(plan.algorithms) != len(plan.fingerprints) or data.get("levels", plan.levels) != plan.levels:
        raise FmmforgeError("a kernel plan needs one algorithm and one fingerprint per level")
    if plan.dtype not in DTYPES:
        raise FmmforgeError(f"unknown dtype {plan.dtype!r} in a kernel plan; use one of {', '.join(DTYPES)}")
    if isinstance(plan.cutoff, bool) or not isinstance(plan.cutoff, int) or plan.cutoff < 1:
        raise FmmforgeError(f"the cutoff of a kernel plan must be a whole number >= 1, not {plan.cutoff!r}")
    check_variant(plan.variant, plan.backend)
    check_remainder(plan.remainder, plan.variant, plan.backend)
    return plan


def check_remainder(remainder: str, variant: str, backend: str) -> None:
    """An unknown remainder strategy, or padding where the kernel cannot pad, is one FmmforgeError line."""
    if not isinstance(remainder, str) or remainder not in REMAINDERS:
        raise FmmforgeError(f"unknown remainder {remainder!r}; use one of {', '.join(REMAINDERS)}")
    allowed = layouts.with_remainder(remainder) if remainder != DEFAULT_REMAINDER else None
    if allowed is not None and (backend != "torch" or variant not in allowed):
        raise FmmforgeError(f"--remainder {remainder} is for torch kernels of the {' and '.join(allowed)} layouts, "
                            f"not backend {backend} {variant}; use --remainder {DEFAULT_REMAINDER}")


def make_plan(name: str, levels: int, *, backend: str = "torch", dtype: str = "float32",
              device: str = "cpu", cutoff: int = DEFAULT_CUTOFF, variant: str = DEFAULT_VARIANT,
              resolve=None, remainder: str = DEFAULT_REMAINDER) -> tuple[Plan, list[Decomposition]]:
    """Resolve ``name`` (``NAME`` for every level, or ``NAME/NAME/...`` one per level, the last one
    repeating) and check the plan. Only exactly verified schemes over Z come back.
    ``variant``: a layout of codegen.layouts.LAYOUTS (``"lowmem"`` by default)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise FmmforgeError(f"levels must be a whole number >= 0, not {levels!r}")
    if levels > 8:
        raise FmmforgeError(f"levels {levels} is too deep; use at most 8")
    if dtype not in DTYPES:
        raise FmmforgeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1:
        raise FmmforgeError(f"cutoff must be a whole number >= 1, not {cutoff!r}")
    check_layout(variant, backend, device, remainder)
    if resolve is None:
        from fmmforge.core.catalogue import resolve
    names = split_names(name)
    if len(names) > max(levels, 1):
        raise FmmforgeError(f"{len(names)} algorithms given for {levels} level(s); give at most one per level")
    decomps: list[Decomposition] = []
    algos: list[str] = []
    for level in range(levels):
        nm = names[min(level, len(names) - 1)]
        d = resolve(nm)
        check_decomposition(d, nm)
        decomps.append(d)
        algos.append(nm)
    if levels == 0:  # still resolve the name, so a typo is reported
        check_decomposition(resolve(names[0]), names[0])
    plan = Plan(tuple(algos), tuple(d.fingerprint for d in decomps), backend, dtype, device, cutoff, variant,
                remainder)
    return plan, decomps


def check_decomposition(d: Decomposition, label: str) -> None:
    """Nothing unverified reaches codegen (a Decomposition made with ``unchecked`` is re-checked)."""
    if not isinstance(d, Decomposition):
        raise FmmforgeError(f"{label}: not a decomposition")
    if d.format is None:
        raise FmmforgeError(f"{label}: codegen needs a matrix-multiplication scheme, not {d.target.describe()}")
    if d.field != "Z":
        raise FmmforgeError(f"{label} is valid only modulo 2; codegen needs a scheme over Z (real arithmetic)")
    d.require_valid()


def ceiling(decomps: list[Decomposition]) -> float:
    """Arithmetic ceiling of the speed-up: Π_l n·m·p / R (leaf multiplications saved)."""
    return float(prod(Fraction(prod(d.format), d.rank) for d in decomps)) if decomps else 1.0


def stability(decomps: list[Decomposition]) -> float:
    """Π_l e_l: the growth of the error bound with depth (docs/background.md §5)."""
    return float(prod(max(Fraction(1), d.stability_factor or Fraction(1)) for d in decomps)) if decomps else 1.0
