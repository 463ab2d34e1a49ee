"""The runtime of the emitted Python kernels, as real modules (this package, codegen/runtime/):
tests import them, and the emitters copy their functions' source into each kernel (:func:`inline`),
so a kernel stays standalone ("copy it anywhere") and imports only its backend library (and threading).

A runtime function may use names it does not define: the other runtime functions and the
constants (``DTYPE``, ``CUTOFF``, ``FORMATS``, ``LEVELS``, ...) that every emitted module defines
beside it. Each module says which. Per-backend differences are separate small functions with one
name (``_fits``, ``_allocate``, ``_leaf_set``, ...) in :mod:`.runtime_torch` and :mod:`.runtime_numpy`.

* :mod:`.runtime_caches`: per-thread caches and workspaces (every Python kernel);
* :mod:`.runtime_torch`, :mod:`.runtime_numpy`: workspace allocation, leaf gemms and ``matmul``;
* :mod:`.runtime_lowmem`: the recursion of the low-memory layout (peeling, level dispatch);
* :mod:`.runtime_batched`: the batched torch layout (stacked blocks, one bmm);
* :mod:`.runtime_fused`: the fused torch CPU layout (numba row-segment passes, one C update per level);
* :mod:`.runtime_parallel`: the parallel torch CPU layout (level 0's products on single-threaded workers);
* :mod:`.runtime_pad`, :mod:`.runtime_split`: the remainders "pad" (zero-bordered copies) and "split"
  (uneven blocks).

The modules keep their ``runtime_`` names inside the package: the kernels' inlined source names its
siblings that way (``# noqa: F821 - runtime_caches``), and a name such as ``torch`` or ``fused``
would be read as the library or as :mod:`fmmforge.codegen.fused` (the fused emitter).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def inline(*functions: Callable[..., Any]) -> str:
    """The source of ``functions``, in order, two blank lines apart: module text for a kernel."""
    return "\n\n".join(inspect.getsource(f).rstrip() + "\n" for f in functions)
