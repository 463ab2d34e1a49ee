"""The codegen pipeline: plan → backend emit → validation against float64 → on-disk cache.

Kernels are cached in ``$FMMFORGE_HOME/kernels/<key>/`` where the key hashes the algorithm
fingerprints, the plan (levels, cutoff, backend, dtype, device kind), the fmmforge version and
the emitter revision. Only kernels that passed validation are cached; a kernel that fails is
reported (:class:`KernelValidationError`) and never benchmarked. A kernel emitted for a GPU on a
machine without one may be cached *unvalidated* (``validated: false``): it is validated on its
first use on the device and never served as validated before that. The entry's validation.json
records the sha256 of each file (plain names inside the entry's folder only); every use re-hashes
the files and trusts the entry, its validation included, only when all of them match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from fmmforge.codegen.backends import CodegenBackend
from fmmforge.codegen.kernel import Kernel, check_file_name, sha256_text
from fmmforge.codegen.plan import Plan, check_decomposition
from fmmforge.codegen.validate import (CheckResult, KernelValidationError, check_product, random_inputs,
                                       validation_shapes)
from fmmforge.core.atomic import write_text
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, print_warning
from fmmforge.core.paths import home_subdir
from fmmforge.core.version import __version__

VALIDATION_FILE = "validation.json"


def kernels_dir() -> Path:
    return home_subdir("kernels")


# Bumped whenever an emitter's output changes for the same plan, so that kernels cached by an
# earlier emitter are regenerated (2: peeling once at the top, to every level's multiple;
# 3: one workspace helper text for torch and numpy; 4: workspaces per thread; 5: the runtime
# copied from codegen.runtime, one function pair per distinct algorithm; 6: the fused variant;
# 7: the fused passes loop from index 0, so they vectorise, and numba's pool sleeps after a pass;
# 8: the fused sums pass writes named slots and reads held ones, chained sums; 9: the fused sums by torch
# passes unless SUMS_PASS = "numba"; 10: fused and parallel kernels form a torch sum by one _combination;
# 11: a fused level holds at most product_budget products for its C update (more run in phases), and a
# fused call whose workspaces would pass 2 C runs in strips of K; 12: each group's fused sums by the
# compiled pass or torch's, whichever moves less; 13: the compiled passes' row segments of 256, not 512).
EMITTER_REVISION = 13
# Bumped when the layout of a cache entry changes (2: validation.json records each file's sha256).
CACHE_FORMAT = 2


def cache_key(plan: Plan) -> str:
    raw = json.dumps({"plan": plan.key(), "version": __version__, "emitter": EMITTER_REVISION,
                      "cache": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def validate_kernel(kernel: Kernel, backend: CodegenBackend, decomps: list[Decomposition],
                    extra_shapes: list[tuple[int, int, int]] = (), seed: int = 0) -> list[CheckResult]:
    """Run the kernel on random uniform[-1,1] inputs of several shapes (every level and every peeling
    path, with a small cut-off so the shapes stay small) and compare with float64."""
    plan = kernel.plan
    small = 2
    results: list[CheckResult] = []
    private = kernel.new_module()  # its own module: the shared one's CUTOFF is never changed
    if hasattr(private, "CUTOFF"):
        private.CUTOFF = small
    for i, (M, K, N) in enumerate(validation_shapes(decomps, small)):
        A, B = random_inputs(M, K, N, seed + i)
        results.append(check_product(private.matmul, lambda x: backend.to_native(x, plan.dtype, plan.device),
                                     backend.to_numpy, A, B, decomps, plan.dtype))
    mod = kernel.module()
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


def _plain_names(files: object) -> dict[str, str]:
    """``files`` of a cache entry: plain file name -> sha256 hex digest; anything else is refused."""
    if not isinstance(files, dict) or not files:
        raise ValueError("no file hashes recorded")
    for name, digest in files.items():
        check_file_name(name)
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"no sha256 recorded for {name}")
    return files


def _read_entry_file(path: Path) -> str:
    """A file of a cache entry: a regular file inside the entry's folder (a link is not followed)."""
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{path.name} is missing or not a regular file")
    return path.read_text(encoding="utf-8")


def _load_cached(directory: Path, plan: Plan) -> Kernel:
    """The kernel cached in ``directory``, after checking every file against its recorded sha256
    (an entry recorded unvalidated comes back with no ``validation``: it is validated before use).

    Raises :class:`CacheMismatch` (why, in words) when the entry is unreadable or any file differs;
    raises FileNotFoundError when there is no entry."""
    meta = directory / VALIDATION_FILE
    if not meta.exists() and not meta.is_symlink():
        raise FileNotFoundError(meta)
    try:
        info = json.loads(_read_entry_file(meta))
        hashes = _plain_names(info["files"])
        module_file = check_file_name(info["module_file"])
        if module_file not in hashes:
            raise ValueError(f"module {module_file} is not among its files")
        files = {name: _read_entry_file(directory / name) for name in hashes}
        changed = sorted(name for name, text in files.items() if sha256_text(text) != hashes[name])
        if changed:
            raise ValueError(f"{', '.join(changed)} changed since it was validated")
        checks = [CheckResult(tuple(r["shape"]), float(r["max_error"]), float(r["bound"])) for r in info["checks"]]
        validated = info.get("validated", True)
        if validated is not True and validated is not False:
            raise ValueError("'validated' is neither true nor false")
        if validated and (not checks or not all(r.ok for r in checks)):
            raise ValueError("no passing validation recorded")
        if not validated:
            checks = []  # an unvalidated entry (emitted for a GPU elsewhere): validated on first use
        facts = info.get("facts", {})
        if not isinstance(facts, dict):
            raise ValueError("facts are not a table")
    except FmmforgeError as exc:  # a file name that is not plain
        raise CacheMismatch(str(exc)) from None
    except (OSError, UnicodeError, ValueError, KeyError, TypeError) as exc:
        raise CacheMismatch(str(exc) or type(exc).__name__) from None
    kernel = Kernel(plan, files, module_file, facts, directory)
    kernel.validation = checks
    return kernel


class CacheMismatch(Exception):
    """A cache entry that cannot be trusted (internal: the entry is discarded and regenerated)."""


def _discard(path: Path) -> None:
    """Remove a cache entry (a link is removed, never followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def entry_info(kernel: Kernel, results: list[CheckResult], note: dict[str, Any] | None = None) -> dict[str, Any]:
    """The validation.json of a kernel: its files' sha256, plan, facts, and either the passing
    checks (``validated: true``) or none (``validated: false``, with ``note`` saying why and what
    was checked instead, e.g. the nvcc run)."""
    info: dict[str, Any] = {
        "validated": bool(results), "files": kernel.digests(), "module_file": kernel.module_file,
        "facts": kernel.facts, "plan": kernel.plan.as_dict(), "fmmforge_version": __version__,
        "emitter": EMITTER_REVISION,
        "checks": [{"shape": list(r.shape), "max_error": r.max_error, "bound": r.bound} for r in results],
    }
    if note:
        info["unvalidated"] = note
    return info


def _store_entry(directory: Path, kernel: Kernel, results: list[CheckResult],
                 note: dict[str, Any] | None = None) -> None:
    """Write the entry into a fresh folder beside ``directory``, then rename it into place (a reader
    sees the old entry, none, or the whole new one; nothing from the old entry is followed).
    With no ``results`` the entry is recorded unvalidated."""
    parent = directory.parent
    try:
        fresh = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    except OSError as exc:
        raise FmmforgeError(f"cannot write the kernel cache in {parent}: {exc.strerror or exc}") from None
    try:
        kernel.write(fresh)
        write_text(fresh / VALIDATION_FILE, json.dumps(entry_info(kernel, results, note), indent=1, default=str))
        try:
            _discard(directory)
            os.rename(fresh, directory)
        except OSError:  # another process put its entry there first: it is checked when used
            shutil.rmtree(fresh, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    kernel.path = directory


def gpu_offline_reason(device: str, backend: CodegenBackend) -> str | None:
    """Why a kernel for CUDA ``device`` can be emitted here but not run (no CUDA GPU, or the
    backend's runtime missing), or None when it can run here or the device is not a CUDA one.
    Only ``cuda`` / ``cuda:0`` qualify: naming another index on a machine without it stays an error."""
    from fmmforge.hardware.devices import cuda_devices

    if device.strip() not in ("cuda", "cuda:0"):
        return None
    if not cuda_devices():
        return "this machine has no CUDA GPU"
    return backend.available()


def generate(plan: Plan, decomps: list[Decomposition], *, backend: CodegenBackend, validate: bool = True,
             use_cache: bool = True, warn: Callable[[str], None] = print_warning,
             unvalidated_note: dict[str, Any] | None = None) -> Kernel:
    """A validated kernel for ``plan`` (from the cache when it is there and every file still has the
    sha256 recorded when it was validated; otherwise the entry is discarded with one ``warn`` line,
    and the kernel is regenerated, re-validated and cached anew).

    ``backend`` is the plan's backend, looked up by the caller (``fmmforge.plugins.get_backend``).
    With ``validate=False`` (emit-only, e.g. CUDA code on a machine without a GPU) the kernel is
    returned unvalidated (``validation`` empty) and not cached, unless ``unvalidated_note`` is
    given: then it is cached as an *unvalidated* entry (validation.json: ``validated: false`` and
    the note), which is never served as validated: the first ``generate`` with ``validate=True``
    validates it (on the device) and records the checks, or refuses.
    """
    for d, label in zip(decomps, plan.algorithms):
        check_decomposition(d, label)
    if tuple(d.fingerprint for d in decomps) != plan.fingerprints:
        raise FmmforgeError("plan and schemes disagree (fingerprints differ); build plans with make_plan")
    if backend.name != plan.backend:
        raise FmmforgeError(f"the plan is for backend {plan.backend}, not {backend.name}; "
                            "pass the backend the plan names")
    backend.check_plan(plan)
    use_cache = use_cache and (validate or unvalidated_note is not None)
    directory = kernels_dir() / cache_key(plan) if use_cache else None
    kernel: Kernel | None = None
    if directory is not None:
        try:
            kernel = _load_cached(directory, plan)
        except FileNotFoundError:
            pass
        except CacheMismatch as why:
            warn(f"discarded the cached kernel in {directory} ({why}); regenerating and re-validating it")
        if kernel is not None and (kernel.validation or not validate):
            return kernel  # validated, or unvalidated and asked for as such
    if kernel is None:
        kernel = backend.emit(plan, decomps)
        if not validate:
            if directory is not None:
                _store_entry(directory, kernel, [], unvalidated_note)
            return kernel
    why = backend.available()
    if why is not None:
        raise FmmforgeError(f"cannot validate the {plan.backend} kernel here: {why}; "
                            "use --emit-only to write the source without running it")
    from fmmforge.hardware.devices import get_device

    get_device(plan.device)  # present?
    results = validate_kernel(kernel, backend, decomps)
    if directory is not None:
        _store_entry(directory, kernel, results)
        kernel._module = None  # re-import under the cached file's name (tracebacks point at it)
    return kernel
