"""Padding instead of peeling (plan remainder "pad", codegen.runtime.runtime_pad): the same products as
the reference at sizes that divide and that do not, in the low-memory and fused layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmmforge.codegen import costmodel as cm
from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan, plan_from_dict
from fmmforge.codegen.runtime.runtime_pad import pad_bytes, pad_sizes
from fmmforge.codegen.validate import error_bound
from fmmforge.codegen.tune.candidates import layouts
from fmmforge.core.catalogue import resolve
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend
from tests.helpers import one_error, wrong_products_from_threads
from tests.test_fused import SCHEMES, SHAPES


def _kernel(name: str, levels: int, variant: str, dtype: str = "float64", cutoff: int = 1):
    plan, decomps = make_plan(name, levels, dtype=dtype, cutoff=cutoff, variant=variant, remainder="pad")
    return generate(plan, decomps, backend=get_backend("torch")), decomps, plan


@pytest.mark.parametrize("variant", ["lowmem", "fused"])
@pytest.mark.parametrize("name,levels", SCHEMES)
def test_padded_kernels_equal_the_reference_within_the_error_bound(name, levels, variant):
    kernel, decomps, plan = _kernel(name, levels, variant)
    assert kernel.validation and all(r.ok for r in kernel.validation)
    rng = np.random.default_rng(5)
    formats = [d.format for d in decomps]
    for M, K, N in SHAPES:
        A = torch.from_numpy(rng.uniform(-1, 1, (M, K)))
        B = torch.from_numpy(rng.uniform(-1, 1, (K, N)))
        C = kernel.matmul(A, B)
        assert C.shape == (M, N)
        err = float((C - A @ B).abs().max())
        Kp = pad_sizes(M, K, N, formats, plan.cutoff)[1]
        assert err <= error_bound(Kp, decomps, "float64"), (M, K, N, err)


def test_pad_sizes_are_the_next_multiples_of_the_levels_that_split():
    w = [resolve("strassen-winograd").format] * 2
    assert pad_sizes(4095, 4095, 4095, w, 64) == (4096, 4096, 4096)
    assert pad_sizes(4096, 4096, 4096, w, 64) == (4096, 4096, 4096)
    assert pad_sizes(4095, 4095, 100, w, 64) == (4095, 4095, 100)  # N too small for any level: nothing splits
    assert pad_sizes(4095, 4095, 200, w, 64) == (4096, 4096, 200)  # one level splits there: multiples of 2
    assert pad_sizes(255, 255, 255, w, 64) == (256, 256, 256)  # padding lets the second level split
    assert pad_sizes(4095, 4095, 4095, [(3, 3, 3)], 64) == (4095, 4095, 4095)  # 3 divides 4095
    assert pad_bytes(4095, 4095, 4095, w, 64, 4) == 3 * 4096 * 4096 * 4
    assert pad_bytes(4096, 4095, 4096, w, 64, 4) == 2 * 4096 * 4096 * 4  # only A and B grow


def test_a_padded_kernel_writes_only_cs_elements_and_keeps_its_buffers_per_thread():
    kernel, _, _ = _kernel("strassen-winograd", 2, "lowmem")
    rng = np.random.default_rng(6)
    big = torch.zeros(30, 40, dtype=torch.float64)
    A = torch.from_numpy(rng.uniform(-1, 1, (29, 31)))
    B = torch.from_numpy(rng.uniform(-1, 1, (31, 35)))
    kernel.matmul(A, B, out=big[:29, 2:37])
    np.testing.assert_allclose(big[:29, 2:37].numpy(), (A @ B).numpy(), atol=1e-12)
    assert big[29:].abs().max() == 0 and big[:, :2].abs().max() == 0 and big[:, 37:].abs().max() == 0
    assert wrong_products_from_threads(kernel.matmul) == []


def test_the_plan_keeps_its_key_when_peeling_and_names_padding():
    peel, _ = make_plan("strassen", 1)
    pad, _ = make_plan("strassen", 1, remainder="pad")
    assert "remainder" not in peel.as_dict() and pad.as_dict()["remainder"] == "pad"
    assert peel.key() != pad.key() and plan_from_dict(pad.as_dict()) == pad
    assert "padded" in pad.describe() and "padded" not in peel.describe()
    split, _ = make_plan("strassen", 1, remainder="split")
    assert split.as_dict()["remainder"] == "split" and plan_from_dict(split.as_dict()) == split
    assert "uneven blocks" in split.describe() and split.key() not in (peel.key(), pad.key())
    for kwargs, words in (({"remainder": "trim"}, ["trim", "peel"]), ({"remainder": "pad", "variant": "batched"},
                                                                      ["pad", "batched"]),
                          ({"remainder": "pad", "backend": "numpy"}, ["pad", "numpy"]),
                          ({"remainder": "split", "variant": "fused"}, ["split", "fused"]),
                          ({"remainder": "split", "variant": "parallel"}, ["split", "parallel"]),
                          ({"remainder": "split", "backend": "numpy"}, ["split", "numpy"])):
        with pytest.raises(FmmforgeError) as exc:
            make_plan("strassen", 1, **kwargs)
        assert all(w in str(exc.value) for w in words)


def test_the_cost_model_pads_and_splits_as_the_kernel_does():
    d = resolve("strassen-winograd")
    table = cm.GemmTable({(1, 1, 1): 1e-9})
    padded = cm.features([d, d], 64, (4095,) * 3, "float32", table, remainder="pad")
    at_4096 = cm.features([d, d], 64, (4096,) * 3, "float32", table)
    copies = (4095 * 4095 + 4096 * 4096) * 2 + 2 * 4095 * 4095
    assert padded.gemm_s == pytest.approx(at_4096.gemm_s)  # the leaves of the padded size, no fix-ups
    assert padded.streamed_bytes == at_4096.streamed_bytes + copies * 4
    assert padded.passes == at_4096.passes + 3
    assert cm.leaf_shapes([d, d], 64, (4095,) * 3, remainder="pad") == {(1024, 1024, 1024)}
    # uneven blocks (codegen.runtime.runtime_split): the rounded-up blocks, neither copies nor fix-ups
    split = cm.features([d, d], 64, (4095,) * 3, "float32", table, remainder="split")
    assert split.gemm_s == pytest.approx(at_4096.gemm_s)
    assert split.passes == at_4096.passes and split.streamed_bytes == at_4096.streamed_bytes
    assert cm.leaf_shapes([d, d], 64, (4095,) * 3, remainder="split") == {(1024, 1024, 1024)}


def test_the_tuner_pads_only_where_the_shape_does_not_divide():
    d = resolve("strassen-winograd")
    assert layouts([d, d], (4096,) * 3, ("lowmem",)) == [("lowmem", "peel")]
    assert layouts([d, d], (4095,) * 3, ("lowmem", "fused")) == [
        ("lowmem", "peel"), ("lowmem", "pad"), ("lowmem", "split"), ("fused", "peel")]
    assert layouts([d], (4095,) * 3, ("lowmem",), spec=True) == [("lowmem", "peel")]
    # the layouts bounded by 2×C of workspace are never offered padded (the copies add up to 3×C)
    assert layouts([d, d], (4095,) * 3, ("fused", "parallel")) == [("fused", "peel"), ("parallel", "peel")]


@pytest.mark.parametrize("args, words", [
    (["codegen", "strassen", "--remainder", "trim"], ["trim"]),
    (["codegen", "strassen", "--remainder", "pad", "--backend", "numpy"], ["pad", "numpy"]),
    (["bench", "--algos", "strassen", "--sizes", "64", "--remainder", "pad", "--variant", "batched"], ["pad"]),
])
def test_bad_remainder_options_are_one_line_and_exit_2(cli, args, words):
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    one_error(err, *words)
