"""The diagnostic benchmark scripts measure what they say (no timing here: only their transformations)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
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
    sys.modules[spec.name] = mod  # a fresh module each time (dataclasses look their module up)
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
    # nothing writes the leaves-only workspaces: they are filled when allocated (never garbage or
    # denormals, which Intel cores multiply far slower), the real kernel's are not
    ws = leaves._allocate((64, 64), A)
    assert ws.dtype == A.dtype and 0 < float(ws.max()) < 1 and float(ws.min()) >= 0 and ws.unique().numel() > 100
    assert "torch.rand" not in kernel.source.split("def _allocate", 1)[1].split("\n", 2)[1]


def test_breakdown_refuses_a_source_without_a_torch_workspace():
    bd = _script("cpu_breakdown")
    with pytest.raises(ValueError, match="needs a torch kernel"):
        bd.strip_passes("def matmul(A, B):\n    return A @ B\n")


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


def _row(sp, label, group, size, median_s, speedup, traffic=1.2, plan=("strassen-winograd", 2, "float32", "lowmem")):
    return sp.Row(label, group, plan, size, median_s, speedup, traffic)


def test_cpu_speedup_targets_are_issue_14s():
    sp = _script("cpu_speedup")
    got = {(t.group, t.kind): t.bound for t in sp.TARGETS}
    assert got == {("4096", "speedup"): 1.10, ("8192", "speedup"): 1.18, ("16384", "speedup"): 1.25,
                   ("4096", "efficiency"): 0.95, ("8192", "efficiency"): 0.95, ("16384", "efficiency"): 0.95,
                   ("8192x4096x8192", "speedup"): 1.10, ("4096x8192x2048", "speedup"): 1.10,
                   ("laderman", "speedup"): 1.0, ("4095", "peel"): 1.03, ("float64", "speedup"): 1.12}
    groups = {case[1] for case in sp.CASES["full"]}
    assert {t.group for t in sp.TARGETS} <= groups  # every target has cases
    sizes = {case[4] for case in sp.CASES["full"] if case[1] == "16384"}
    assert sizes == {(16384,) * 3} and {case[3] for case in sp.CASES["full"] if case[1] == "16384"} == {3, 4}
    assert all(case[5] == "float64" and case[4] == (8192,) * 3 for case in sp.CASES["full"] if case[1] == "float64")


def test_cpu_speedup_best_plan_and_its_efficiency_decide_a_group():
    sp = _script("cpu_speedup")
    rows = [_row(sp, "8192 a", "8192", (8192,) * 3, 1.0, 1.20, traffic=1.30),
            _row(sp, "8192 b", "8192", (8192,) * 3, 1.0, 1.15, traffic=1.16),
            _row(sp, "4608 laderman L1", "laderman", (4608,) * 3, 1.0, 1.0)]
    checks = dict(sp.check_targets(rows, {"8192", "laderman", "16384"}))
    speed = next(k for k in checks if k.startswith("N=8192: best plan"))
    assert checks[speed] and "1.200x" in speed and "8192 a" in speed
    eff = next(k for k in checks if k.startswith("N=8192: efficiency"))
    assert not checks[eff] and "0.923" in eff  # the best plan's 1.20 / 1.30, not the other's 0.99
    lad = next(k for k in checks if k.startswith("<3,3,3;23>"))
    assert not checks[lad]  # equal to torch.mm is not faster
    missing = [k for k in checks if k.startswith("N=16384")]
    assert len(missing) == 2 and all("not measured" in k and not checks[k] for k in missing)
    assert not any(k.startswith("N=4096") for k in checks)  # a group not selected prints no target


@pytest.mark.parametrize("t4095,met", [(1.02 * (4095 / 4096) ** 3, True), (1.04 * (4095 / 4096) ** 3, False)])
def test_cpu_speedup_4095_is_compared_with_the_same_plan_at_4096_scaled_by_flops(t4095, met):
    sp = _script("cpu_speedup")
    fused = ("strassen-winograd", 2, "float32", "fused")
    rows = [_row(sp, "4096 winograd L2", "4096", (4096,) * 3, 2.0, 1.1),
            _row(sp, "4096 winograd L2 fused", "4096", (4096,) * 3, 1.0, 1.2, plan=fused),
            _row(sp, "4095 winograd L2 fused", "4095", (4095,) * 3, t4095, 1.1, plan=fused)]
    ((line, ok),) = [c for c in sp.check_targets(rows, {"4095"})]
    assert ok is met and line.startswith("4095 winograd L2 fused") and f"{t4095 / (4095 / 4096) ** 3:.3f}" in line


def _select(sp, **kw):
    args = argparse.Namespace(quick=False, only=kw.get("only", ""), group=kw.get("group", ""))
    return [case[0] for case in sp.selected_cases(args)[0]]


def test_cpu_speedup_group_selects_one_target_group():
    sp = _script("cpu_speedup")
    assert _select(sp, group="16384") == [c[0] for c in sp.CASES["full"] if c[1] == "16384"]
    assert _select(sp, group="16384", only="fused") == ["16384 winograd L3 fused", "16384 winograd L4 fused"]
    both = _select(sp, group="8192x4096x8192,4096x8192x2048")
    assert both and all(label.startswith("rect") for label in both) and len({lbl.split()[1] for lbl in both}) == 2
    # a 4095 case brings the 4096 case of the same plan, which its target compares with
    assert _select(sp, only="4095 winograd L2 fused") == ["4096 winograd L2 fused", "4095 winograd L2 fused"]
    assert sp.selected_cases(argparse.Namespace(quick=False, only="", group="4095"))[1] == {"4095"}  # not 4096's
    with pytest.raises(ValueError, match="unknown group 9999; use one of 4096"):
        _select(sp, group="9999")


def test_cpu_speedup_bad_group_is_one_line_and_exit_2(capsys):
    sp = _script("cpu_speedup")
    assert sp.main(["--group", "4097"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown group 4097") and err.count("\n") == 1
    assert sp.main(["--only", "no such case"]) == 2
    assert capsys.readouterr().err.startswith("error: no case matches --only")


def test_cpu_speedup_runs_its_targets_and_skips_what_does_not_fit(monkeypatch, capsys):
    """Tiny stand-ins for the table: every selected target prints met/MISSED with a number; a case
    whose memory exceeds MemAvailable is skipped with one line before anything is allocated."""
    import fmmforge.hardware.limits as limits

    sp = _script("cpu_speedup")
    sp.CASES = {"quick": [], "full": [
        ("96 winograd L1", "4096", "strassen-winograd", 1, (96,) * 3, "float64"),
        ("95 winograd L1", "4095", "strassen-winograd", 1, (95,) * 3, "float64"),
        ("huge winograd L1", "16384", "strassen-winograd", 1, (3000,) * 3, "float64")]}
    sp.TARGETS = tuple(t if t.kind != "peel" else sp.Target(t.group, t.kind, t.bound, t.text, reference=(96,) * 3)
                       for t in sp.TARGETS)
    monkeypatch.setattr(sp, "streaming_bandwidth", lambda *a: 1e10)
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 50 * 2**20)  # 3000^2 float64 needs more
    code = sp.main(["--pairs", "3", "--wait-quiet", "0", "--group", "4095,16384"])
    out = capsys.readouterr().out
    assert code == 1  # the 16384 targets are not measured
    assert "huge winograd L1: skipped: needs about" in out and "50.0 MiB" not in out
    verdicts = [line for line in out.splitlines() if line.startswith(("met ", "MISSED "))]
    assert any("95 winograd L1: time within 3%" in v for v in verdicts)
    assert sum("N=16384" in v and "not measured" in v for v in verdicts) == 2
    assert not any("N=4096" in v for v in verdicts)  # the twin's group was not selected: no target of it
    rows = [line for line in out.splitlines() if line.startswith(("96 winograd", "95 winograd"))]
    assert len(rows) == 2  # the 4096 twin ran as well


def test_breakdown_task_parallel_pins_one_thread_only():
    """The --task-parallel probe's workers set their own thread counts; the caller's stay as they were."""
    import threading

    controls = _script("cpu_breakdown").thread_controls()
    if controls is None:
        pytest.skip("torch here has no per-thread OpenMP/MKL thread controls")
    set_omp, set_mkl = controls
    before = torch.get_num_threads()
    seen: list[int] = []

    def worker() -> None:
        torch.get_num_threads()  # torch's own per-thread initialisation first (it would undo the pin)
        set_omp(1)
        set_mkl(1)
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1] and torch.get_num_threads() == before


def test_tune_compares_with_every_hand_picked_plan_of_cpu_speedup_in_every_layout():
    tune, SW = _script("tune"), "strassen-winograd"
    at_8192 = tune.hand_picked(8192)
    assert ("strassen-winograd", 3, "lowmem") in at_8192 and ("strassen-winograd", 3, "parallel") in at_8192
    assert ("strassen-winograd", 2, "fused") in at_8192 and ("strassen", 3, "lowmem") in at_8192
    expected = {("strassen", 2, "lowmem"), *((SW, 1, v) for v in ("lowmem", "fused", "parallel")),
                *((SW, 2, v) for v in ("lowmem", "fused", "parallel")), (SW, 3, "lowmem")}
    assert set(tune.hand_picked(4096)) == expected and len(tune.hand_picked(4096)) == len(expected)


def test_tune_margin_pairs_the_rounds():
    # a is 2 % faster than b in every round although the rounds drift by 10 %: the paired margin
    # says +2.0 % in 3 of 3 rounds, whatever the spread of the medians
    tune = _script("tune")
    a_times, b_times = [1.0, 1.1, 0.95], [1.02, 1.122, 0.969]
    line = tune.versus("x", (1.1, 1.0, 1.2, a_times), (1.08, 1.0, 1.2, b_times))
    assert "margin per round +2.0 % (+2.0 to +2.0 %, 3 of 3 rounds faster)" in line


@pytest.mark.slow
def test_loaded_runs_quiet_and_loaded_phases_with_its_own_load(capsys):
    """benchmarks/loaded.py at a tiny size: a row per case with both ratios and their quotient, the
    load process started, switched and ended by the script (no timing is checked). One load thread:
    beside two, a kernel call of a process that has run the rest of the suite stalls for up to a
    second (what the script measures), and this is a smoke test, not the measurement."""
    lo = _script("loaded")
    code = lo.main(["--sizes", "128", "--pairs", "2", "--rounds", "1", "--load-threads", "1", "--load-size", "64",
                    "--load-max-s", "120"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("128 winograd L1")]
    assert code in (0, 1) and len(rows) == 3 and any("fmmforge.matmul" in r for r in rows)
    for row in rows:
        numbers = row.rsplit(")", 1)[-1].split() if "matmul" in row else row.split()[4:]
        quiet, _, loaded, _, quotient = (float(x) for x in numbers[:5])
        assert quiet > 0 and loaded > 0 and quotient > 0 and row.split()[-1] in ("yes", "NO")
    assert out.splitlines()[-1].endswith("within 1.3x of their quiet ratio when loaded")
    with lo.Load(1, 32, 60) as load:  # the protocol: on, then off with the products done meanwhile
        load.on()
        assert load.off() > 0
    assert lo.main(["--kernels", "fused,quick"]) == 2
    assert capsys.readouterr().err.startswith("error: use --kernels of fused, lowmem, matmul")


def test_loaded_quiet_only_times_no_load():
    lo = _script("loaded")
    case = lo.Case("x", 8, lambda: sum(range(200)), lambda: sum(range(100)))
    got = lo.measure(case, None, rounds=2, pairs=3)
    assert set(got) == {"quiet", "quiet_iqr"} and got["quiet"] > 0
