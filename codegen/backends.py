"""Code-generation backends: torch (CPU and CUDA), numpy (CPU reference), cupy (CUDA).

A backend turns a plan and its verified schemes into a :class:`Kernel` (``emit``), knows how to
make inputs on its device and read results back (for validation and timing), and names its
vendor baseline. They are registered with the plugin layer as built-ins
(:mod:`fmmforge.plugins.builtin_backends`); :func:`fmmforge.codegen.generate.generate` is the
whole pipeline: emit → validate → cache.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fmmforge.codegen import layouts
from fmmforge.codegen.kernel import Kernel
from fmmforge.codegen.plan import Plan
from fmmforge.core.atomic import write_text
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError


class CodegenBackend:
    """Base class: subclasses set name/description/devices and implement emit and the I/O helpers."""

    name = ""
    description = ""
    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("float32", "float64")
    variants: tuple[str, ...] = layouts.for_backend(None)  # code layouts it emits (codegen.layouts.LAYOUTS)

    # -- generation
    def emit(self, plan: Plan, schemes: list[Decomposition]) -> Kernel:
        raise NotImplementedError

    # -- running
    def available(self) -> str | None:
        """None when kernels can run here, else why not."""
        return None

    def check_plan(self, plan: Plan) -> None:
        if plan.device.split(":")[0] not in self.devices:
            raise FmmforgeError(f"backend {self.name} emits kernels for {', '.join(self.devices)}, "
                                f"not {plan.device}; use --device {self.devices[0]}")
        if plan.dtype not in self.dtypes:
            raise FmmforgeError(f"backend {self.name} supports {', '.join(self.dtypes)}, not {plan.dtype}")
        if plan.variant not in self.variants:
            known = plan.variant in layouts.NAMES and layouts.layout(plan.variant).backends
            hint = f"; the {plan.variant} variant is for backend {', '.join(known)}" if known else ""
            raise FmmforgeError(f"backend {self.name} has no {plan.variant} variant (it emits "
                                f"{', '.join(self.variants)}){hint}")

    def to_native(self, x: np.ndarray, dtype: str, device: str) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def baseline(self) -> Callable[[Any, Any], Any]:
        """The vendor matmul the kernels are measured against."""
        raise NotImplementedError

    def out_baseline(self) -> Callable[[Any, Any, Any], Any] | None:
        """Vendor matmul writing into a preallocated output (fairest timing), if the library has one."""
        return None


class PythonBackend(CodegenBackend):
    """A backend whose kernels are one Python module, written by the emitter of the plan's layout."""

    def emit(self, plan: Plan, schemes: list[Decomposition]) -> Kernel:
        source, facts = layouts.layout(plan.variant).emit(plan, schemes)
        return Kernel(plan, {"kernel.py": source}, "kernel.py", facts)


class TorchBackend(PythonBackend):
    name = "torch"
    description = ("readable Python for torch (CPU, CUDA): views, preallocated workspaces, in-place "
                   "accumulation into C, coefficients folded into addmm's alpha, torch.mm at the leaves")
    devices = ("cpu", "cuda")
    variants = layouts.for_backend("torch")

    def to_native(self, x, dtype, device):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=getattr(torch, dtype))

    def to_numpy(self, x):
        return x.detach().to("cpu").numpy()

    def baseline(self):
        import torch

        return torch.matmul

    def out_baseline(self):
        import torch

        return lambda A, B, C: torch.mm(A, B, out=C)


class NumpyBackend(PythonBackend):
    name = "numpy"
    description = "readable Python for numpy (CPU reference backend): the same schedule, BLAS gemm at the leaves"
    devices = ("cpu",)

    def to_native(self, x, dtype, device):
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def baseline(self):
        return np.matmul

    def out_baseline(self):
        return lambda A, B, C: np.matmul(A, B, out=C)


class CupyBackend(CodegenBackend):
    name = "cupy"
    description = ("CUDA C for the linear combinations (one fused kernel for all A/B sums, one for C) "
                   "with cuBLAS batched gemm at the leaves through CuPy")
    devices = ("cuda",)

    def emit(self, plan: Plan, schemes: list[Decomposition]) -> Kernel:
        from fmmforge.codegen.emit_cupy import emit_cupy

        files, facts = emit_cupy(plan, schemes)
        return Kernel(plan, files, "kernel.py", facts)

    def available(self) -> str | None:
        try:
            import cupy
        except ImportError:
            return "cupy is not installed (pip install 'fmmforge[cuda12]' or '[cuda13]')"
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA device"
        except Exception as exc:  # noqa: BLE001 - any CUDA runtime failure means "cannot run here"
            return f"CUDA is not usable ({exc})"
        return None

    def to_native(self, x, dtype, device):
        import cupy

        with cupy.cuda.Device(int(device.split(":")[1]) if ":" in device else 0):
            return cupy.asarray(np.ascontiguousarray(x, dtype=dtype))

    def to_numpy(self, x):
        import cupy

        return cupy.asnumpy(x)

    def baseline(self):
        import cupy

        return cupy.matmul

    def out_baseline(self):
        import cupy

        return lambda A, B, C: cupy.matmul(A, B, out=C)


BUILTIN_BACKENDS: tuple[CodegenBackend, ...] = (TorchBackend(), NumpyBackend(), CupyBackend())


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc",):
        if Path(candidate).exists():
            return candidate
    return None


@dataclass(frozen=True)
class NvccResult:
    """One nvcc run: the command (as a user would type it), whether it compiled, and its output."""

    command: str
    ok: bool
    message: str
    ptx: str = ""


def _run_nvcc(cu_file: Path, out: Path, timeout: float) -> NvccResult:
    nvcc = nvcc_path()
    if nvcc is None:
        raise FmmforgeError("nvcc is not installed (CUDA toolkit); cannot compile the CUDA kernel")
    argv = [nvcc, "--ptx", str(cu_file), "-o", str(out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return NvccResult(" ".join(argv), False, f"nvcc took longer than {timeout:g} s")
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    ok = proc.returncode == 0 and out.exists()
    return NvccResult(" ".join(argv), ok, "; ".join(lines[:3]) if lines else ("ok" if ok else f"exit {proc.returncode}"),
                      out.read_text(encoding="utf-8", errors="replace") if ok else "")


def nvcc_check(source: str, timeout: float = 120.0) -> NvccResult:
    """Compile CUDA C text to PTX with nvcc in a private temporary folder (no GPU needed; nothing
    is written anywhere else). Raises FmmforgeError when nvcc is not installed."""
    with tempfile.TemporaryDirectory(prefix="fmmforge-nvcc-") as tmp:
        cu = Path(tmp) / "kernel.cu"
        write_text(cu, source)  # a private scratch file, removed with its folder
        result = _run_nvcc(cu, Path(tmp) / "kernel.ptx", timeout)
    return NvccResult(result.command.replace(tmp + "/", ""), result.ok, result.message, result.ptx)


def compile_cuda(cu_file: Path, output: Path | None = None, timeout: float = 120.0) -> Path:
    """Compile a .cu file to PTX with nvcc (no GPU needed); raises FmmforgeError with nvcc's message."""
    out = output or cu_file.with_suffix(".ptx")
    result = _run_nvcc(cu_file, out, timeout)
    if not result.ok:
        raise FmmforgeError(f"nvcc failed on {cu_file}: {result.message}")
    return out
