"""Benchmark records, the `bench` command and the `latency` reward (tiny sizes: no timing assertions)."""

from __future__ import annotations

import pytest

from fmmforge.codegen.bench import measure, parse_algos, parse_levels, parse_sizes
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.records import query_records
from fmmforge.core.catalogue import resolve
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend


def test_parsers():
    assert parse_sizes("64, 8x4x2") == [(64, 64, 64), (8, 4, 2)]
    assert parse_algos("strassen,alphatensor:4,4,4,laderman") == ["strassen", "alphatensor:4,4,4", "laderman"]
    assert parse_levels("1,2") == [1, 2]
    for bad in ("", "x", "0"):
        with pytest.raises(FmmforgeError):
            parse_sizes(bad)
    with pytest.raises(FmmforgeError):
        parse_levels("1,-2")


def test_measure_records_one_row_per_measurement():
    plan, decomps = make_plan("strassen", 1, dtype="float64", cutoff=4)
    rec = measure(plan, decomps, (40, 24, 36), backend=get_backend("torch"), pairs=3, min_sample_s=0.001, measure_memory=True)
    rows = query_records()
    assert len(rows) == 1
    row = rows[0]
    assert (row.m, row.k, row.n, row.dtype, row.device, row.levels) == (40, 24, 36, "float64", "cpu", 1)
    assert row.fingerprint == resolve("strassen").fingerprint and row.algorithm == "strassen"
    assert row.median_s > 0 and row.baseline_median_s > 0 and row.iqr_s >= 0
    assert row.max_error is not None and row.max_error <= row.error_bound
    assert row.fmmforge_version and row.plan_key == plan.key() and rec.id == row.id
    measure(plan, decomps, (40, 24, 36), backend=get_backend("torch"), pairs=3, min_sample_s=0.001)
    assert len(query_records()) == 2


def _plans(*specs, dtype="float64"):
    return [make_plan(name, levels, dtype=dtype, cutoff=4) for name, levels in specs]


def test_measure_many_checks_every_kernel_against_one_reference_and_shares_one_baseline(monkeypatch):
    from fmmforge.codegen import bench

    made = []
    real = bench.Reference.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(bench.Reference, "__init__", counting)
    items = _plans(("strassen", 1), ("strassen-winograd", 2), ("laderman", 1))
    recs = bench.measure_many(items, (37, 30, 41), backend=get_backend("torch"), rounds=3, min_sample_s=0.001)
    assert len(made) == 1 and all(r is not None for r in recs)
    assert len({r.baseline_median_s for r in recs}) == 1  # one vendor run for all of them
    rows = query_records()
    assert sorted(r.plan_key for r in rows) == sorted(p.key() for p, _ in items)
    for r in rows:
        assert (r.m, r.k, r.n) == (37, 30, 41) and r.max_error is not None and r.max_error <= r.error_bound
        assert 0 < r.speedup < 100  # the median of the per-round ratios (not the ratio of the medians)


def test_measure_many_speedup_is_the_median_of_the_per_round_ratios(monkeypatch):
    from fmmforge.codegen import bench

    # the machine is slow in rounds 2-5 for the kernel's samples but only in rounds 4-5 for the
    # vendor's: the per-round ratios are 1.25, 0.42, 0.42, 1.25, 1.25; the medians' ratio is 0.42
    fake = {"vendor": [1.0, 1.0, 1.0, 3.0, 3.0], "k0": [0.8, 2.4, 2.4, 2.4, 2.4]}
    monkeypatch.setattr(bench, "interleaved", lambda fns, **kwargs: {name: list(v) for name, v in fake.items()})
    (rec,) = bench.measure_many(_plans(("strassen", 1)), (16, 16, 16), backend=get_backend("torch"), rounds=5,
                                min_sample_s=0.001, record=False)
    assert rec.speedup == pytest.approx(1.25)
    assert (rec.median_s, rec.baseline_median_s) == (pytest.approx(2.4), pytest.approx(1.0))


def test_measure_many_leaves_out_a_kernel_that_fails_its_check_and_says_why(monkeypatch):
    from fmmforge.codegen import bench
    from fmmforge.codegen.validate import KernelValidationError

    items = _plans(("strassen", 1), ("laderman", 1))
    real = bench.Reference.check

    def strict(self, plan, decomps, C):
        if plan.algorithms == ("laderman",):
            raise KernelValidationError("kernel laderman: max error 1 > bound 0; not benchmarked")
        return real(self, plan, decomps, C)

    monkeypatch.setattr(bench.Reference, "check", strict)
    told = []
    recs = bench.measure_many(items, (18, 18, 18), backend=get_backend("torch"), rounds=3, min_sample_s=0.001,
                              on_error=lambda plan, exc: told.append((plan.algorithms, str(exc))))
    assert recs[0] is not None and recs[1] is None
    assert told == [(("laderman",), "kernel laderman: max error 1 > bound 0; not benchmarked")]
    assert [r.algorithm for r in query_records()] == ["strassen"]
    with pytest.raises(KernelValidationError):  # without on_error the failure propagates, nothing recorded
        bench.measure_many(items[1:], (18, 18, 18), backend=get_backend("torch"), rounds=3, min_sample_s=0.001)
    assert len(query_records()) == 1


def test_measure_many_counts_every_output_in_its_memory_check_and_refuses_mixed_dtypes(monkeypatch):
    from fmmforge.codegen import bench

    asked = []
    monkeypatch.setattr(bench, "check_memory", lambda need, *a, **k: asked.append(need))
    one = bench.measure_many(_plans(("strassen", 1)), (16, 16, 16), backend=get_backend("torch"), rounds=3,
                             min_sample_s=0.001, record=False)
    three = bench.measure_many(_plans(("strassen", 1), ("strassen", 2), ("laderman", 1)), (16, 16, 16),
                               backend=get_backend("torch"), rounds=3, min_sample_s=0.001, record=False)
    assert one[0] is not None and all(three) and asked[1] >= asked[0] + 2 * 16 * 16 * 8
    assert query_records() == []
    with pytest.raises(FmmforgeError, match="one device and dtype"):
        bench.measure_many(_plans(("strassen", 1)) + _plans(("strassen", 1), dtype="float32"), (16, 16, 16),
                           backend=get_backend("torch"))


def test_cli_bench_prints_and_records(cli):
    code, out, err = cli("bench", "--device", "cpu", "--sizes", "32,20x12x28", "--algos", "strassen,alphatensor:2,2,3",
                         "--levels", "1,2", "--dtype", "float64", "--pairs", "3", "--cutoff", "2",
                         "--min-sample-ms", "1")
    assert code == 0, err
    assert "speed-up" in out and "ceiling" in out and "GFLOP/s" in out
    assert len(query_records()) == 2 * 2 * 2
    assert {r.algorithm for r in query_records()} == {"strassen", "alphatensor:2,2,3"}


def test_cli_bench_json_is_the_recorded_rows(cli):
    import json

    code, out, err = cli("bench", "--json", "--sizes", "24", "--algos", "strassen", "--levels", "1",
                         "--dtype", "float64", "--pairs", "3", "--cutoff", "2", "--min-sample-ms", "1")
    assert code == 0, err
    doc = json.loads(out)  # nothing but the document on standard output
    assert doc["schema"] == "fmmforge.bench" and doc["problems"] == []
    (row,) = doc["rows"]
    (record,) = query_records()
    assert row["id"] == record.id and row["speedup"] == record.speedup and row["median_s"] == record.median_s
    assert row["gflops"] == pytest.approx(2 * 24**3 / record.median_s / 1e9) and row["ceiling"] == pytest.approx(8 / 7)
    assert "measured strassen L1 24x24x24" in err


@pytest.mark.parametrize("args,message", [
    (["--levels", "-1"], "levels"),
    (["--backend", "nope"], "unknown backend"),
    (["--device", "cuda:3"], "not present"),
    (["--sizes", "abc"], "size"),
    (["--algos", "nonexistent"], "unknown algorithm"),
    (["--threads", "0"], "--threads must be between 1"),
    (["--threads", "100000"], "--threads must be between 1"),
    (["--min-sample-ms", "nan"], "--min-sample-ms must be a finite number"),
    (["--min-sample-ms", "inf"], "--min-sample-ms must be a finite number"),
    (["--min-sample-ms", "-1"], "--min-sample-ms must be more than 0"),
    (["--min-sample-ms", "0"], "--min-sample-ms must be more than 0"),
    (["--pairs", "0"], "--pairs must be between 1"),
    (["--cutoff", "0"], "--cutoff must be between 1"),
    (["--levels", "9"], "levels must be between 0 and 8"),
    (["--levels", "1,1"], "repeats a level"),
    (["--sizes", "0"], "between 1 and 2^31"),
    (["--sizes", "3000000000"], "between 1 and 2^31"),
    (["--sizes", "16x16"], "N or M,K,N"),
    (["--algos", "strassen,laderman,strassen"], "strassen more than once"),
    (["--sizes", "1000000"], "needs about"),
])
def test_cli_bench_bad_input_exit_2_with_one_line(cli, args, message):
    base = {"--sizes": "16", "--algos": "strassen", "--levels": "1", "--pairs": "3", "--min-sample-ms": "1"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    code, out, err = cli("bench", *[x for kv in base.items() for x in kv])
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert query_records() == []


def test_latency_reward_through_plugins_and_cache(monkeypatch):
    from fmmforge.plugins import get_reward
    from fmmforge.core.contracts import RewardContext
    from fmmforge.plugins.reward import evaluate

    reward = get_reward("latency")
    assert reward.cheap is False
    monkeypatch.setattr(reward, "pairs", 3)
    monkeypatch.setattr(reward, "min_sample_s", 0.001)
    ctx = RewardContext(device="cpu", size=(48, 48, 48), dtype="float64", levels=1)
    first = evaluate(reward, resolve("strassen"), ctx)
    assert first.value > 0 and first.parts["cached"] is False
    assert len(query_records()) == 1
    import fmmforge.codegen.bench as bench

    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured again"))
    second = evaluate(reward, resolve("strassen"), ctx)
    assert second.parts["cached"] is True and second.value == first.value
    assert len(query_records()) == 1


def test_latency_reward_needs_a_size_and_a_present_device():
    from fmmforge.plugins import get_reward
    from fmmforge.core.contracts import RewardContext

    reward = get_reward("latency")
    with pytest.raises(FmmforgeError, match="size"):
        reward.score(resolve("strassen"), RewardContext(device="cpu"))
    with pytest.raises(FmmforgeError, match="not present"):
        reward.score(resolve("strassen"), RewardContext(device="cuda:5", size=(8, 8, 8)))


def test_backends_registered_through_plugins():
    from fmmforge.plugins.registry import backends

    found = backends()
    assert {"torch", "numpy", "cupy"} <= set(found)
    assert found["cupy"].devices == ("cuda",)


def test_run_bytes_counts_operands_outputs_workspace_and_the_error_check():
    from fmmforge.codegen.bench import run_bytes

    M, K, N = 10, 20, 30
    operands, out = M * K + K * N, M * N
    assert run_bytes((M, K, N), "float32", check_error=False) == operands * (8 + 4) + 2 * out * 4
    assert run_bytes((M, K, N), "float64", workspace_fraction=0.5, check_error=True) == (
        operands * 16 + 2 * out * 8 + int(0.5 * K * N * 8) + 8 * (operands + 2 * out))
    # the case: one million square in float32 is far beyond any machine
    assert run_bytes((10**6,) * 3, "float32") > 74 * 2**30


def test_bench_memory_check_refuses_before_measuring_and_can_be_overridden(cli, monkeypatch):
    from fmmforge.hardware import limits

    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 1000)
    args = ["bench", "--sizes", "16", "--algos", "strassen", "--levels", "1", "--pairs", "3",
            "--min-sample-ms", "1", "--dtype", "float64", "--cutoff", "2"]
    code, out, err = cli(*args)
    assert code == 2 and "has 0.0 GiB available" in err and "--ignore-memory" in err
    assert query_records() == []
    code, out, err = cli(*args, "--ignore-memory")
    assert code == 0, err
    assert len(query_records()) == 1


def test_records_go_to_the_store_given_even_when_it_holds_no_algorithms(tmp_path):
    """An empty Store is falsy (it has a length): records once went to $FMMFORGE_HOME's store instead."""
    from helpers import record

    from fmmforge.codegen.records import add_record, query_records
    from fmmforge.core.store import Store

    other = Store(tmp_path / "other-home")
    assert len(other) == 0 and not other
    add_record(record(), other)
    assert len(query_records(other)) == 1 and query_records(Store()) == []


# ---------------------------------------------------------------------- the latency reward: layout, name, measuring again
def _quick_latency(monkeypatch):
    from fmmforge.plugins import get_reward

    reward = get_reward("latency")
    monkeypatch.setattr(reward, "pairs", 3)
    monkeypatch.setattr(reward, "min_sample_s", 0.001)
    return reward


def test_latency_reward_times_the_default_layout_names_the_scheme_and_can_measure_again(monkeypatch):
    import json

    from fmmforge.codegen.plan import AUTO_VARIANT, resolve_variant
    from fmmforge.core.contracts import RewardContext
    from fmmforge.plugins.reward import evaluate

    reward = _quick_latency(monkeypatch)
    ctx = RewardContext(device="cpu", size=(48, 48, 48), dtype="float64", levels=1)
    first = evaluate(reward, resolve("strassen"), ctx)
    default = resolve_variant(AUTO_VARIANT, "torch", "cpu")  # what `bench` and `matmul` get by default
    assert first.parts["layout"] == default == "fused"
    (rec,) = query_records()
    assert json.loads(rec.plan).get("variant", "lowmem") == default
    assert rec.algorithm == "strassen" and first.parts["algorithm"] == "strassen"  # not fp:9b9a3b3685c8
    again = evaluate(reward.remeasuring(), resolve("strassen"), ctx)
    assert again.parts["cached"] is False and len(query_records()) == 2  # measured and recorded anew
    read = evaluate(reward, resolve("strassen"), ctx)
    assert read.parts["cached"] is True and read.value == again.value  # the new reading is the one read


def test_latency_reward_names_deepmind_and_stored_schemes(monkeypatch):
    from fmmforge.codegen.records import scheme_name
    from fmmforge.core.store import Provenance, Store
    from fmmforge.core.transforms import kron

    assert scheme_name(resolve("alphatensor:2,2,3")) == "alphatensor:2,2,3"
    d = kron(resolve("strassen"), resolve("strassen"))
    assert scheme_name(d).startswith("fp:")  # known by no name
    Store().add(d, Provenance(source="test"), name="s2")
    Store().add(resolve("laderman"), Provenance(source="test"), name="other")
    assert scheme_name(d) == "s2"
    # the name is looked up by fingerprint: the latency reward asks on every score, so it never
    # reads (and re-verifies) every stored algorithm
    monkeypatch.setattr(Store, "all", lambda self: pytest.fail("scheme_name read the whole store"))
    assert scheme_name(d) == "s2" and scheme_name(kron(resolve("strassen"), resolve("laderman"))).startswith("fp:")


def test_score_remeasure_measures_again_and_prints_the_layout(cli):
    args = ("score", "strassen", "--reward", "latency", "--size", "24", "--dtype", "float64")
    code, out, err = cli(*args)
    assert code == 0, err
    assert "layout" in out and "fused" in out
    code, out, err = cli(*args)
    assert code == 0 and len(query_records()) == 1  # read from the records
    code, out, err = cli(*args, "--remeasure")
    assert code == 0, err
    assert len(query_records()) == 2 and {r.algorithm for r in query_records()} == {"strassen"}
    code, out, err = cli("score", "strassen", "--reward", "rank", "--remeasure")
    assert code == 2 and "--remeasure is for rewards that measure kernels" in err
