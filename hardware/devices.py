"""Devices: the CPU, CUDA GPUs, and spec-only accelerators (scored by the cost model, never run).

``cpu``      model, cores, ISA extensions, BLAS libraries and thread counts (threadpoolctl and
             torch's build config), and the measured peak GFLOP/s of the vendor matmul, cached
             per machine in $FMMFORGE_HOME/hardware/peaks.json.
``cuda:N``   name, SMs, memory, clocks (torch.cuda).
``tpu-v4``…  the chip specs of the TPU cost model (fmmforge.hardware.chips): can be scored, not run.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmmforge.core.atomic import write_text
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.paths import default_home, home_subdir

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "neon", "asimd", "sve")


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "cuda:0", "tpu-v4"
    kind: str  # "cpu", "cuda" or "spec"
    description: str
    runnable: bool
    details: dict[str, Any] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------- CPU
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in info:
            info[key] = value.strip()
    return info


def blas_info() -> list[dict[str, Any]]:
    """BLAS/OpenMP libraries loaded in this process, with their thread counts."""
    import torch  # noqa: F401  (load torch's libraries so threadpoolctl sees them)
    import numpy  # noqa: F401

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: lib.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads")}
        for lib in threadpool_info()
    ]


def cpu_device() -> Device:
    import torch

    info = _cpuinfo()
    model = info.get("model name") or info.get("Model") or platform.processor() or platform.machine()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    config = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", config)
    torch_blas = m.group(1) if m else "unknown"
    details = {
        "model": model,
        "cores": os.cpu_count() or 1,
        "isa": isa,
        "torch": torch.__version__,
        "torch_blas": torch_blas,
        "torch_threads": torch.get_num_threads(),
        "libraries": blas_info(),
    }
    cores, threads = details["cores"], details["torch_threads"]
    return Device("cpu", "cpu", f"{model}, {cores} core{'s' * (cores != 1)}, {'/'.join(isa[-3:]) or platform.machine()}, "
                  f"torch BLAS {torch_blas}, {threads} thread{'s' * (threads != 1)}", True, details)


def machine_key() -> str:
    """What makes a measured peak valid: CPU model, cores, torch version and BLAS."""
    d = cpu_device().details
    return f"{d['model']}|{d['cores']}|{d['torch']}|{d['torch_blas']}"


# ---------------------------------------------------------------------- CUDA
def cuda_devices() -> list[Device]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        details = {
            "name": p.name,
            "sms": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
        }
        clock = getattr(p, "clock_rate", None)
        if clock:
            details["clock_mhz"] = clock / 1000
        out.append(Device(f"cuda:{i}", "cuda", f"{p.name}, {p.multi_processor_count} SMs, "
                          f"{details['memory_gib']} GiB, compute {details['capability']}", True, details))
    return out


# ---------------------------------------------------------------------- spec-only
def spec_devices() -> list[Device]:
    try:
        from fmmforge.hardware.chips import available_specs, load_chip
    except ImportError:
        return []
    out = []
    for name in sorted(available_specs()):
        try:
            chip = load_chip(name)
        except FmmforgeError:
            continue
        # the spec's own description (it gives the peaks in words), else the peaks: never both
        peaks = ", ".join(f"{v:g} TFLOP/s {k}" for k, v in sorted(chip.peak_tflops.items()))
        out.append(Device(name, "spec", chip.description or f"{peaks}, {chip.hbm_gbps:g} GB/s HBM", False,
                          {"peak_tflops": dict(chip.peak_tflops), "hbm_gbps": chip.hbm_gbps}))
    return out


def list_devices() -> list[Device]:
    return [cpu_device(), *cuda_devices(), *spec_devices()]


def get_device(name: str, *, runnable: bool = True) -> Device:
    """The device called ``name``; an absent one (or a spec-only one when it must run) is one clear error."""
    name = name.strip()
    if name == "cuda":
        name = "cuda:0"
    if name == "cpu":
        return cpu_device()
    if name.startswith("cuda:"):
        found = {d.name: d for d in cuda_devices()}
        if name not in found:
            have = ", ".join(found) or "none"
            raise FmmforgeError(f"device {name} is not present (CUDA devices here: {have}); "
                                "run `fmmforge devices` to list what this machine has")
        return found[name]
    specs = {d.name: d for d in spec_devices()}
    if name in specs:
        if runnable:
            raise FmmforgeError(f"device {name} is spec-only: it can be scored (--reward tpu-cost) but "
                                "kernels cannot run on it; use --device cpu or cuda:N")
        return specs[name]
    raise FmmforgeError(f"unknown device {name!r}; run `fmmforge devices` to list the devices here")


# ---------------------------------------------------------------------- measured peak
def _peaks_file(create: bool = False) -> Path:
    """$FMMFORGE_HOME/hardware/peaks.json; its folder is made only to write it (reading makes nothing)."""
    folder = home_subdir("hardware") if create else default_home() / "hardware"
    return folder / "peaks.json"


def cached_peak(device: str = "cpu", dtype: str = "float32") -> float | None:
    """Cached measured GFLOP/s of the vendor matmul on this machine, or None."""
    try:
        data = json.loads(_peaks_file().read_text())
    except (OSError, ValueError):
        return None
    key = machine_key() if device == "cpu" else device
    return data.get(key, {}).get(f"{device}|{dtype}")


def measure_peak(device: str = "cpu", dtype: str = "float32", size: int = 2048,
                 threads: int | None = None, samples: int = 5, min_sample_s: float = 0.2) -> float:
    """Measure GFLOP/s of torch.matmul (MKL / cuBLAS) at ``size`` and cache it per machine."""
    import torch

    from fmmforge.hardware.timing import time_one

    dev = get_device(device)
    tdev = torch.device("cuda", int(dev.name.split(":")[1])) if dev.kind == "cuda" else torch.device("cpu")
    dt = getattr(torch, dtype)
    A = torch.rand(size, size, dtype=dt, device=tdev)
    B = torch.rand(size, size, dtype=dt, device=tdev)
    C = torch.empty(size, size, dtype=dt, device=tdev)
    t = time_one(lambda: torch.mm(A, B, out=C), device=dev.name, threads=threads, samples=samples,
                 min_sample_s=min_sample_s)
    gflops = 2 * size**3 / t.median / 1e9
    path = _peaks_file(create=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    key = machine_key() if device == "cpu" else device
    data.setdefault(key, {})[f"{device}|{dtype}"] = gflops
    write_text(path, json.dumps(data, indent=1, sort_keys=True))
    return gflops
