"""The diagnostic benchmark scripts measure what they say (no timing here: only their transformations)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.schedule import schedule_level
from fmmforge.plugins import get_backend

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _leaf_calls(mod, A, B):
    """The sequence of leaf gemms a module makes: (kind, shapes, alpha), with the gemms still run."""
    calls = []
    leaf_set, leaf_acc = mod._leaf_set, mod._leaf_acc

    def rec_set(a, b, c, alpha, *level):
        calls.append(("set", tuple(a.shape), tuple(b.shape), alpha))
        leaf_set(a, b, c, alpha)

    def rec_acc(a, b, c, alpha, *level):
        calls.append(("acc", tuple(a.shape), tuple(b.shape), alpha))
        leaf_acc(a, b, c, alpha)

    mod._leaf_set, mod._leaf_acc = rec_set, rec_acc
    out = mod.matmul(A, B)
    return calls, out


@pytest.mark.parametrize("name,levels", [("strassen-winograd", 2), ("laderman/strassen", 2), ("alphatensor:2,3,4", 1)])
def test_breakdown_removes_every_pass_and_keeps_every_leaf(name, levels):
    bd = _script("cpu_breakdown")
    plan, decomps = make_plan(name, levels, backend="torch", dtype="float64", device="cpu")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    stripped, removed = bd.strip_passes(kernel.source)
    # exactly the element-wise passes of the schedules: set and acc variants of every distinct algorithm
    # (levels with the same scheme share one function pair)
    assert removed == sum(schedule_level(d, "set").passes + schedule_level(d, "acc").passes
                          for d in dict.fromkeys(decomps))
    full = bd.load(kernel.source, "full")
    leaves = bd.load(stripped, "leaves")
    full.CUTOFF = leaves.CUTOFF = 2
    g = torch.Generator().manual_seed(0)
    M, K, N = 48, 36, 60  # divisible at every level of these plans: no peeling
    A = torch.rand(M, K, dtype=torch.float64, generator=g)
    B = torch.rand(K, N, dtype=torch.float64, generator=g)
    calls_full, C_full = _leaf_calls(full, A, B)
    calls_leaves, C_leaves = _leaf_calls(leaves, A, B)
    assert calls_full == calls_leaves and len(calls_full) > 1  # same gemms, same operand shapes, same order
    assert torch.allclose(C_full, A @ B)
    assert not torch.allclose(C_leaves, A @ B)  # the passes really are gone


def test_breakdown_bad_case_is_one_clear_line():
    bd = _script("cpu_breakdown")
    with pytest.raises(SystemExit, match="ALGO:LEVELS:N"):
        bd.parse_cases("strassen-winograd:2")


def _against(tmp_path, capsys, old_source: str) -> str:
    """Run cpu_speedup.py --against on one tiny case whose old kernel is ``old_source``."""
    sp = _script("cpu_speedup")
    sp.CASES = {"quick": [("48 strassen L1", "x", "strassen", 1, (48, 48, 48), "float64")], "full": []}
    old = tmp_path / "old" / "strassen-L1-float64"
    old.mkdir(parents=True)
    (old / "kernel.py").write_text(old_source)
    assert sp.main(["--quick", "--against", str(tmp_path / "old"), "--pairs", "3", "--wait-quiet", "0"]) == 0
    return capsys.readouterr().out


def test_cpu_speedup_against_old_kernels_prints_new_over_old(tmp_path, capsys):
    plan, decomps = make_plan("strassen", 1, backend="torch", dtype="float64")
    source = generate(plan, decomps, backend=get_backend("torch")).source
    out = _against(tmp_path, capsys, source)
    row = next(line for line in out.splitlines() if line.startswith("48 strassen L1"))
    assert float(row.split()[7]) > 0  # the new/old ratio, with its spread beside it


def test_cpu_speedup_against_refuses_a_wrong_old_kernel(tmp_path, capsys):
    plan, decomps = make_plan("strassen", 1, backend="torch", dtype="float64")
    source = generate(plan, decomps, backend=get_backend("torch")).source
    halved = source + "\n_exact = matmul\n\ndef matmul(A, B, out=None):\n    return _exact(A, B, out).mul_(0.5)\n"
    with pytest.raises(SystemExit, match="wrong at this size"):
        _against(tmp_path, capsys, halved)
