"""benchmarks/cpu_breakdown.py --variant: the phase clocks see every pass and leaf, and leave C = A·B exact."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fmmforge.codegen.generate import generate
from fmmforge.codegen.plan import make_plan
from fmmforge.plugins import get_backend

ROOT = Path(__file__).resolve().parents[1]


def _breakdown():
    spec = importlib.util.spec_from_file_location("bench_cpu_breakdown_phases", ROOT / "benchmarks" / "cpu_breakdown.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("call,phase", [
    ("torch.add(A21, A22, out=S)", "A"), ("S.sub_(A11)", "A"), ("torch.sub(B12, B22, out=T)", "B"),
    ("T.add_(B22)", "B"), ("C12.add_(C21)", "C"), ("C22.copy_(C12)", "C"), ("torch.mul(P, 2.0, out=C11)", "C"),
    ("_fused_sums(A, bm, bk, S, _X_G0_A)", "A"), ("_fused_sums(B, bk, bn, T, _X_G0_B)", "B"),
    ("_fused_combine(C, bm, bn, P, _X_C, True)", "C")])
def test_each_pass_line_is_put_in_its_phase(call, phase):
    assert _breakdown()._pass_phase(call) == phase


@pytest.mark.parametrize("variant", ["lowmem", "fused", "fused-serial"])
def test_instrumented_kernel_stays_exact_and_clocks_every_phase(variant):
    bd = _breakdown()
    base_variant = variant.split("-")[0]
    plan, decomps = make_plan("strassen-winograd", 2, backend="torch", dtype="float64", device="cpu",
                              variant=base_variant)
    source = generate(plan, decomps, backend=get_backend("torch")).source
    mod, spent = bd.instrument(source, "phases_test")
    if variant == "fused-serial":
        mod._passes = bd.serial_passes
    mod.CUTOFF = 2
    leaves = []
    leaf = mod._leaf_set
    mod._leaf_set = lambda *a: (leaves.append(a[0].shape), leaf(*a))
    g = torch.Generator().manual_seed(1)
    A = torch.rand(40, 36, dtype=torch.float64, generator=g)
    B = torch.rand(36, 44, dtype=torch.float64, generator=g)
    assert torch.allclose(mod.matmul(A, B), A @ B)
    assert all(spent[p] > 0 for p in ("leaves", "A", "B", "C")), spent
    assert len(leaves) > 1


def test_phase_rounds_attribute_the_unclocked_rest_to_overhead():
    bd = _breakdown()
    spent = {"k": dict.fromkeys(bd.PHASES, 0.0)}
    calls = []

    def kernel():
        calls.append("k")
        spent["k"]["leaves"] += 0.5  # a clock that claims more than the call took: overhead goes negative
        spent["k"]["A"] += 0.25

    samples, base = bd.phase_rounds({"k": kernel}, spent, lambda: calls.append("mm"), rounds=3, warmup=1)
    assert len(samples["k"]) == 3 and len(base) == 3 and calls.count("k") == 4 and calls.count("mm") == 4
    for split in samples["k"]:
        assert split["leaves"] == 0.5 and split["A"] == 0.25  # zeroed between calls
        assert split["overhead"] == pytest.approx(split["total"] - 0.75)
    assert calls[:4] == ["k", "mm", "mm", "k"]  # the order rotates from round to round


def test_passes_inside_the_fused_helpers_are_not_clocked_twice():
    # _fused_sums forms its sums with torch passes; its call line is clocked as one A or B pass, so
    # the lines in its body must not be clocked again (they were, as C: negative overhead)
    bd = _breakdown()
    plan, decomps = make_plan("strassen-winograd", 1, backend="torch", dtype="float64", device="cpu", variant="fused")
    source = generate(plan, decomps, backend=get_backend("torch")).source
    lines = bd.pass_lines(source)
    body = "\n".join(source[source.index(f"def {helper}("):].split("\ndef ", 1)[0]
                     for helper in ("_fused_sums", "_combination"))  # _fused_sums forms them by _combination
    assert "torch.add(" in body  # the torch sums are there ...
    matched = [line for line, m in lines if m]
    assert matched and not [line for line in matched if line in body.splitlines()]  # ... and not matched
    assert any("_fused_sums(A" in line for line in matched)
