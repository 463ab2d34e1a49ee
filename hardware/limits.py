"""Limits on what a command may be asked to do: numeric options and matrix sizes, and the memory a
run will need against what this machine has available.

Every numeric option of bench, codegen, score and search goes through these checks, so that a
value no run could use (zero threads, a NaN sample time, a matrix side of 10^30) is one clear
:class:`FmmforgeError` where it is read, never a crash later or a silent nonsense result.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from fmmforge.core.errors import FmmforgeError

# No device holds a matrix with a side beyond 2^31 (an fp32 vector of that length is 8 GiB, and
# BLAS indexes dimensions with 32-bit integers).
MAX_DIMENSION = 2**31
MAX_LEVELS = 8
MAX_THREADS = 4096
MAX_WORKERS = 1024
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def check_int(value: int | None, option: str, *, minimum: int = 1, maximum: int = MAX_DIMENSION) -> int | None:
    """``value`` (None passes: not given) must be a whole number in [minimum, maximum]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FmmforgeError(f"{option} must be a whole number, not {value!r}")
    if not minimum <= value <= maximum:
        raise FmmforgeError(f"{option} must be between {minimum:,} and {maximum:,}, not {value:,}")
    return value


def check_reward_levels(levels: int) -> int:
    """Recursion levels of a reward context (score, search): 1 to MAX_LEVELS."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise FmmforgeError(f"levels must be a positive integer, not {levels!r}")
    if levels > MAX_LEVELS:
        raise FmmforgeError(f"--levels {levels} is too deep; use at most {MAX_LEVELS}")
    return levels


def check_float(value: float, option: str, *, minimum: float, maximum: float, unit: str = "") -> float:
    """``value`` must be a finite number with minimum < value <= maximum."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise FmmforgeError(f"{option} must be a finite number, not {value!r}")
    if not minimum < value <= maximum:
        raise FmmforgeError(f"{option} must be more than {minimum:g} and at most {maximum:g}{unit}, not {value:g}")
    return float(value)


def check_dimensions(values: list[int], text: str, option: str) -> tuple[int, int, int]:
    """One value (a square size N) or three (M, K, N), each a matrix side in [1, MAX_DIMENSION]."""
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise FmmforgeError(f"{option} {text!r} must be N or M,K,N (one or three numbers), e.g. 4096 or 8192,4096,8192")
    for v in values:
        if not 1 <= v <= MAX_DIMENSION:
            raise FmmforgeError(f"{option} {text!r}: every side must be between 1 and 2^31 ({MAX_DIMENSION:,}), "
                                f"not {v:,}; no device holds a larger matrix")
    return values[0], values[1], values[2]


def available_memory_bytes() -> int | None:
    """Memory this machine can give a new allocation now: MemAvailable of /proc/meminfo, else the
    free physical pages (os.sysconf); None where neither can be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def device_memory_bytes(device: str) -> int | None:
    """Memory available for a run on ``device``: free GPU memory on cuda:N, else the host's."""
    if device.startswith("cuda"):
        try:
            import torch

            index = int(device.split(":")[1]) if ":" in device else 0
            free, _total = torch.cuda.mem_get_info(index)
            return int(free)
        except (ImportError, RuntimeError, ValueError, AssertionError):
            return None
    return available_memory_bytes()


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(need: int, what: str, device: str, *, override: str) -> None:
    """Refuse (one line) a run that needs more than ``device`` has available; ``override`` names
    the flag that skips the check."""
    have = device_memory_bytes(device)
    if have is not None and need > have:
        raise FmmforgeError(f"{what} needs about {gib(need)} but {device} has {gib(have)} available; "
                            f"use smaller sizes (or {override} to try anyway)")
