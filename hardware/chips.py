"""Chip specs for the systolic-array cost model: shipped TOML files and user-added ones.

A spec is a small TOML file (see hardware/data/devices/tpu-v4.toml)::

    name = "tpu-v4"
    description = "Google TPU v4 chip"
    hbm_gbps = 1200          # HBM bandwidth, GB/s
    mxu_size = 128           # the systolic array is mxu_size x mxu_size
    mxu_count = 8            # matrix units on the chip (all TensorCores)
    fused_operand_cost = 0.045
    [peak_tflops]
    bfloat16 = 275

``--device NAME`` looks in ``$FMMFORGE_HOME/devices/NAME.toml`` first (so a user can add
or override a chip), then in the shipped specs; ``--device path/to/chip.toml`` reads a file.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fmmforge.core.errors import FmmforgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "int8": 1}
SPEC_SUFFIX = ".toml"


@dataclass(frozen=True)
class ChipSpec:
    """What the cost model needs to know about a systolic-array accelerator (one chip)."""

    name: str
    description: str
    peak_tflops: dict[str, float]
    hbm_gbps: float
    mxu_size: int = 128
    mxu_count: int = 1
    tensorcores: int = 1
    default_dtype: str = "bfloat16"
    fused_operand_cost: float = 0.0
    source: str = ""
    path: str = field(default="", compare=False)

    def peak_flops(self, dtype: str) -> float:
        """Peak dense matmul FLOP/s for ``dtype``; a clear error if the chip has none."""
        if dtype not in self.peak_tflops:
            raise FmmforgeError(
                f"device {self.name} has no peak FLOP/s for {dtype}; its spec lists "
                f"{', '.join(sorted(self.peak_tflops))} (add a [peak_tflops] entry to {self.path or 'the spec'})"
            )
        return self.peak_tflops[dtype] * 1e12

    @property
    def bandwidth(self) -> float:
        """HBM bandwidth in bytes/s."""
        return self.hbm_gbps * 1e9


def shipped_dir() -> Path:
    return Path(str(resources.files("fmmforge.hardware") / "data" / "devices"))


def user_dir() -> Path:
    from fmmforge.core.paths import default_home

    return default_home() / "devices"


def available_specs() -> dict[str, Path]:
    """Spec name -> file: shipped specs, overridden by the user's $FMMFORGE_HOME/devices."""
    found: dict[str, Path] = {}
    for folder in (shipped_dir(), user_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*" + SPEC_SUFFIX)):
                found[path.stem] = path
    return found


def load_chip(device: str) -> ChipSpec:
    """The spec for a device name or a path to a spec file."""
    candidate = Path(device).expanduser()
    if device.endswith(SPEC_SUFFIX) or "/" in device:
        if not candidate.is_file():
            raise FmmforgeError(f"device spec file {device} does not exist")
        return read_spec(candidate)
    specs = available_specs()
    if device not in specs:
        raise FmmforgeError(
            f"no chip spec for device {device!r}; known: {', '.join(specs) or 'none'}; "
            f"add one as {user_dir() / (device + SPEC_SUFFIX)} or give a path to a .toml spec"
        )
    return read_spec(specs[device])


_REQUIRED = {"name": str, "hbm_gbps": (int, float), "peak_tflops": dict}
_OPTIONAL = {"description": str, "mxu_size": int, "mxu_count": int, "tensorcores": int,
             "default_dtype": str, "fused_operand_cost": (int, float), "source": str}


def read_spec(path: Path) -> ChipSpec:
    """Parse and check one spec file; every problem is one FmmforgeError naming the file."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FmmforgeError(f"cannot read device spec {path}: {exc}") from None
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise FmmforgeError(f"device spec {path} has no {key!r}; see docs/plugins.md for the fields")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise FmmforgeError(f"device spec {path}: {key!r} has the wrong type ({data[key]!r})")
    unknown = set(data) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise FmmforgeError(f"device spec {path}: unknown field(s) {', '.join(sorted(unknown))}")
    for key, kind in _OPTIONAL.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise FmmforgeError(f"device spec {path}: {key!r} has the wrong type ({data[key]!r})")
    peaks = {}
    for dtype, value in data["peak_tflops"].items():
        if dtype not in DTYPE_BYTES:
            raise FmmforgeError(f"device spec {path}: unknown dtype {dtype!r} in [peak_tflops]; "
                                f"use {', '.join(DTYPE_BYTES)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (math.isfinite(value) and value > 0):
            raise FmmforgeError(f"device spec {path}: peak_tflops.{dtype} must be a positive number")
        peaks[dtype] = float(value)
    if not peaks:
        raise FmmforgeError(f"device spec {path}: [peak_tflops] lists no dtype")
    positive = {"hbm_gbps": data["hbm_gbps"], "mxu_size": data.get("mxu_size", 128),
                "mxu_count": data.get("mxu_count", 1), "tensorcores": data.get("tensorcores", 1)}
    for key, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise FmmforgeError(f"device spec {path}: {key} must be positive, not {value}")
    cost = float(data.get("fused_operand_cost", 0.0))
    if not (math.isfinite(cost) and cost >= 0):
        raise FmmforgeError(f"device spec {path}: fused_operand_cost must be zero or positive")
    default_dtype = data.get("default_dtype", "bfloat16")
    if default_dtype not in peaks:
        raise FmmforgeError(f"device spec {path}: default_dtype {default_dtype!r} has no peak_tflops entry")
    return ChipSpec(
        name=data["name"], description=data.get("description", ""), peak_tflops=peaks,
        hbm_gbps=float(data["hbm_gbps"]), mxu_size=int(positive["mxu_size"]),
        mxu_count=int(positive["mxu_count"]), tensorcores=int(positive["tensorcores"]),
        default_dtype=default_dtype, fused_operand_cost=cost, source=data.get("source", ""),
        path=str(path),
    )
