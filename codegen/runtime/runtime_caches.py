"""Per-thread caches of every Python kernel: threads calling ``matmul`` at once never share a
workspace, and a thread's workspaces are freed when it ends.

Expects beside it (in the kernel): ``_LOCAL = threading.local()`` (defined here for import), and
the backend's ``_fits(t, shape, like)`` and ``_allocate(shape, like)``.
"""

import threading

_LOCAL = threading.local()


def _cache(name):
    """This thread's cache ``name``: a dict, created on first use."""
    found = getattr(_LOCAL, name, None)
    if found is None:
        found = {}
        setattr(_LOCAL, name, found)
    return found


def clear_workspaces():
    """Free this thread's cached workspaces (and coefficient tensors, where the kernel has them)."""
    _cache("workspaces").clear()
    _cache("coefficients").clear()


def workspace_bytes():
    """Bytes held by this thread's cached workspaces (and coefficient tensors)."""
    held = list(_cache("workspaces").values())
    held += [t for ts in _cache("coefficients").values() for t in ts]
    return sum(t.nbytes for t in held)


def _ws(key, shape, like):
    """This thread's workspace ``key`` of ``shape`` (dtype and device of ``like``), reallocated only
    when the shape, dtype or device changes."""
    ws = _cache("workspaces")
    t = ws.get(key)
    if t is None or not _fits(t, shape, like):  # noqa: F821 - the backend's, beside it in the kernel
        ws.pop(key, None)  # free the old buffer before allocating (peak memory)
        t = _allocate(shape, like)  # noqa: F821
        ws[key] = t
    return t
