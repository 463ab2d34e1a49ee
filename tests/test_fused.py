"""The fused torch CPU variant: compiled (numba) element-wise passes, generated from U, V, W."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch

from fmmforge.codegen.runtime import runtime_fused
from fmmforge.codegen.fused import NUMBA_BLOCK_COST, fused_level, fused_workspace_fraction, traffic_bytes
from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.validate import error_bound
from fmmforge.core.catalogue import resolve
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend

# Strassen, Winograd, Laderman, a DeepMind rectangular scheme, a Kronecker product, mixed levels
SCHEMES = [("strassen", 2), ("strassen-winograd", 3), ("laderman", 1), ("alphatensor:2,3,4", 1),
           ("alphatensor:3,4,5", 1), ("strassen*naive:1,1,2", 1), ("laderman/strassen", 2)]
# divisible and not, tiny and 1-wide
SHAPES = [(16, 16, 16), (24, 36, 48), (17, 29, 23), (1, 1, 1), (1, 9, 5), (7, 1, 6), (5, 8, 1), (33, 2, 40),
          (60, 60, 60)]


def _fused(name: str, levels: int, dtype: str, cutoff: int = 1):
    plan, decomps = make_plan(name, levels, backend="torch", dtype=dtype, cutoff=cutoff, variant="fused")
    return generate(plan, decomps, backend=get_backend("torch")), decomps


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,levels", SCHEMES)
def test_fused_kernels_equal_the_reference_within_the_error_bound(name, levels, dtype):
    kernel, decomps = _fused(name, levels, dtype)
    assert kernel.validation and all(r.ok for r in kernel.validation)
    rng = np.random.default_rng(3)
    for M, K, N in SHAPES:
        A = torch.from_numpy(rng.uniform(-1, 1, (M, K))).to(getattr(torch, dtype))
        B = torch.from_numpy(rng.uniform(-1, 1, (K, N))).to(getattr(torch, dtype))
        C = kernel.matmul(A, B)
        assert C.shape == (M, N) and C.dtype == A.dtype
        err = float((C.double() - A.double() @ B.double()).abs().max())
        assert err <= error_bound(K, decomps, dtype), (M, K, N, err)


@pytest.mark.parametrize("name,levels", SCHEMES)
def test_fused_kernels_with_either_sums_pass_equal_the_reference(name, levels):
    # each group's sums by the pass the emitter chose (SUMS_PASS = "auto"), or all forced into the
    # compiled pass or torch's: the same product within the bound, on every shape
    kernel, decomps = _fused(name, levels, "float64")
    mod = kernel.module()
    assert mod.SUMS_PASS == "auto"
    rng = np.random.default_rng(5)
    try:
        for M, K, N in SHAPES:
            A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
            B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
            exact = A @ B
            for how in ("auto", "torch", "numba"):
                mod.SUMS_PASS = how
                C = mod.matmul(A, B)
                assert float((C - exact).abs().max()) <= error_bound(K, decomps, "float64"), (M, K, N, how)
    finally:
        mod.SUMS_PASS = "auto"


def test_each_group_takes_the_sums_pass_that_moves_less():
    # Strassen-Winograd's 2x2 sums (two terms) stay torch passes; a <4,4,4;49> level's (four terms
    # over a few blocks) take the compiled pass; the emitted tables say which, and the choice is
    # the block count rule of Group.sums_pass
    def choices(name):
        lv = fused_level(resolve(name), "set")
        for g in lv.groups:
            for side in "AB":
                if g.a_sums if side == "A" else g.b_sums:
                    how = g.sums_pass(side)
                    assert (how == "numba") == (g.moved(side) * NUMBA_BLOCK_COST < g.torch_moved(side))
                    yield how

    assert set(choices("strassen-winograd")) == {"torch"}
    assert set(choices("strassen-winograd*strassen-winograd")) == {"numba"}
    assert list(choices("strassen*strassen")).count("numba") >= 12  # of 14 (one group of short sums stays torch)
    source = _fused("strassen*strassen", 1, "float32")[0].source
    assert "'numba')  # " in source and "one compiled pass" in source
    assert "'numba')" not in _fused("strassen-winograd", 1, "float32")[0].source


def test_fused_kernel_takes_strided_inputs_and_outputs():
    kernel, _ = _fused("strassen-winograd", 2, "float64")
    rng = np.random.default_rng(4)
    A = torch.from_numpy(rng.uniform(-1, 1, (20, 24))).t()  # 24×20, columns contiguous
    B = torch.from_numpy(rng.uniform(-1, 1, (20, 40)))[:, ::2]  # 20×20, stride 2
    big = torch.zeros(24, 44, dtype=torch.float64)
    C = big[:, 2:22]  # rows 44 apart: the kernel writes only C's elements
    kernel.matmul(A, B, out=C)
    np.testing.assert_allclose(C.numpy(), A.numpy() @ B.numpy(), atol=1e-12)
    assert big[:, :2].abs().max() == 0 and big[:, 22:].abs().max() == 0


def test_thread_counts_are_restored_after_a_fused_kernel_returns():
    kernel, _ = _fused("strassen", 1, "float32", cutoff=2)
    A, B = torch.rand(32, 32), torch.rand(32, 32)
    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        kernel.matmul(A, B)
        assert numba.get_num_threads() == 1
        assert torch.get_num_threads() == torch_before
    finally:
        numba.set_num_threads(numba_before)


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_numba_pool_starts_sleeping_and_the_environment_is_left_as_it_was(tmp_path, policy):
    # a fresh interpreter, so that the kernel is the one to start numba's pool
    kernel, _ = _fused("strassen", 1, "float32", cutoff=2)
    path = tmp_path / "kernel.py"
    path.write_text(kernel.source, encoding="utf-8")
    script = ("import os, runpy, torch\n"
              "from numba.np.ufunc import parallel\n"
              f"mod = runpy.run_path({str(path)!r})\n"
              "mod['matmul'](torch.rand(8, 8), torch.rand(8, 8))\n"
              "print(os.environ.get('OMP_WAIT_POLICY'), parallel._is_initialized)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy  # a user's own setting is never overridden
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(policy), "True"]


def test_winograd_level_reads_each_block_for_few_passes_and_homes_its_products():
    # set: the products with several outputs are computed straight into C (no P workspace); one
    # combine pass; the one-output products go through addmm with beta 1
    d = make_plan("strassen-winograd", 1)[1][0]
    lv = fused_level(d, "set")
    assert len(lv.phases) == 1
    assert lv.p_slots == 0 and len(lv.phases[0].homes) == 4
    assert sum(c is not None for c in lv.phases[0].combine) >= 1
    assert all(g.mode == "acc" for group in lv.after for g in group.gemms)
    assert lv.passes() <= 7  # 3 groups × 2 sum passes + 1 combine, against 15 one-block passes of lowmem


@pytest.mark.parametrize("name,levels", [("strassen-winograd", 3), ("strassen", 2), ("laderman", 2),
                                         ("strassen*strassen", 1), ("strassen-winograd*strassen-winograd", 1),
                                         ("alphatensor:4,4,4", 1), ("alphatensor:3,4,5", 2)])
def test_fused_workspace_stays_within_twice_c(name, levels):
    decomps = make_plan(name, levels, variant="fused")[1]
    assert fused_workspace_fraction(decomps) <= 2.0


def test_a_level_with_more_waiting_products_than_p_holds_updates_c_in_phases():
    # Strassen⊗Strassen as one <4,4,4> level: 29 products with several outputs find no home in
    # the set function; P holds 8 (half a C), so they wait in 4 phases, each with its own C
    # update (the later ones accumulate); the acc function holds 16 (one C) in 3 phases
    from fmmforge.codegen.fused import product_budget

    d = make_plan("strassen*strassen", 1)[1][0]
    lv = fused_level(d, "set")
    assert product_budget(4, 4, "set") == lv.p_slots == 8
    assert len(lv.phases) == 4 and [ph.accumulate for ph in lv.phases] == [False, True, True, True]
    assert lv.phases[0].homes and not any(ph.homes for ph in lv.phases[1:])
    acc = fused_level(d, "acc")
    assert acc.p_slots == 16 and len(acc.phases) == 3 and all(ph.accumulate for ph in acc.phases)
    # every product with several outputs reaches each of its C blocks exactly once, with its
    # coefficient, over the phases (read from the slot or the home block its gemm wrote)
    from fractions import Fraction

    U, V, W = d.factors()
    several = {r for r in range(d.rank) if (W[:, r] != 0).sum() > 1}
    for level in (lv, acc):
        got = []
        for ph in level.phases:
            held = {gm.dst: gm.term for g in ph.groups for gm in g.gemms if gm.mode == "set"}
            for c, terms in enumerate(ph.combine):
                got += [(held[src], c, w) for src, w in terms or () if held.get(src) in several]
        assert sorted(got) == sorted((r, c, Fraction(W[c, r])) for r in several for c in range(16) if W[c, r] != 0)
    kernel, decomps = _fused("strassen*strassen", 1, "float64")
    rng = np.random.default_rng(7)
    for M, K, N in ((16, 16, 16), (20, 36, 44), (33, 17, 9)):
        A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
        B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
        err = float((kernel.matmul(A, B) - A @ B).abs().max())
        assert err <= error_bound(K, decomps, "float64"), (M, K, N, err)


@pytest.mark.parametrize("name,levels,shape", [("strassen-winograd", 1, (64, 1024, 32)),
                                               ("strassen-winograd", 2, (64, 512, 64)),
                                               ("laderman", 1, (27, 729, 27)),
                                               ("strassen*strassen", 1, (64, 640, 64))])
def test_a_long_k_runs_in_strips_so_the_workspaces_stay_within_twice_c(name, levels, shape):
    # K much longer than M and N: every sum of A's (or B's) blocks is larger than C; held whole,
    # the workspaces would be several C; the kernel runs the call in strips of K instead
    kernel, decomps = _fused(name, levels, "float64", cutoff=4)
    mod = kernel.module()
    M, K, N = shape
    assert mod._workspace(M, K, N, False) > 2 * M * N  # it would not fit whole
    width = mod._k_width(M, K, N)
    assert width < K and mod._workspace(M, width, N, True) <= 2 * M * N
    rng = np.random.default_rng(11)
    A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
    B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
    mod.clear_workspaces()
    C = mod.matmul(A, B)
    assert float((C - A @ B).abs().max()) <= error_bound(K, decomps, "float64")
    assert mod.workspace_bytes() <= 2 * M * N * 8  # what it held after the call
    # a square call of the same kernel is not cut
    assert mod._k_width(64, 64, 64) == 64


def test_strips_of_an_uneven_k_still_give_the_product():
    kernel, decomps = _fused("strassen-winograd", 1, "float64", cutoff=4)
    mod = kernel.module()
    rng = np.random.default_rng(12)
    M, K, N = 16, 1001, 16
    A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
    B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
    assert mod._k_width(M, K, N) < K
    out = torch.full((M, N), 5.0, dtype=torch.float64)
    mod.matmul(A, B, out=out)  # the first strip sets C: nothing of out's old values stays
    assert float((out - A @ B).abs().max()) <= error_bound(K, decomps, "float64")
    # every call runs the rule: for a K of a million (odd), a few dozen checks find the fewest strips
    workspace, calls = mod._workspace, []
    mod._workspace = lambda *a: calls.append(a) or workspace(*a)
    try:
        K = 1_000_001
        width = mod._k_width(M, K, N)
    finally:
        mod._workspace = workspace
    assert len(calls) <= 48
    assert workspace(M, width, N, True) <= 2 * M * N < workspace(M, width + 2 * 4, N, True)


def test_fused_workspace_reported_matches_what_the_kernel_holds():
    kernel, decomps = _fused("strassen-winograd", 2, "float32", cutoff=4)
    mod = kernel.module()
    mod.clear_workspaces()
    n = 64
    mod.matmul(torch.rand(n, n), torch.rand(n, n))
    held = mod.workspace_bytes()
    assert held == pytest.approx(kernel.facts["workspace_fraction_square"] * n * n * 4, rel=1e-9)


def test_traffic_model_counts_winograds_sums_and_products():
    # Winograd, one level at 2×2 blocks of b×b: A side 4 blocks read + 4 sums written, B the same,
    # 4 products with several outputs read, the 4 C blocks written: 24 block passes
    d = make_plan("strassen-winograd", 1)[1]
    assert traffic_bytes(d, (8, 8, 8), 4, 1) == 24 * 16 * 4
    assert traffic_bytes(d, (8, 8, 8), 4, 8) == 0  # below the cut-off nothing splits


def test_compiled_sums_pass_forms_every_sum_of_the_blocks():
    sums, _ = runtime_fused._compile()
    A = torch.arange(64.0).reshape(8, 8)
    flat, ld = runtime_fused._flat(A)
    out = np.full((3, 4, 4), 7.0, dtype=np.float32)
    # slot 2 = A11 - A22, slot 0 = A12 + 0.5·A21; slot 1 is not written
    sums(flat, ld, 4, 4, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([2, 0]), np.array([0, 2, 4]),
         np.array([0, 3, 1, 2]), np.array([1.0, -1.0, 1.0, 0.5], np.float32), out)
    blocks = [A[i * 4:(i + 1) * 4, j * 4:(j + 1) * 4].numpy() for i in range(2) for j in range(2)]
    np.testing.assert_array_equal(out[2], blocks[0] - blocks[3])
    np.testing.assert_array_equal(out[0], blocks[1] + 0.5 * blocks[2])
    np.testing.assert_array_equal(out[1], np.full((4, 4), 7.0))


def test_compiled_sums_pass_reads_slots_as_they_are_then():
    # a sum may read a slot written earlier in the same pass (its new value) or extend its own slot
    # in place (read as the first term): the pass runs tile by tile, so every tile sees that order
    sums, _ = runtime_fused._compile()
    A = torch.rand(6, 2 * runtime_fused.TILE + 6, dtype=torch.float64)
    flat, ld = runtime_fused._flat(A)
    cols = A.shape[1] // 2
    X = [A[:3, :cols].numpy(), A[:3, cols:].numpy(), A[3:, :cols].numpy(), A[3:, cols:].numpy()]
    old = np.random.default_rng(0).random((2, 3, cols))
    out = old.copy()
    # slot 0 = X1 + X2 (was old0); slot 1 = 2·slot1 (old) - X3; slot 0 = slot0 (new) - slot1 (new) + X0
    sums(flat, ld, 3, cols, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 1, 0]),
         np.array([0, 2, 4, 7]), np.array([1, 2, 5, 3, 4, 5, 0]), np.array([1.0, 1.0, 2.0, -1.0, 1.0, -1.0, 1.0]), out)
    s0 = X[1] + X[2]
    s1 = 2 * old[1] - X[3]
    np.testing.assert_allclose(out[1], s1, rtol=1e-15)
    np.testing.assert_allclose(out[0], s0 - s1 + X[0], rtol=1e-14)


def _replay(lv, side: str, n_blocks: int) -> None:
    """Replays the slot plan of ``lv``'s side symbolically: every product's side is the sum it needs."""
    from fractions import Fraction

    d_of = {}  # slot -> {block: coefficient}
    for g in lv.groups:
        formed = g.a_sums if side == "A" else g.b_sums
        for f in formed:
            value: dict = {}
            for (kind, i), c in f.terms:
                for j, v in ({i: Fraction(1)} if kind == "X" else d_of[i]).items():
                    value[j] = value.get(j, 0) + c * v
            d_of[f.slot] = {j: v for j, v in value.items() if v != 0}
            assert all(i < n_blocks for (kind, i), _ in f.terms if kind == "X")
        for gm in g.gemms:
            s = gm.a if side == "A" else gm.b
            if s.slot is not None:
                yield gm.term, d_of[s.slot]


@pytest.mark.parametrize("name", ["strassen-winograd", "strassen", "laderman", "strassen*strassen",
                                  "alphatensor:3,4,5", "alphatensor:4,4,4", "strassen-winograd*strassen"])
@pytest.mark.parametrize("mode", ["set", "acc"])
def test_slot_plan_gives_every_product_its_sum(name, mode):
    from fmmforge.codegen.fused import _column, _normalised

    from fmmforge.core.catalogue import resolve

    d = resolve(name)
    n, m, p = d.format
    U, V, W = d.factors()
    lv = fused_level(d, mode)
    for side, mat, blocks in (("A", U, n * m), ("B", V, m * p)):
        seen = set()
        for r, value in _replay(lv, side, blocks):
            assert tuple(sorted(value.items())) == _normalised(_column(mat, r))[0]
            seen.add(r)
        assert seen == {r for r in range(d.rank) if len(_column(mat, r)) > 1 and _column(W, r)}


def test_winograd_sums_are_chained_inside_a_pass_and_kept_across_groups():
    # set: S1 = A21 + A22 and S2 = A11 - S1 in one pass (5 blocks moved), S3 in its own pass
    # (3), S4 = A12 - S2 from the slot S2 still holds after the combine (3): 11 block passes per
    # side, against 13 when every group formed its sums from the blocks
    lv = fused_level(make_plan("strassen-winograd", 1)[1][0], "set")
    assert [g.moved("A") for g in lv.groups] == [5, 3, 3]
    assert [g.moved("B") for g in lv.groups] == [5, 3, 3]
    assert lv.slots("A") == lv.slots("B") == 2


def test_fused_variant_is_refused_off_the_cpu_and_for_numpy():
    with pytest.raises(FmmforgeError, match="cpu only"):
        make_plan("strassen", 1, variant="fused", device="cuda")
    with pytest.raises(FmmforgeError, match="only for backend torch"):
        make_plan("strassen", 1, variant="fused", backend="numpy")
