"""Uneven blocks instead of peeling or padding (plan remainder "split", codegen.runtime.runtime_split):
the same products as the reference at sizes that divide and that do not, tiny and 1-wide; the
schedule never lets a smaller C block hold a product for a larger one; the helpers' strips; the
tuner offers the strategy; bad options are one line (the plan's and the cost model's view of it:
tests/test_pad.py, beside padding's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.runtime.runtime_split import _xcomb, _xprod
from fmmforge.codegen.schedule import Axpy, Product, Scale, schedule_level
from fmmforge.codegen.validate import error_bound
from fmmforge.codegen.tune.candidates import layouts
from fmmforge.core.catalogue import resolve
from fmmforge.plugins import get_backend
from tests.helpers import one_error, wrong_products_from_threads
from tests.test_benchmark_scripts import _script
from tests.test_fused import SCHEMES, SHAPES

# beyond SHAPES: every dimension odd, one block row/column much shorter, 3-way splits with a short last block
ODD = [(9, 10, 11), (50, 31, 7), (13, 13, 13), (4, 4, 4), (5, 7, 29)]


def _kernel(name: str, levels: int, dtype: str = "float64", cutoff: int = 1):
    plan, decomps = make_plan(name, levels, dtype=dtype, cutoff=cutoff, remainder="split")
    return generate(plan, decomps, backend=get_backend("torch")), decomps, plan


@pytest.mark.parametrize("name,levels", SCHEMES)
def test_split_kernels_equal_the_reference_within_the_error_bound(name, levels):
    kernel, decomps, _ = _kernel(name, levels)
    assert kernel.validation and all(r.ok for r in kernel.validation)
    rng = np.random.default_rng(7)
    for M, K, N in SHAPES + ODD:
        A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
        B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
        C = kernel.matmul(A, B)
        assert C.shape == (M, N)
        err = float((C - A @ B).abs().max()) if C.numel() else 0.0
        assert err <= error_bound(max(K, 1), decomps, "float64"), (M, K, N, err)


def test_a_split_float32_kernel_above_the_cutoff_and_into_a_view_of_out():
    kernel, decomps, _ = _kernel("strassen-winograd", 2, "float32", cutoff=8)
    rng = np.random.default_rng(8)
    A = torch.from_numpy(rng.uniform(-1, 1, (67, 45)).astype(np.float32))
    B = torch.from_numpy(rng.uniform(-1, 1, (45, 71)).astype(np.float32))
    big = torch.zeros(70, 75)
    kernel.matmul(A, B, out=big[:67, 3:74])
    ref = A.double() @ B.double()
    assert float((big[:67, 3:74].double() - ref).abs().max()) <= error_bound(45, decomps, "float32")
    assert big[67:].abs().max() == 0 and big[:, :3].abs().max() == 0 and big[:, 74:].abs().max() == 0


def test_split_kernels_are_safe_from_four_threads_at_once():
    kernel, _, _ = _kernel("strassen", 2)
    assert wrong_products_from_threads(kernel.matmul, calls=6, low=3) == []


@pytest.mark.parametrize("name", ["strassen", "strassen-winograd", "laderman", "alphatensor:2,3,4",
                                  "alphatensor:3,4,5"])
@pytest.mark.parametrize("mode", ["set", "acc"])
def test_a_c_block_holds_a_product_only_for_blocks_no_larger_than_itself(name, mode):
    d = resolve(name)
    n, _, p = d.format
    ops = schedule_level(d, mode, split=True).ops
    holder: dict[int, int] = {}  # C block -> the product it holds (set by a product into it)
    for op in ops:
        if isinstance(op, Product) and op.dst.kind == "C":
            holder[op.dst.index] = op.term
        elif isinstance(op, (Axpy, Scale)) and op.x.kind == "C" and op.x.index != op.dst.index:
            (i0, j0), (i, j) = divmod(op.x.index, p), divmod(op.dst.index, p)
            assert i0 <= i and j0 <= j, (op, holder.get(op.x.index))
    # with even blocks the ordinary schedule may use any empty block; the split one is never worse by much
    assert schedule_level(d, mode, split=True).passes <= schedule_level(d, mode).passes + n * p


def test_the_combination_helper_covers_strips_larger_terms_and_itself():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 4, generator=g, dtype=torch.float64)  # shorter in both
    y = torch.rand(6, 3, generator=g, dtype=torch.float64)  # as tall as dst, narrower
    dst = torch.full((6, 5), 7.0, dtype=torch.float64)

    def pad(t):
        z = torch.zeros(6, 5, dtype=torch.float64)
        z[:t.shape[0], :t.shape[1]] = t[:6, :5]
        return z

    _xcomb(dst, False, (1.0, x), (-2.0, y))
    assert torch.equal(dst, pad(x) - 2 * pad(y))
    before = dst.clone()
    big = torch.rand(8, 9, generator=g, dtype=torch.float64)  # larger than dst: only its overlap counts
    _xcomb(dst, True, (0.5, big))
    assert torch.allclose(dst, before + 0.5 * big[:6, :5])
    before = dst.clone()
    _xcomb(dst, False, (1.0, dst), (3.0, x))  # dst = dst + 3x: its own strips keep their values
    assert torch.allclose(dst, before + 3 * pad(x))
    _xcomb(dst, False, (-1.0, dst))
    assert torch.allclose(dst, -(before + 3 * pad(x)))
    out = torch.full((6, 5), 9.0, dtype=torch.float64)
    calls = []
    _xprod(lambda a, b, c, alpha, level: calls.append((a.shape, b.shape, c.shape)) or torch.mm(a, b, out=c).mul_(alpha),
           x, torch.rand(3, 7, generator=g, dtype=torch.float64), out, 2.0, 1, True)
    assert calls == [((5, 3), (3, 5), (5, 5))]  # the inner size both have, the rows and columns out has
    assert out[5:].abs().max() == 0 and out[:, 5:].numel() == 0


def test_the_tuner_offers_uneven_blocks_only_in_the_low_memory_layout():
    d = resolve("strassen-winograd")
    assert layouts([d, d], (4095,) * 3, ("lowmem", "fused")) == [
        ("lowmem", "peel"), ("lowmem", "pad"), ("lowmem", "split"), ("fused", "peel")]


def test_the_leaves_only_kernel_of_a_split_plan_keeps_its_products():
    kernel, _, _ = _kernel("strassen-winograd", 1, "float32", cutoff=64)
    stripped, removed = _script("cpu_breakdown").strip_passes(kernel.source)
    assert removed > 0 and "_xprod(sub_set" in stripped and "pass  # removed: _xcomb(" in stripped


@pytest.mark.parametrize("args, words", [
    (["codegen", "strassen", "--remainder", "split", "--variant", "fused"], ["split", "fused"]),
    (["codegen", "strassen", "--remainder", "split", "--backend", "numpy"], ["split", "numpy"]),
])
def test_bad_split_options_are_one_line_and_exit_2(cli, args, words):
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    one_error(err, *words)
