"""``fmmforge.matmul(A, B)``: the drop-in matmul that uses a tuned kernel where one is faster.

A call looks at (device, dtype, shape) and, when the store holds a tuned choice for that device,
machine, dtype and shape class (:mod:`fmmforge.codegen.choices`) whose speed-up is above 1, runs
that choice's kernel (generated and validated by :func:`fmmforge.codegen.generate.generate`,
loaded once and reused); everything else is ``torch.matmul`` (``numpy.matmul`` for arrays).

What goes to a kernel: two float32 or float64 tensors of one dtype on one CPU or CUDA device,
``A`` of shape (..., M, K) (the leading dimensions are folded into M, as torch does) and ``B`` of
shape (K, N), strided, not under a torch.func transform. A batched ``B``, 1-D operands, integer or
mixed dtypes, other devices and classes without a choice are ``torch.matmul``'s, errors included.
``out=`` goes to the kernel when it is a contiguous tensor of the result's shape, dtype and device
that shares no memory with the inputs (else ``torch.matmul(..., out=out)``). Autograd goes through
:class:`_FastMatmul`, whose backward dispatches its two products the same way.

The lookups are cached in memory per (device, machine, dtype, shape class); the cache is dropped
when the store's files change (checked at most once per :data:`RECHECK_S` seconds) or on
``fmmforge.matmul.refresh()``. Both caches are guarded by locks, so any number of threads may
call at once; the kernels keep their workspaces per thread.

A busy machine: a kernel tuned on a quiet machine can lose badly beside another job on the same
cores (torch's OpenMP threads spin between the kernel's many short parallel passes and take the
cores from the threads they wait for; issue 31). :class:`Contention` watches each choice's calls
by their own times and sends a choice's calls to ``torch.matmul`` while its kernel is clearly
slower than torch's there, trying the kernel again now and then (see docs/matmul.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from fmmforge.codegen.choices import Choice, ShapeClass, lookup_choice, shape_class
from fmmforge.core.errors import FmmforgeError, print_warning

RECHECK_S = 1.0
_DEFAULT = object()  # Matmul's contention watch unless told otherwise: a Contention of its own
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
_NUMPY_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_PLAIN = (torch.Tensor, torch.nn.Parameter)
KernelFn = Callable[..., torch.Tensor]  # a loaded kernel's matmul(A, B, out=None)


@dataclass
class _Watch:
    """What :class:`Contention` knows of one choice: times in seconds per flop (M·K·N)."""

    best: float = float("inf")  # the kernel's fastest call
    kernel: Optional[float] = None  # its latest call
    vendor: Optional[float] = None  # torch.matmul's latest call
    kernel_calls: int = 0
    calls: int = 0
    strikes: int = 0  # vendor probes in a row that found the kernel slower by ENTER
    probe: bool = False  # the next call goes to torch.matmul, to compare
    confirm: bool = False  # after the next kernel call, probe (a strike is to be confirmed)
    fallback: bool = False
    retry_at: float = float("inf")  # in fallback: when the kernel is tried again
    backoff_s: float = 0.0
    trying: bool = False  # a retry of the kernel is in flight (one at a time)


class Contention:
    """Per choice, whether a call runs the kernel or ``torch.matmul``, from the calls' own times.

    Every call is timed (``clock``) and taken per flop. A kernel call slower than SLOWER × the
    kernel's fastest call so far (or every PROBE_EVERY-th call) makes the next call a probe that
    runs ``torch.matmul``; when a probe finds the kernel's latest call slower than ENTER × torch's,
    STRIKES times in a row (after each strike the next kernel call is probed again), the choice
    falls back: its calls go to ``torch.matmul``. In fallback the kernel is tried again after
    ``backoff_s`` (RETRY_S at first, doubled after each failed try up to MAX_RETRY_S, and never
    less than RETRY_COST × that kernel call's own time, so the tries cost at most about
    1/RETRY_COST of the time); a try at most LEAVE × torch's latest time ends the fallback.
    LEAVE < ENTER: the hysteresis. A kernel's first call (compilation, workspaces) is not judged.
    Thread-safe: one lock over all watches; the calls run outside it; one try at a time.
    """

    SLOWER = 1.3
    ENTER = 1.2
    LEAVE = 1.05
    STRIKES = 2
    PROBE_EVERY = 64
    RETRY_S = 1.0
    RETRY_COST = 20.0
    MAX_RETRY_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._watches: dict[Any, _Watch] = {}

    def runs_kernel(self, key: Any) -> bool:
        """Whether this call of choice ``key`` runs the kernel (else ``torch.matmul``)."""
        with self._lock:
            w = self._watches.setdefault(key, _Watch())
            w.calls += 1
            if w.fallback:
                if not w.trying and self.clock() >= w.retry_at:
                    w.trying = True
                    return True
                return False
            if w.probe or (w.kernel is not None and w.calls % self.PROBE_EVERY == 0):
                w.probe = False
                return False
            return True

    def record(self, key: Any, kernel: bool, seconds: float, flops: int) -> None:
        """The time of a call of ``key`` that ran the kernel (``kernel``) or ``torch.matmul``."""
        t = seconds / max(flops, 1)
        with self._lock:
            w = self._watches.setdefault(key, _Watch())
            if not kernel:
                w.vendor = t
                if w.fallback or w.kernel is None:
                    return
                if w.kernel <= self.ENTER * t:
                    w.strikes = 0
                    return
                w.strikes += 1
                if w.strikes < self.STRIKES:
                    w.confirm = True  # the next kernel call is compared again, whatever its time
                    return
                kernel_s = seconds * w.kernel / t  # the kernel's latest speed at this call's size
                w.fallback, w.strikes, w.backoff_s = True, 0, self.RETRY_S
                w.retry_at = self.clock() + max(self.RETRY_S, self.RETRY_COST * kernel_s)
                return
            w.kernel_calls += 1
            trying, w.trying = w.trying, False
            if w.kernel_calls == 1:  # compilation and workspaces: not the kernel's speed
                return
            w.kernel, w.best = t, min(w.best, t)
            if not trying:
                if w.confirm or t > self.SLOWER * w.best:
                    w.probe, w.confirm = True, False
            elif w.vendor is not None and t <= self.LEAVE * w.vendor:
                w.fallback, w.retry_at = False, float("inf")
            else:
                w.backoff_s = min(2 * w.backoff_s, self.MAX_RETRY_S)
                w.retry_at = self.clock() + max(w.backoff_s, self.RETRY_COST * seconds)

    def abandon(self, key: Any, kernel: bool) -> None:
        """A call of ``key`` raised: a kernel try in flight is over (the next one comes as planned)."""
        with self._lock:
            w = self._watches.get(key)
            if w is not None and kernel and w.trying:
                w.trying = False
                w.retry_at = self.clock() + max(w.backoff_s, self.RETRY_S)

    def falling_back(self) -> list[Any]:
        """The keys whose calls go to ``torch.matmul`` now."""
        with self._lock:
            return [k for k, w in self._watches.items() if w.fallback]

    def clear(self) -> None:
        with self._lock:
            self._watches.clear()


@dataclass(frozen=True)
class Route:
    """What a call does: the choice and its loaded kernel, for the folded (M, K) x (K, N) product."""

    choice: Choice
    kernel: KernelFn
    shape_class: ShapeClass


def _device_name(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index if device.index is not None else 0}"


def _transformed(t: torch.Tensor) -> bool:
    """A tensor wrapped by torch.func (vmap, grad, jvp): a custom kernel is not for it."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


def _eligible(A: Any, B: Any) -> bool:
    """Whether a kernel could take A @ B at all (before any lookup)."""
    return (type(A) in _PLAIN and type(B) in _PLAIN and A.dtype in _DTYPES and B.dtype == A.dtype
            and A.device == B.device and A.device.type in ("cpu", "cuda") and A.layout == torch.strided
            and B.layout == torch.strided and A.dim() >= 2 and B.dim() == 2 and A.shape[-1] == B.shape[0]
            and not _transformed(A) and not _transformed(B))


class Matmul:
    """``fmmforge.matmul``: call it as ``matmul(A, B, out=None)``; see the module's docstring.

    ``warn`` receives each warning line once (a damaged choice, a kernel that cannot be made).
    ``contention``: the :class:`Contention` that may send a choice's calls to ``torch.matmul`` on a
    busy machine (by default one of its own; None: the kernel always runs where a choice applies).
    """

    def __init__(self, warn: Callable[[str], None] = print_warning, recheck_s: float = RECHECK_S,
                 contention: Any = _DEFAULT) -> None:
        self._warn_line = warn
        self._recheck_s = recheck_s
        self.contention: Optional[Contention] = Contention() if contention is _DEFAULT else contention
        self._lock = threading.Lock()  # guards every dict below, the store signature and the generation
        self._check_lock = threading.Lock()  # one store check at a time; the others wait for its verdict
        self._load_lock = threading.Lock()  # one kernel is generated at a time; lookups do not wait on it
        self._choices: dict[tuple[str, str, str, ShapeClass], Optional[Choice]] = {}
        self._kernels: dict[tuple[str, str], Optional[KernelFn]] = {}
        self._machines: dict[str, str] = {}
        self._warned: set[str] = set()
        self._calls: Counter[str] = Counter()
        self._signature: Optional[tuple] = None
        self._checked_at = float("-inf")
        self._generation = 0  # bumped whenever the cached choices are dropped

    # ------------------------------------------------------------ what users call
    def __call__(self, A: Any, B: Any, *, out: Any = None) -> Any:
        if type(A) is np.ndarray and type(B) is np.ndarray and (out is None or type(out) is np.ndarray):
            return self._numpy(A, B, out)
        route = self.decide(A, B)
        if route is None or (out is not None and not self._usable_out(out, A, B)):
            return torch.matmul(A, B, out=out)
        if torch.is_grad_enabled() and (A.requires_grad or B.requires_grad):
            if out is not None:  # torch refuses out= with autograd: let it say so
                return torch.matmul(A, B, out=out)
            return _FastMatmul.apply(A, B, self, route)
        return self._run(route, A, B, out)

    def decide(self, A: Any, B: Any) -> Optional[Route]:
        """The tuned kernel ``self(A, B)`` would use, or None for the vendor matmul."""
        if not _eligible(A, B):
            return None
        return self._route(_device_name(A.device), _DTYPES[A.dtype], prod(A.shape[:-1]), *B.shape)

    def _route(self, device: str, dtype: str, M: int, K: int, N: int) -> Optional[Route]:
        cls = shape_class(M, K, N)
        if cls is None:
            return None
        choice = self._choice(device, dtype, cls)
        if choice is None:
            return None
        kernel = self._kernel(choice)
        return None if kernel is None else Route(choice, kernel, cls)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``torch.nn.functional.linear`` with ``x @ weight.T`` dispatched like ``self``."""
        if self.decide(x, weight.t()) is None:
            return torch.nn.functional.linear(x, weight, bias)
        y = self(x, weight.t())
        return y if bias is None else y + bias

    def refresh(self) -> None:
        """Forget every cached lookup, kernel and count (the next calls read the store again)."""
        with self._lock:
            self._calls.clear()
            self._choices.clear()
            self._kernels.clear()
            self._machines.clear()
            self._warned.clear()
            self._signature = None
            self._checked_at = float("-inf")
            self._generation += 1
        if self.contention is not None:
            self.contention.clear()

    def kernel_calls(self) -> dict[str, int]:
        """How many products each tuned kernel computed, by its plan's description."""
        with self._lock:
            return dict(self._calls)

    # ------------------------------------------------------------ running
    def _run(self, route: Route, A: torch.Tensor, B: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
        K, N = B.shape
        batch = A.shape[:-1]
        flat = None if out is None else out.view(-1, N)
        watch = self.contention if A.device.type == "cpu" else None
        key = (route.choice.device, route.choice.dtype, route.shape_class, route.kernel)
        kernel = watch is None or watch.runs_kernel(key)
        started = watch.clock() if watch is not None else 0.0
        try:
            if kernel:
                C = route.kernel(A.reshape(-1, K), B, out=flat)
            else:
                C = torch.matmul(A.reshape(-1, K), B, out=flat)
        except BaseException:
            if watch is not None:
                watch.abandon(key, kernel)
            raise
        if watch is not None:
            watch.record(key, kernel, watch.clock() - started, prod(A.shape[:-1]) * K * N)
        if kernel:
            with self._lock:
                self._calls[route.choice.to_plan().describe()] += 1
        return out if out is not None else C.view(*batch, N)

    @staticmethod
    def _usable_out(out: Any, A: torch.Tensor, B: torch.Tensor) -> bool:
        """``out`` the kernel may write: contiguous, of the result's shape, dtype and device, apart from A and B."""
        if type(out) not in _PLAIN or out.dtype != A.dtype or out.device != A.device or out.requires_grad:
            return False
        if tuple(out.shape) != (*A.shape[:-1], B.shape[1]) or not out.is_contiguous() or _transformed(out):
            return False
        mine = out.untyped_storage().data_ptr()
        return all(t.untyped_storage().data_ptr() != mine for t in (A, B))

    def _numpy(self, A: np.ndarray, B: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        """Arrays: a kernel on the same data as tensors where one applies, else ``numpy.matmul``."""
        if (A.dtype not in _NUMPY_DTYPES or B.dtype != A.dtype or A.ndim < 2 or B.ndim != 2
                or A.shape[-1] != B.shape[0]):
            return np.matmul(A, B, out=out)
        route = self._route("cpu", A.dtype.name, prod(A.shape[:-1]), *B.shape)
        if route is None:  # decided before any copy: the fallback costs nothing more
            return np.matmul(A, B, out=out)
        tA, tB = (torch.from_numpy(np.array(x, copy=not (x.flags.c_contiguous and x.flags.writeable), order="C"))
                  for x in (A, B))
        if out is None:
            return self._run(route, tA, tB, None).numpy()
        if not (out.flags.c_contiguous and out.flags.writeable and out.dtype == A.dtype
                and out.shape == (*A.shape[:-1], B.shape[1]) and not np.may_share_memory(out, A)
                and not np.may_share_memory(out, B)):
            return np.matmul(A, B, out=out)
        self._run(route, tA, tB, torch.from_numpy(out))
        return out

    # ------------------------------------------------------------ the caches
    def _warn(self, line: str) -> None:
        with self._lock:
            if line in self._warned:
                return
            self._warned.add(line)
        self._warn_line(line)

    def _store_signature(self) -> Optional[tuple]:
        """What changes when the store is written: its path and its files' sizes and times."""
        from fmmforge.core.store import Store

        try:
            path = Store(warn=self._warn).path
        except FmmforgeError as exc:
            self._warn(f"no tuned kernels: {exc}")
            return None
        stats = []
        for p in (path, Path(f"{path}-wal")):
            try:
                st = p.stat()
                stats.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stats.append(None)
        return (str(path), *stats)

    def _invalidate_if_changed(self) -> None:
        """Drop the cached choices when the store changed (looked at once per ``recheck_s``)."""
        with self._check_lock:
            now = time.monotonic()
            if now - self._checked_at < self._recheck_s:
                return
            signature = self._store_signature()
            with self._lock:
                self._checked_at = now
                if signature != self._signature:
                    self._signature = signature
                    self._choices.clear()
                    self._generation += 1

    def _machine(self, device: str) -> str:
        with self._lock:
            found = self._machines.get(device)
        if found is None:
            from fmmforge.codegen.bench import machine_for

            found = machine_for(device)
            with self._lock:
                self._machines[device] = found
        return found

    def _choice(self, device: str, dtype: str, cls: ShapeClass) -> Optional[Choice]:
        self._invalidate_if_changed()
        try:
            machine = self._machine(device)
        except FmmforgeError as exc:
            self._warn(f"no tuned kernels on {device}: {exc}")
            return None
        key = (device, machine, dtype, cls)
        with self._lock:
            if key in self._choices:
                return self._choices[key]
            signature, generation = self._signature, self._generation
        choice: Optional[Choice] = None
        if signature is not None:
            from fmmforge.core.store import Store

            try:
                found = lookup_choice(device, machine, dtype, cls, Store(warn=self._warn), warn=self._warn)
            except FmmforgeError as exc:
                self._warn(f"no tuned kernels: {exc}")
                found = None
            if found is not None and found.speedup > 1.0 and found.plan.get("backend") == "torch":
                choice = found
        with self._lock:
            if generation == self._generation:  # not read from a store that has changed since
                self._choices[key] = choice
        return choice

    def _kernel(self, choice: Choice) -> Optional[KernelFn]:
        key = (choice.device, json.dumps(choice.plan, sort_keys=True))
        with self._lock:
            if key in self._kernels:
                return self._kernels[key]
        with self._load_lock:
            with self._lock:
                if key in self._kernels:
                    return self._kernels[key]
            kernel = self._load(choice)
            with self._lock:
                self._kernels[key] = kernel
        return kernel

    def _load(self, choice: Choice) -> Optional[KernelFn]:
        """The choice's kernel, generated (or taken from the cache) and validated; None if it cannot be."""
        from fmmforge.codegen.generate import generate
        from fmmforge.core.catalogue import resolve
        from fmmforge.core.store import Store
        from fmmforge.plugins import get_backend

        try:
            plan = choice.to_plan()
            store = Store(warn=self._warn)
            decomps = [resolve(name, store) for name in plan.algorithms]
            changed = [n for n, d, f in zip(plan.algorithms, decomps, plan.fingerprints) if d.fingerprint != f]
            if changed:
                raise FmmforgeError(f"{', '.join(changed)} no longer name the schemes that were tuned")
            return generate(plan, decomps, backend=get_backend(plan.backend), warn=self._warn).matmul
        except FmmforgeError as exc:
            self._warn(f"not using the tuned kernel for {choice.dtype} "
                       f"{'x'.join(map(str, choice.shape_class))} on {choice.device} ({exc}); "
                       "the vendor matmul is used instead; run `fmmforge tune` again")
            return None


class _FastMatmul(torch.autograd.Function):
    """A @ B through a tuned kernel, differentiable: the backward's products dispatch the same way."""

    @staticmethod
    def forward(ctx: Any, A: torch.Tensor, B: torch.Tensor, dispatch: Matmul, route: Route) -> torch.Tensor:
        ctx.save_for_backward(A, B)
        ctx.dispatch = dispatch
        return dispatch._run(route, A, B, None)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        A, B = ctx.saved_tensors
        K, N = B.shape
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = ctx.dispatch(grad, B.t())
        if ctx.needs_input_grad[1]:
            grad_b = ctx.dispatch(A.reshape(-1, K).t(), grad.reshape(-1, N))
        return grad_a, grad_b, None, None


# The one dispatcher of the process, which ``fmmforge.matmul`` is: its caches are the point of it.
matmul = Matmul()
