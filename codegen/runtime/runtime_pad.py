"""Padding at the top of a torch kernel (a plan with ``remainder="pad"``): a size that does not
divide is not peeled; the operands are copied into zero-bordered buffers of the next multiples
that the levels splitting there divide by, the kernel runs on those, and C's part is copied out.

Against peeling this trades three copies (A, B and C, each read once and written once) for
blocks that all start at aligned offsets and no thin fix-up gemms; which is faster at a size is
measured (the tuner, benchmarks/cpu_speedup.py). The buffers are this thread's cached workspaces
(runtime_caches: reused while the padded shape stays); they hold up to one A, one B and one C of
the padded size, which :func:`pad_bytes` counts.

Expects beside it (in the kernel): ``_multiples`` (runtime_lowmem), ``_ws`` (runtime_caches) and
``_top_unpadded`` (the layout's own ``_top``); :func:`source` writes the rebinding.
"""


def _pad_sizes(M, K, N):
    """The smallest sizes >= M, K, N that every level splitting at them divides (padding up can let
    one more level split; the sizes only grow, so this settles within the plan's levels)."""
    Mp, Kp, Np = M, K, N
    for _ in range(len(FORMATS) + 1):  # noqa: F821 - the kernel's constant
        dm, dk, dn = _multiples(Mp, Kp, Np, 0)  # noqa: F821 - runtime_lowmem, beside it
        grown = (-(-M // dm) * dm, -(-K // dk) * dk, -(-N // dn) * dn)
        if grown == (Mp, Kp, Np):
            break
        Mp, Kp, Np = grown
    return Mp, Kp, Np


def _into(key, X, rows, cols):
    """X copied into this thread's rows×cols workspace ``key``, zero outside X."""
    r, c = X.shape
    Z = _ws(("pad", key), (rows, cols), X)  # noqa: F821 - runtime_caches, beside it
    Z[:r, :c].copy_(X)
    if c < cols:
        Z[:r, c:].zero_()
    if r < rows:
        Z[r:, :].zero_()
    return Z


def _top_padded(A, B, C):
    """C = A·B by the kernel on A, B (and C) padded to the multiples the levels divide by."""
    M, K = A.shape
    N = B.shape[1]
    Mp, Kp, Np = _pad_sizes(M, K, N)
    if (Mp, Kp, Np) == (M, K, N):
        return _top_unpadded(A, B, C)  # noqa: F821 - the layout's _top, beside it
    Ap = A if (Mp, Kp) == (M, K) else _into("A", A, Mp, Kp)
    Bp = B if (Kp, Np) == (K, N) else _into("B", B, Kp, Np)
    Cp = C if (Mp, Np) == (M, N) else _ws(("pad", "C"), (Mp, Np), C)  # noqa: F821
    _top_unpadded(Ap, Bp, Cp)  # noqa: F821
    if Cp is not C:
        C.copy_(Cp[:M, :N])


def source() -> str:
    """The kernel text that makes its ``_top`` (defined before it) pad: these functions and the rebinding."""
    from fmmforge.codegen.runtime import inline

    return ("_top_unpadded = _top  # the layout's own top level; the kernel's _top pads around it\n\n\n"
            + inline(_pad_sizes, _into, _top_padded) + "\n\n_top = _top_padded\n")


def pad_sizes(M: int, K: int, N: int, formats: list, cutoff: int) -> tuple[int, int, int]:
    """:func:`_pad_sizes` for a plan of ``formats`` and ``cutoff`` (the cost model's and the memory
    check's view of what the kernel will allocate)."""
    from fmmforge.codegen.runtime import runtime_lowmem

    scope = {"FORMATS": list(formats), "CUTOFF": cutoff}
    scope["_multiples"] = _rebind(runtime_lowmem._multiples, scope)
    return _rebind(_pad_sizes, scope)(M, K, N)


def _rebind(fn, scope: dict):
    import types

    return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__)


def pad_bytes(M: int, K: int, N: int, formats: list, cutoff: int, itemsize: int) -> int:
    """Bytes of the padded buffers a call at M×K×N holds (0 when the sizes divide)."""
    Mp, Kp, Np = pad_sizes(M, K, N, formats, cutoff)
    if (Mp, Kp, Np) == (M, K, N):
        return 0
    held = (Mp * Kp if (Mp, Kp) != (M, K) else 0) + (Kp * Np if (Kp, Np) != (K, N) else 0)
    held += Mp * Np if (Mp, Np) != (M, N) else 0
    return held * itemsize
