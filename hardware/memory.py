"""Peak extra memory of one call, measured (not estimated).

CPU: the process's peak resident set (VmHWM) is reset through /proc/self/clear_refs (Linux),
the call runs, and the rise of the peak over the resident set before the call is its peak extra
memory (workspaces, temporaries and the output it allocates). For that rise to be seen, memory
freed earlier must not still be resident: glibc's malloc keeps freed heap chunks (and, after
large frees, serves blocks of up to 32 MiB from the heap), so a kernel whose blocks reuse them
showed no rise at all. ``malloc_trim(0)`` before the call hands every free heap page back to
the system, so whatever the call allocates is touched afresh and counted. CUDA: torch's peak allocated bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def release_free_heap_pages() -> bool:
    """glibc's malloc_trim(0): return free heap memory to the system; False where not glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def peak_extra_bytes(fn: Callable[[], object], device: str = "cpu") -> int | None:
    """Bytes the call needed above what the process held before it; None where it cannot be measured."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    release_free_heap_pages()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, (peak - before) * 1024)
