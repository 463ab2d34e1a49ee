"""The codegen pipeline: plan → backend emit → validation against float64 → on-disk cache.

Kernels are cached in ``$FMMFORGE_HOME/kernels/<key>/`` where the key hashes the algorithm
fingerprints, the plan (levels, cutoff, backend, dtype, device kind) and the fmmforge
version. Only kernels that passed validation are cached; a kernel that fails is reported
(:class:`KernelValidationError`) and never benchmarked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fmmforge.codegen.backends import BUILTIN_BACKENDS, CodegenBackend
from fmmforge.codegen.kernel import Kernel
from fmmforge.codegen.plan import Plan, check_decomposition
from fmmforge.codegen.validate import (CheckResult, KernelValidationError, check_product, random_inputs,
                                       validation_shapes)
from fmmforge.core.atomic import write_text
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.version import __version__

VALIDATION_FILE = "validation.json"


def get_backend(name: str) -> CodegenBackend:
    """A codegen backend by name: through the plugin layer, falling back to the built-ins."""
    try:
        from fmmforge.plugins.registry import registry

        reg = registry("backend")
        if name in reg.entries:
            return reg.get(name)
    except ImportError:  # plugin layer absent: built-ins only
        reg = None
    builtin = {b.name: b for b in BUILTIN_BACKENDS}
    if name in builtin:
        return builtin[name]
    known = sorted(set(builtin) | (set(reg.names()) if reg is not None else set()))
    raise FmmforgeError(f"unknown backend {name!r}; known: {', '.join(known)}")


def kernels_dir() -> Path:
    from fmmforge.core.store import default_home

    return default_home() / "kernels"


# Bumped whenever an emitter's output changes for the same plan, so that kernels cached by an
# earlier emitter are regenerated (2: peeling once at the top, to every level's multiple;
# 3: one workspace helper text for torch and numpy).
EMITTER_REVISION = 3


def cache_key(plan: Plan) -> str:
    raw = json.dumps({"plan": plan.key(), "version": __version__, "emitter": EMITTER_REVISION}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def validate_kernel(kernel: Kernel, backend: CodegenBackend, decomps: list[Decomposition],
                    extra_shapes: list[tuple[int, int, int]] = (), seed: int = 0) -> list[CheckResult]:
    """Run the kernel on random uniform[-1,1] inputs of several shapes (every level and every peeling
    path, with a small cut-off so the shapes stay small) and compare with float64."""
    plan = kernel.plan
    mod = kernel.module()
    old_cutoff = getattr(mod, "CUTOFF", None)
    small = 2
    results: list[CheckResult] = []
    try:
        if old_cutoff is not None:
            mod.CUTOFF = small
        for i, (M, K, N) in enumerate(validation_shapes(decomps, small)):
            A, B = random_inputs(M, K, N, seed + i)
            results.append(check_product(mod.matmul, lambda x: backend.to_native(x, plan.dtype, plan.device),
                                         backend.to_numpy, A, B, decomps, plan.dtype))
    finally:
        if old_cutoff is not None:
            mod.CUTOFF = old_cutoff
    for i, (M, K, N) in enumerate(extra_shapes):
        A, B = random_inputs(M, K, N, seed + 100 + i)
        results.append(check_product(mod.matmul, lambda x: backend.to_native(x, plan.dtype, plan.device),
                                     backend.to_numpy, A, B, decomps, plan.dtype))
    kernel.validation = results
    bad = [r for r in results if not r.ok]
    if bad:
        r = bad[0]
        raise KernelValidationError(
            f"generated kernel for {plan.describe()} is wrong at {r.shape[0]}x{r.shape[1]}x{r.shape[2]}: "
            f"max error {r.max_error:.3g} > bound {r.bound:.3g}; it will not be benchmarked (please report this)")
    return results


def _load_cached(directory: Path, plan: Plan) -> Kernel | None:
    meta = directory / VALIDATION_FILE
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
        files = {name: (directory / name).read_text() for name in info["files"]}
    except (OSError, ValueError, KeyError):
        return None
    k = Kernel(plan, files, info["module_file"], info.get("facts", {}), directory)
    k.validation = [CheckResult(tuple(r["shape"]), r["max_error"], r["bound"]) for r in info.get("checks", [])]
    return k


def generate(plan: Plan, decomps: list[Decomposition], *, validate: bool = True, use_cache: bool = True) -> Kernel:
    """A validated kernel for ``plan`` (from the cache when it is there).

    With ``validate=False`` (emit-only, e.g. CUDA code on a machine without a GPU) the kernel is
    returned unvalidated and never cached.
    """
    for d, label in zip(decomps, plan.algorithms):
        check_decomposition(d, label)
    if tuple(d.fingerprint for d in decomps) != plan.fingerprints:
        raise FmmforgeError("plan and schemes disagree (fingerprints differ); build plans with make_plan")
    backend = get_backend(plan.backend)
    backend.check_plan(plan)
    directory = kernels_dir() / cache_key(plan)
    if validate and use_cache:
        cached = _load_cached(directory, plan)
        if cached is not None:
            return cached
    kernel = backend.emit(plan, decomps)
    if not validate:
        return kernel
    why = backend.available()
    if why is not None:
        raise FmmforgeError(f"cannot validate the {plan.backend} kernel here: {why}; "
                            "use --emit-only to write the source without running it")
    from fmmforge.hardware.devices import get_device

    get_device(plan.device)  # present?
    results = validate_kernel(kernel, backend, decomps)
    if use_cache:
        kernel.write(directory)
        info: dict[str, Any] = {
            "files": sorted(kernel.files), "module_file": kernel.module_file, "facts": kernel.facts,
            "plan": plan.as_dict(), "fmmforge_version": __version__,
            "checks": [{"shape": list(r.shape), "max_error": r.max_error, "bound": r.bound} for r in results],
        }
        write_text(directory / VALIDATION_FILE, json.dumps(info, indent=1, default=str))
        kernel._module = None  # re-import from the cached file (tracebacks point at it)
    return kernel
