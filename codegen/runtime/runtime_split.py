"""Uneven blocks (a plan with ``remainder="split"``; torch, low-memory layout): a size that does
not divide is neither peeled nor padded. Each level cuts a dimension of size M into blocks of
⌈M/n⌉ with the last ones shorter (torch's slices clamp at the end) and treats every block as if it
were zero-bordered to the full block size, without writing the border anywhere:

* a sum of blocks is formed on the region all its terms cover in one torch pass, and the thin
  strips outside it (a row or column where one block is shorter) term by term; in a "set" the
  part of the destination no term covers is zeroed;
* a product contracts over the inner size both operands have (the rest of the longer one would
  meet zeros) and writes the rows and columns its destination and its operands share; in a
  "set" the rest of the destination is zeroed.

So no copy of A, B or C is made (padding's three copies) and no thin fix-up gemm runs (peeling's
three), and every leaf keeps the block sizes of the next size up that divides, where MKL runs at
its best (a 1023³ gemm ran ~5 % slower than a 1024³ one on the project's Intel Xeon). The
workspaces are the ⌈⌉ block sizes. Exact: the sums and products of zero-bordered blocks are the
zero-bordered sums and products, and the border of C is never written.

Expects beside it (in the kernel): torch. Written for :mod:`fmmforge.codegen.emit_python`'s torch
dialect, whose ``add2``/``axpy``/``scale``/products call these two functions in a split plan.
"""

import torch


def _same(x, y):
    return x is y or (x.data_ptr() == y.data_ptr() and x.shape == y.shape and x.stride() == y.stride())


def _xcomb(dst, acc, *terms):
    """dst (+)= Σ c·x over ``terms`` ((c, x) pairs), each x a zero-bordered block: ``acc``
    accumulates, else dst is set (and zero where no term reaches). A term may be dst itself."""
    R, W = dst.shape
    r = min([R] + [x.shape[0] for _, x in terms])
    w = min([W] + [x.shape[1] for _, x in terms])
    core = dst[:r, :w]
    (c0, x0), rest = terms[0], terms[1:]
    if acc:
        for c, x in terms:
            core.add_(x[:r, :w], alpha=c)
    elif not rest:
        if c0 == 1.0:
            if not _same(x0, dst):
                core.copy_(x0[:r, :w])
        else:
            torch.mul(x0[:r, :w], c0, out=core)
    else:
        (c1, x1), more = rest[0], rest[1:]
        if c0 == 1.0:
            torch.add(x0[:r, :w], x1[:r, :w], alpha=c1, out=core)
        else:
            torch.mul(x0[:r, :w], c0, out=core).add_(x1[:r, :w], alpha=c1)
        for c, x in more:
            core.add_(x[:r, :w], alpha=c)
    if r == R and w == W:
        return dst
    for rows, cols in ((slice(r, None), slice(None)), (slice(None, r), slice(w, None))):
        strip = dst[rows, cols]
        if strip.numel() == 0:
            continue
        if not acc:  # the strip's old values count only where dst is one of the terms
            own = sum((c for c, x in terms if _same(x, dst)), 0.0)
            strip.mul_(own) if own else strip.zero_()
        for c, x in terms:
            if acc or not _same(x, dst):
                part = x[rows, cols]
                h, k = min(part.shape[0], strip.shape[0]), min(part.shape[1], strip.shape[1])
                if h and k:
                    strip[:h, :k].add_(part[:h, :k], alpha=c)
    return dst


def _xprod(sub, a, b, dst, alpha, level, set_):
    """dst (+)= alpha·a·b by ``sub`` (the next level or the leaf) for zero-bordered blocks a, b:
    over the inner size both have, into the rows and columns dst, a and b share; in a set the
    rest of dst is zeroed."""
    r, k, w = min(a.shape[0], dst.shape[0]), min(a.shape[1], b.shape[0]), min(b.shape[1], dst.shape[1])
    if set_:
        dst[r:, :].zero_()
        dst[:r, w:].zero_()
    if r and w:
        if k:
            sub(a[:r, :k], b[:k, :w], dst[:r, :w], alpha, level)
        elif set_:
            dst[:r, :w].zero_()


def source() -> str:
    """The kernel text of the helpers."""
    from fmmforge.codegen.runtime import inline

    return inline(_same, _xcomb, _xprod)
