"""The calibrated cost model (codegen.costmodel, codegen.calibrate), `fmmforge calibrate` and the
latency-model reward. Records are synthetic: times generated from known parameters."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fmmforge.codegen import calibrate as cal
from fmmforge.codegen import costmodel as cm
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.records import Record, add_record, query_records
from fmmforge.codegen.schedule import Add2, Axpy, Scale, schedule_level
from fmmforge.core.catalogue import resolve
from fmmforge.core.contracts import RewardContext
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store
from tests.helpers import one_error

# gemm scale, s/byte cached (40 GB/s), streamed (12 GB/s), fused (20 GB/s), s/pass, extra s per torch pass of a
# fused kernel's sums, s/call
TRUE = (1.05, 1 / 40e9, 1 / 12e9, 1 / 20e9, 4e-6, 12e-6, 40e-6)
CACHE = 256 << 10  # the cache calibrate sees here: small, so that the sizes below have passes of both kinds
PLANS = (("strassen", 0), ("strassen", 1), ("strassen-winograd", 1), ("strassen", 2), ("laderman", 1),
         ("strassen-winograd", 1, "fused"), ("laderman", 1, "fused"))
SIZES = ((256, 256, 256), (384, 384, 384), (512, 512, 512), (512, 768, 384), (768, 768, 768))


def gemm_truth(shape: cm.Shape) -> float:
    """A vendor gemm that is slow for small and thin blocks: 100 GFLOP/s at best."""
    m, k, n = shape
    efficiency = 1.0 / (1.0 + 32.0 / min(shape) + 1e4 / (m * k * n) ** (2 / 3))
    return 2.0 * m * k * n / (100e9 * efficiency) + 2e-6


def synthetic_store(key: cm.ModelKey, params=TRUE, plans=PLANS, sizes=SIZES, noise=(1.0,)) -> tuple[Store, cm.GemmTable]:
    """A store with gemm timings at every grid corner the records need and records whose times
    are exactly what ``params`` say (times the factors of ``noise`` in turn)."""
    store = Store()
    shapes = set()
    cases = []
    for name, levels, *variant in plans:
        plan, decomps = make_plan(name, levels, dtype=key.dtype, device=key.device, variant=(variant or ["lowmem"])[0])
        for size in sizes:
            shapes |= cm.leaf_shapes(decomps, plan.cutoff, size, variant=plan.variant)
            cases.append((plan, decomps, size))
    needed = cm.union_corners(shapes | {size for size in sizes})
    table = cm.GemmTable({s: gemm_truth(s) for s in needed})
    for s, t in table.points.items():
        cm.save_gemm_point(key, s, t, store)
    for i, (plan, decomps, size) in enumerate(cases):
        t = float(cm.features(decomps, plan.cutoff, size, key.dtype, table, CACHE, variant=plan.variant).vector()
                  @ np.array(params)) * noise[i % len(noise)]
        add_record(synthetic_record(key, plan, size, t, table.seconds(size)), store)
    return store, table


def synthetic_record(key: cm.ModelKey, plan, size: cm.Shape, seconds: float, vendor_s: float) -> Record:
    return Record(device=key.device, machine=key.machine, algorithm=plan.algorithms[0] if plan.algorithms else "vendor",
                  fingerprint="/".join(plan.fingerprints), plan=json.dumps(plan.as_dict(), sort_keys=True),
                  plan_key=plan.key(), backend="torch", levels=plan.levels, m=size[0], k=size[1], n=size[2],
                  dtype=key.dtype, threads=key.threads, median_s=seconds, iqr_s=seconds / 50,
                  baseline_median_s=vendor_s, baseline_iqr_s=vendor_s / 50, speedup=vendor_s / seconds,
                  max_error=1e-6, error_bound=1e-3)


@pytest.fixture
def key(monkeypatch) -> cm.ModelKey:
    monkeypatch.setattr(cal, "cache_bytes", lambda threads: CACHE)
    return cm.current_key("cpu", "float32")


class _NoBackend:
    name = "torch"


# ---------------------------------------------------------------------- fitting
def test_fit_recovers_known_parameters_and_predicts_held_out_records(key):
    store, table = synthetic_store(key)
    result = cal.calibrate(key, backend=_NoBackend(), budget_s=0, store=store)
    assert result.measured_records == 0 and result.measured_gemms == 0
    assert np.allclose(result.model.parameters, TRUE, rtol=1e-6)
    assert result.model.cache == CACHE  # two bandwidths predict these records; one could not
    assert result.model.quality.median_ape < 1e-6
    assert result.model.quality.spearman == pytest.approx(1.0)
    # a plan and a size the fit never saw
    plan, decomps = make_plan("strassen-winograd", 2, device="cpu")
    size = (640, 640, 640)
    table.points.update({s: gemm_truth(s) for s in cm.union_corners(cm.leaf_shapes(decomps, 64, size))})
    truth = float(cm.features(decomps, 64, size, "float32", table, CACHE).vector() @ np.array(TRUE))
    model = cm.CalibratedModel(key, result.model.parameters, table, cache=CACHE)
    assert model.predict_s(decomps, 64, size) == pytest.approx(truth, rel=1e-6)


def test_nnls_keeps_coefficients_non_negative_and_exact_when_feasible():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert np.allclose(cm.nnls(X, X @ np.array([2.0, 3.0])), [2.0, 3.0])
    # unconstrained least squares gives (3, -1); with θ >= 0 the best is (2.5, 0)
    assert np.allclose(cm.nnls(X, np.array([3.0, -1.0, 2.0])), [2.5, 0.0])


def test_spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    assert cm.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert cm.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


# ---------------------------------------------------------------------- features
def test_features_count_the_bytes_of_strassen_one_level_by_hand():
    d = resolve("strassen")
    b, item = 64, 4
    block = b * b * item
    # set mode (C = A·B): 10 sums S = X ± Y / T = X ± Y (read 2, write 1), one copy C21 = C11
    # (read 1, write 1), 6 accumulations C += ±X (read 2, write 1): 30 + 2 + 18 = 50 blocks, 17 passes
    ops = schedule_level(d, "set").ops
    assert [sum(isinstance(op, t) for op in ops) for t in (Add2, Scale, Axpy)] == [10, 1, 6]
    f = cm.features([d], 64, (2 * b, 2 * b, 2 * b), "float32", cm.GemmTable({(b, b, b): 1e-3}))
    assert (f.bytes, f.passes, f.calls) == (50 * block, 17, 1)
    assert f.gemm_s == pytest.approx(7e-3)  # 7 leaf products of 64x64x64
    # accumulate mode: 10 sums and 10 accumulations: 60 blocks
    assert cm.level_pass_bytes(d, "acc", (b, b, b), item) == (60 * block, 20)


def test_passes_count_as_cached_or_streamed_by_the_bytes_they_move():
    d = resolve("strassen")
    b, item = 64, 4
    block = b * b * item
    table = cm.GemmTable({(b, b, b): 1e-3})
    every = cm.features([d], 64, (2 * b, 2 * b, 2 * b), "float32", table, cache=3 * block)
    assert (every.cached_bytes, every.streamed_bytes) == (50 * block, 0)  # every pass moves at most 3 blocks
    # at a cache of 2 blocks the 16 three-block passes stream, the copy C21 = C11 (2 blocks) stays cached
    split = cm.features([d], 64, (2 * b, 2 * b, 2 * b), "float32", table, cache=2 * block)
    assert (split.cached_bytes, split.streamed_bytes, split.passes) == (2 * block, 48 * block, 17)
    none = cm.features([d], 64, (2 * b, 2 * b, 2 * b), "float32", table)
    assert (none.cached_bytes, none.streamed_bytes) == (0, 50 * block)


def test_cache_bytes_is_the_l2_of_the_threads_cores(tmp_path):
    for index, (level, kind, size) in enumerate((("1", "Data", "32K"), ("1", "Instruction", "32K"),
                                                  ("2", "Unified", "1024K"), ("3", "Unified", "32768K"))):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(text + "\n")
    assert cm.cache_bytes(2, str(tmp_path)) == 2 << 20
    assert cm.cache_bytes(3, str(tmp_path / "absent")) == 3 * cm.DEFAULT_L2_BYTES


def cm_resolve(name):
    from fmmforge.core.catalogue import resolve

    return resolve(name)


def test_gemm_timings_are_ratios_to_the_reference_measured_first(key, monkeypatch):
    calls = []

    def fake_measure(k, shape, reference=None, layout="contiguous"):
        calls.append((shape, reference))
        return 1e-3 if reference is None else 2 * reference[1]

    monkeypatch.setattr(cal, "measure_gemm", fake_measure)
    have: dict = {}
    taken = cal._measure_gemms(key, {(64, 64, 64), (8, 8, 8)}, have, float("inf"), Store(), None)
    ref = cal.REFERENCE_GEMM
    assert taken == 3
    assert calls == [(ref, None), ((8, 8, 8), (ref, 1e-3)), ((64, 64, 64), (ref, 1e-3))]
    assert cm.load_gemm_points(key, Store()) == {ref: 1e-3, (8, 8, 8): 2e-3, (64, 64, 64): 2e-3}
    calls.clear()
    cal._measure_gemms(key, {(64, 64, 64), (16, 16, 16)}, have, float("inf"), Store(), None)
    assert calls == [((16, 16, 16), (ref, 1e-3))]  # the stored reference is not measured again


def test_a_leaf_point_far_below_the_contiguous_gemm_is_measured_again_and_the_slower_kept(key, monkeypatch):
    readings = {(64, 64, 64): [0.2e-3, 1.1e-3], (32, 32, 32): [0.14e-3]}  # the first 64³ reading was disturbed

    def fake_measure(k, shape, reference=None, layout="contiguous"):
        assert layout == "leaf"
        return readings[shape].pop(0)

    monkeypatch.setattr(cal, "measure_gemm", fake_measure)
    have: dict = {}
    contiguous = cm.GemmTable({(64, 64, 64): 1e-3, (32, 32, 32): 0.125e-3})
    taken = cal._measure_gemms(key, {(64, 64, 64), (32, 32, 32)}, have, float("inf"), Store(), None, "leaf",
                               1e-3, contiguous)
    assert taken == 2 and have == {(64, 64, 64): 1.1e-3, (32, 32, 32): 0.14e-3}
    assert readings == {(64, 64, 64): [], (32, 32, 32): []}  # 32³ read plausibly: measured once


def test_calibrate_times_the_records_own_leaf_shapes_not_only_the_grid(key, monkeypatch):
    store, _ = synthetic_store(key)
    timed = []

    def fake_measure(k, shape, reference=None, layout="contiguous"):
        timed.append((shape, layout))
        return gemm_truth(shape) * (1.25 if layout == "leaf" else 1.0)

    monkeypatch.setattr(cal, "measure_gemm", fake_measure)
    result = cal.calibrate(key, backend=_NoBackend(), budget_s=60, store=store)
    # Laderman at 256 runs 85x85x85 leaves: off the grid, so interpolated until timed itself, as a leaf
    assert ((85, 85, 85), "leaf") in timed and cm.GRID.count(85) == 0
    assert result.model.leaf.seconds((85, 85, 85)) == gemm_truth((85, 85, 85)) * 1.25
    assert result.measured_gemms == len(timed)
    # the vendor gemm of a plan that does not split stays contiguous, at the records' sizes
    assert {(r.m, r.k, r.n) for r in query_records(store)} <= set(result.model.gemm.points)
    assert all(layout == "leaf" for _, layout in timed)  # the synthetic store had every contiguous point


def test_a_kernels_leaves_are_read_from_the_leaf_table_and_the_vendor_gemm_from_the_contiguous_one(key):
    d = cm_resolve("strassen")
    contiguous = cm.GemmTable({(64, 64, 64): 1e-4, (128, 128, 128): 8e-4})
    leaf = cm.GemmTable({(64, 64, 64): 2e-4, (128, 128, 128): 16e-4})
    both = cm.features([d], 64, (128, 128, 128), "float32", contiguous, leaf=leaf)
    assert both.gemm_s == pytest.approx(7 * 2e-4)  # seven 64³ leaves, timed as leaves
    assert cm.features([], 64, (128, 128, 128), "float32", contiguous, leaf=leaf).gemm_s == pytest.approx(8e-4)
    assert cm.features([d], 64, (127, 127, 127), "float32", contiguous, leaf=leaf).gemm_s == pytest.approx(
        contiguous.seconds((127, 127, 127)))  # under 2·cutoff nothing splits: A and B themselves
    assert cm.features([d], 64, (128, 128, 128), "float32", contiguous).gemm_s == pytest.approx(7 * 1e-4)  # no leaf table
    assert cm.leaf_shapes([d], 64, (129, 129, 129), inside=False) == set()
    assert cm.leaf_shapes([d], 64, (127, 127, 127), inside=True) == set()


def test_a_leaf_gemm_is_timed_as_block_products_of_larger_operands(key):
    fn, products = cal._gemm_call(key, (3, 5, 2), "leaf")
    assert products == cm.LEAF_LAYOUT ** 3
    fn()  # runs the block products on views of the parents
    assert cal._gemm_call(key, (3, 5, 2))[1] == 1


def test_a_gemm_timing_is_the_median_pair_ratio_times_the_references_seconds(key, monkeypatch):
    from fmmforge.hardware import timing

    pairs = timing.Comparison(timing.Timing.of([2.0, 4.0, 6.0]), timing.Timing.of([1.0, 1.0, 2.0]))
    monkeypatch.setattr(timing, "compare", lambda *a, **kw: pairs)
    assert cal.measure_gemm(key, (2, 2, 2), ((4, 4, 4), 0.5)) == pytest.approx(3 * 0.5)  # ratios 2, 4, 3


def fake_runs(key, monkeypatch, reading) -> list:
    """codegen.bench.measure_many replaced by one that stores ``reading(plan, size, n)`` (n: the
    readings taken so far, this one included) for each plan, and the calibration cut to two
    plans at 256³; the (size, levels) of every reading go into the list returned."""
    import fmmforge.codegen.bench as bench

    taken: list = []

    def fake_measure_many(items, size, *, store=None, **kwargs):
        out = []
        for plan, _ in items:
            taken.append((size, plan.levels))
            out.append(reading(plan, size, len(taken)))
            add_record(out[-1], store)
        return out

    monkeypatch.setattr(bench, "measure_many", fake_measure_many)
    monkeypatch.setattr(cal, "CALIBRATION_PLANS", (("strassen", 0, "lowmem"), ("strassen", 1, "lowmem")))
    monkeypatch.setattr(cal, "CALIBRATION_SIZES", ((256, 256, 256),))
    return taken


def test_a_record_whose_samples_spread_is_measured_once_more(key, monkeypatch):
    def reading(plan, size, n):
        record = synthetic_record(key, plan, size, 1e-3, 1e-3)
        return dataclasses.replace(record, iqr_s=0.5e-3) if n == 1 else record  # the first taken while the CPUs were busy

    taken = fake_runs(key, monkeypatch, reading)
    assert cal._measure_records(key, [], float("inf"), _NoBackend(), Store(), None) == 3
    assert [levels for _, levels in taken] == [0, 1, 0]  # both plans of the size in one run, then the noisy one again
    usable, _ = cal.usable_records(key, Store())
    steady = cal.combined(usable)
    assert len(usable) == 3 and len(steady) == 2  # one per plan and size: the noisy reading left out
    assert all(cal.spread(u.record) <= cal.NOISY_SPREAD for u in steady)


def test_features_follow_the_kernels_peeling_and_cutoff():
    d = resolve("strassen")
    # 129 is odd: the core 128 runs Strassen, the remainder row/column/inner slice are three gemms
    assert cm.leaf_shapes([d], 64, (129, 129, 129)) == {(64, 64, 64), (128, 1, 128), (128, 129, 1), (1, 129, 129)}
    assert cm.leaf_shapes([d], 64, (127, 127, 127)) == {(127, 127, 127)}  # under 2·cutoff: one gemm
    assert cm.leaf_shapes([d, d], 64, (256, 256, 256)) == {(64, 64, 64)}


def test_gemm_table_interpolates_in_log_space_and_scales_missing_corners_by_flops():
    table = cm.GemmTable({(64, 64, 64): 1e-4, (128, 128, 128): 8e-4})
    assert table.seconds((64, 64, 64)) == 1e-4
    assert table.seconds((96, 96, 96)) == pytest.approx(1e-4 * 1.5**3)  # 96 is a grid value: flop-scaled
    assert table.seconds((80, 64, 64)) == pytest.approx(1e-4 * 80 / 64)  # log-linear between 64 and 96
    assert cm.corners((100, 64, 1)) == {(96, 64, 1), (128, 64, 1)}


# ---------------------------------------------------------------------- storage
def test_storage_round_trips_and_refuses_another_machine_or_format(key):
    store = Store()
    model = cm.CalibratedModel(key, TRUE, cm.GemmTable({(64, 64, 64): 1e-4}),
                               cm.Quality(2.5, 0.95, 20, 4, 1.5, 10), fitted_on=20, cache=3 << 20)
    cm.save_model(model, store)
    assert cm.load_model(key, store) == model  # parameters, gemm table, quality and cache size
    other = cm.ModelKey(key.device, "Other CPU|64|2.13.0|openblas", key.threads, key.dtype)
    with pytest.raises(FmmforgeError, match="no cost model fitted.*fmmforge calibrate --device cpu"):
        cm.load_model(other, store)
    with store.writing(cm.TABLES) as conn:  # a row filed under this machine but fitted on another
        conn.execute("UPDATE cost_models SET model = ?", (model.to_json().replace(key.machine, other.machine),))
    with pytest.raises(FmmforgeError, match="was fitted for"):
        cm.load_model(key, store)
    with store.writing(cm.TABLES) as conn:
        old = model.to_json().replace(f'"format": {cm.MODEL_FORMAT}', '"format": 1')  # one bandwidth, before 2
        conn.execute("UPDATE cost_models SET model = ?", (old,))
    with pytest.raises(FmmforgeError, match=f"format 1, this fmmforge reads format {cm.MODEL_FORMAT}.*calibrate"):
        cm.load_model(key, store)
    assert cm.find_model(key, store) is None


def test_records_of_another_machine_or_thread_count_never_feed_the_model(key):
    store, _ = synthetic_store(key, plans=PLANS[:2], sizes=SIZES[:2])
    plan, _ = make_plan("strassen", 1)
    add_record(synthetic_record(cm.ModelKey("cpu", "Other CPU|64|2.13.0|openblas", key.threads, "float32"),
                                plan, (512, 512, 512), 1.0, 1.0), store)
    add_record(synthetic_record(cm.ModelKey("cpu", key.machine, key.threads + 1, "float32"),
                                plan, (512, 512, 512), 1.0, 1.0), store)
    usable, skipped = cal.usable_records(key, store)
    assert len(usable) == 4 and skipped == 1  # the other thread count is skipped; the other machine is not even read
    assert all(u.record.median_s < 1.0 for u in usable)


def test_records_of_other_kernels_are_kept_but_never_reused(key):
    """A record of another emitter revision (or from before the column: NULL) describes code this
    fmmforge no longer writes: kept for reports, left out of the fit, the bench cache and the tuner."""
    from fmmforge.codegen import records
    from fmmforge.codegen.bench import cached_record
    from fmmforge.codegen.generate import EMITTER_REVISION

    store, _ = synthetic_store(key, plans=PLANS[:2], sizes=SIZES[:2])
    plan, _ = make_plan("strassen", 1, backend="torch", dtype=key.dtype)
    current = synthetic_record(key, plan, (320,) * 3, 2.0, 1.0)
    assert current.emitter == EMITTER_REVISION
    add_record(current, store)
    assert cached_record(plan, (320,) * 3, store).median_s == 2.0
    add_record(dataclasses.replace(current, median_s=1.0, emitter=EMITTER_REVISION - 1), store)
    assert cached_record(plan, (320,) * 3, store).median_s == 2.0  # the newer row is of other kernels
    with store.writing(records.TABLES) as conn:
        conn.execute("UPDATE records SET emitter = NULL WHERE median_s = 2.0")
    assert cached_record(plan, (320,) * 3, store) is None
    assert [r.emitter for r in query_records(store)][-2:] == [None, EMITTER_REVISION - 1]
    assert len(records.current_records(store)) == len(query_records(store)) - 2
    usable, skipped = cal.usable_records(key, store)
    assert len(usable) == 4 and skipped == 2


# ---------------------------------------------------------------------- the reward
def test_reward_scores_and_ranks_two_plans_as_the_model_says(key):
    from fmmforge.plugins import get_reward

    store, table = synthetic_store(key)
    model = cal.calibrate(key, backend=_NoBackend(), budget_s=0, store=store).model
    reward = get_reward("latency-model")
    assert reward.cheap
    ctx = RewardContext(device="cpu", size=(768, 768, 768), dtype="float32", levels=1)
    scores = {}
    for name in ("strassen", "laderman"):
        d = resolve(name)
        result = reward.score(d, ctx)
        predicted = model.predict_s([d], 64, (768, 768, 768))
        assert result.value == pytest.approx(model.predict_s([], 64, (768, 768, 768)) / predicted)
        assert result.parts["predicted kernel ms"] == pytest.approx(predicted * 1e3, abs=1e-4)
        scores[name] = (result.value, predicted)
    faster = min(scores, key=lambda n: scores[n][1])
    assert max(scores, key=lambda n: scores[n][0]) == faster


def test_reward_without_a_model_says_to_calibrate(cli):
    code, out, err = cli("score", "strassen", "--reward", "latency-model", "--device", "cpu", "--size", "512")
    assert code == 2
    one_error(err, "no cost model", "fmmforge calibrate --device cpu")


def test_reward_needs_a_size_and_a_device(cli):
    code, _, err = cli("score", "strassen", "--reward", "latency-model", "--device", "cpu")
    assert code == 2 and "--size" in one_error(err)
    code, _, err = cli("score", "strassen", "--reward", "latency-model", "--size", "512")
    assert code == 2 and "--device" in one_error(err)


def test_an_unreadable_stored_model_is_one_line(cli, key):
    store = Store()
    cm.save_model(cm.CalibratedModel(key, TRUE, cm.GemmTable({(64, 64, 64): 1e-4})), store)
    with store.writing(cm.TABLES) as conn:
        conn.execute("UPDATE cost_models SET model = ?", ('{"format": 1, "parameters": [1, 2]',))
    code, _, err = cli("score", "strassen", "--reward", "latency-model", "--device", "cpu", "--size", "512")
    assert code == 2
    one_error(err, "unreadable", "calibrate")


# ---------------------------------------------------------------------- the command
def test_calibrate_on_an_empty_store_without_budget_says_what_is_missing(cli):
    code, out, err = cli("calibrate", "--device", "cpu", "--budget", "0")
    assert code == 2
    one_error(err, "at least 10 benchmark records", "has 0", "--budget", "fmmforge bench --device cpu")
    assert cm.find_model(cm.current_key("cpu", "float32"), Store()) is None


def test_calibrate_will_not_fit_records_of_one_or_two_sizes(cli, key):
    # 14 records at two sizes cannot tell the gemm time from the passes and the per-call cost: with
    # no budget to measure more, one line saying so, and nothing stored
    synthetic_store(key, sizes=SIZES[:2])  # 7 plans at 2 sizes
    code, out, err = cli("calibrate", "--budget", "0")
    assert code == 2
    one_error(err, "at 3 sizes or more", "has 14 at 2 size(s)", "--budget")
    assert cm.find_model(key, Store()) is None


@pytest.mark.parametrize("args, words", [
    (("--budget", "-1"), ("--budget",)),
    (("--budget", "nan"), ("--budget",)),
    (("--device", "nope"), ("unknown device",)),
    (("--device", "tpu-v4"), ("spec-only",)),
    (("--dtype", "float16"), ("dtype",)),
    (("--threads", "-2"), ("--threads",)),
    (("--budget", "soon"), ("--budget",)),
])
def test_calibrate_bad_options_exit_2_with_one_line(cli, args, words):
    code, out, err = cli("calibrate", *args)
    assert code == 2
    one_error(err, *words)


def test_calibrate_prints_held_out_error_and_the_report_uses_the_model(cli, key):
    from fmmforge.reports import build_report

    store, _ = synthetic_store(key)
    code, out, err = cli("calibrate", "--budget", "0")
    assert code == 0, err
    assert "held-out (leave-one-out) median |error| 0.00 %" in out and "rank correlation" in out
    report = build_report(store, device="cpu")
    section = next(s for s in report.sections if s.title.startswith("6."))
    assert any("median |error| 0.0 %" in note for note in section.notes), section.notes
    rows = report.records
    assert rows["predicted_ms"].to_numpy() == pytest.approx(rows["kernel_median_ms"].to_numpy(), rel=1e-6)


def test_interrupted_calibration_keeps_every_record_taken(cli, key, monkeypatch):
    import fmmforge.codegen.bench as bench

    calls = []

    def fake_measure_many(items, size, *, store=None, **kwargs):
        if calls:
            raise KeyboardInterrupt
        out = []
        for plan, _ in items:
            calls.append(size)
            out.append(synthetic_record(key, plan, size, 1e-3, 1e-3))
            add_record(out[-1], store)
        return out  # as bench.measure_many does: the run's records stored together

    monkeypatch.setattr(bench, "measure_many", fake_measure_many)
    code, out, err = cli("calibrate", "--budget", "60")
    assert code == 130
    assert "interrupted" in err and "kept" in err
    assert [(r.m, r.k, r.n) for r in query_records(Store(), device="cpu")] == calls


# ---------------------------------------------------------------------- the fused layout
@pytest.mark.parametrize("name", ["strassen", "strassen-winograd", "laderman", "strassen*strassen"])
def test_a_fused_plan_is_costed_from_its_compiled_passes(name):
    from fmmforge.codegen.fused import fused_level, traffic_bytes

    d = resolve(name)
    n, m, p = d.format
    size = (256 * n, 256 * m, 256 * p)
    table = cm.GemmTable({s: gemm_truth(s) for s in cm.union_corners({(256, 256, 256), size})})
    low = cm.features([d], 64, size, "float32", table, CACHE)
    fused = cm.features([d], 64, size, "float32", table, CACHE, variant="fused")
    assert fused.gemm_s == pytest.approx(low.gemm_s)  # the same leaves
    assert low.fused_bytes == 0
    lv = fused_level(d, "set")
    block = 256 * 256 * 4
    # a group's sums as the kernel forms them: by torch passes, a sum of t terms t - 1 passes of
    # three blocks (one of two for t = 1); by the compiled pass, its blocks (codegen.fused.Group.moved)
    sides = [(g, side, g.a_sums if side == "A" else g.b_sums) for g in lv.groups for side in "AB"]
    by_torch = [f for g, side, sums in sides if g.sums_pass(side) == "torch" for f in sums]
    by_numba = [(g, side) for g, side, sums in sides if sums and g.sums_pass(side) == "numba"]
    assert bool(by_numba) == (name in ("laderman", "strassen*strassen"))
    assert fused.cached_bytes + fused.streamed_bytes == sum(2 if len(f.terms) == 1 else 3 * (len(f.terms) - 1)
                                                            for f in by_torch) * block
    assert fused.passes == (sum(max(1, len(f.terms) - 1) for f in by_torch) + len(by_numba)
                            + sum(ph.updates for ph in lv.phases))
    # the torch passes among them are counted apart too (their extra cost inside a fused kernel)
    assert fused.fused_torch_passes == sum(max(1, len(f.terms) - 1) for f in by_torch) and low.fused_torch_passes == 0
    # each C update: each product it combines read once, each C block it reaches written once (and
    # read too in an update that accumulates: the phases after the first)
    elements = sum(g.moved(side) for g, side in by_numba)
    for ph in lv.phases:
        outputs = [t for t in ph.combine if t is not None]
        elements += len({s for t in outputs for s, _ in t}) + len(outputs) * (2 if ph.accumulate else 1)
    assert fused.fused_bytes == elements * block
    least = traffic_bytes([d], size, 4, 64)
    assert fused.bytes >= least  # never below what the additions must move
    _, counts = cm.fused_level_passes(d, "acc", (256, 256, 256), 4, CACHE)
    assert sum(counts.values()) == d.rank


def test_without_fused_records_a_fused_byte_costs_a_streamed_one():
    rows = [cm.Features(gemm_s=1e-3 * (i + 1), streamed_bytes=1e6 * (i % 3 + 1), passes=i % 4, calls=1)
            for i in range(12)]
    seconds = [f.gemm_s + f.streamed_bytes / 10e9 + f.passes * 1e-6 for f in rows]
    theta = cm.fit_parameters(rows, seconds)
    assert theta[cm.FEATURES.index("fused_bytes")] == pytest.approx(1 / 10e9, rel=1e-6)


def test_an_unknown_layout_is_refused():
    with pytest.raises(FmmforgeError, match="batched"):
        cm.features([resolve("strassen")], 64, (512,) * 3, "float32", cm.GemmTable({(1, 1, 1): 1.0}),
                    variant="batched")


# ---------------------------------------------------------------------- the parallel layout
def test_a_parallel_plan_is_costed_with_level_zeros_per_product_passes():
    d = resolve("strassen")
    size = (1024,) * 3
    table = cm.GemmTable({s: gemm_truth(s) for s in cm.union_corners({(256, 256, 256), size})})
    low = cm.features([d, d], 64, size, "float32", table, 0)
    par = cm.features([d, d], 64, size, "float32", table, 0, variant="parallel")
    assert par.gemm_s == pytest.approx(low.gemm_s)  # the same 49 leaves
    # Strassen's level 0 one product at a time: 5 A-side and 5 B-side additions, and 12 C updates
    # (4 first writes c = w·P reading one block, 8 adds reading two), each over a 512² block
    deeper = dataclasses.replace(cm.features([d], 64, (512,) * 3, "float32", table, 0), calls=0).times(7)
    top = cm.Features(streamed_bytes=(10 * 3 + 4 * 2 + 8 * 3) * 512 * 512 * 4, passes=22, calls=1)
    assert par.astuple() == pytest.approx((top + deeper).astuple())


def test_records_of_the_parallel_layout_do_not_feed_the_fit(key):
    assert "parallel" in cm.VARIANTS and "parallel" not in cm.FITTED_VARIANTS
    store = Store()
    for variant in ("lowmem", "parallel"):
        plan, _ = make_plan("strassen", 1, backend="torch", dtype="float32", variant=variant)
        got = cal.plan_schemes(synthetic_record(key, plan, (512,) * 3, 1e-3, 1e-3), store, {})
        assert (got is None) == (variant == "parallel")


def test_calibrate_measures_the_repeat_size_twice_and_reports_how_far_records_repeat(key, monkeypatch):
    speedups = iter([1.00, 1.20, 1.05, 1.14])  # the second run reads +5 % and -5 %
    taken = fake_runs(key, monkeypatch, lambda plan, size, n: synthetic_record(key, plan, size, 1e-3, next(speedups) * 1e-3))
    monkeypatch.setattr(cal, "REPEAT_SIZE", (256, 256, 256))
    assert cal._measure_records(key, [], float("inf"), _NoBackend(), Store(), None) == 4
    assert taken == [((256,) * 3, 0), ((256,) * 3, 1)] * 2  # the size, then all its plans once more
    usable, _ = cal.usable_records(key, Store())
    floor, pairs = cal.repeatability(usable)
    assert pairs == 2 and floor == pytest.approx((1.05 / 1.00 - 1 + 1.20 / 1.14 - 1) / 2 * 100)  # larger over smaller
    assert cal.repeatability(cal.combined(usable)) == (None, 0)
    speedups = sorted(u.record.speedup for u in cal.combined(usable))  # two steady readings each: geometric mean
    assert speedups == pytest.approx(sorted([(1.00 * 1.05) ** 0.5, (1.20 * 1.14) ** 0.5]))
    q = cm.Quality(3.0, 0.9, 4, 1, floor, pairs)
    assert "5.13 %" in q.repeat_line() and "2 pairs" in q.repeat_line()
    assert cm.Quality(3.0, 0.9, 4, 1).repeat_line() is None


def test_no_repeat_run_when_calibrate_did_not_measure_the_repeat_size(key, monkeypatch):
    import fmmforge.codegen.bench as bench

    sizes = []
    monkeypatch.setattr(bench, "measure_many", lambda items, size, **kw: sizes.append(size) or [None] * len(items))
    monkeypatch.setattr(cal, "CALIBRATION_PLANS", (("strassen", 0, "lowmem"),))
    monkeypatch.setattr(cal, "CALIBRATION_SIZES", ((256, 256, 256), (128, 128, 128)))
    monkeypatch.setattr(cal, "REPEAT_SIZE", (512, 512, 512))
    cal._measure_records(key, [], float("inf"), _NoBackend(), Store(), None)
    assert sizes == [(256,) * 3, (128,) * 3]


def test_calibrate_prints_how_far_records_repeat_when_a_plan_was_measured_twice(cli, key):
    store, _ = synthetic_store(key)
    first = query_records(store, device=key.device)[0]
    add_record(dataclasses.replace(first, speedup=first.speedup * 1.03, iqr_s=first.median_s), store)  # noisier: not fitted
    code, out, err = cli("calibrate", "--budget", "0")
    assert code == 0, err
    assert "two readings of one plan differ by a median 3.00 % (1 pair)" in out
    assert cm.load_model(key, store).quality.repeat_pairs == 1


def test_the_commands_default_budget_is_calibrates():
    import inspect

    from fmmforge.core.app.tune_commands import calibrate_budget, calibrate_cmd

    assert calibrate_budget(inspect.signature(calibrate_cmd).parameters["budget"].default) == cal.DEFAULT_BUDGET_S


def test_a_fused_call_with_a_long_k_is_costed_in_the_strips_the_kernel_runs():
    # the kernel cuts K where its workspaces would pass 2 C (codegen.runtime.runtime_fused._k_width): the
    # model walks the same strips, so its leaves are the strips' blocks, and the first strip sets
    # C while the others accumulate
    from fmmforge.codegen.fused import k_width

    decomps = make_plan("strassen-winograd", 1, variant="fused")[1]
    shape = (64, 1024, 32)
    width = k_width(decomps, 4, shape)
    assert width < 1024 and 1024 % width == 0
    assert cm.leaf_shapes(decomps, 4, shape, variant="fused") == {(32, width // 2, 16)}
    assert cm.leaf_shapes(decomps, 4, shape) == {(32, 512, 16)}  # the low-memory kernel does not cut
    table = cm.GemmTable({s: gemm_truth(s) for s in cm.union_corners({(32, width // 2, 16), (32, 512, 16)})})
    whole = cm.features(decomps, 4, shape, "float32", table, CACHE, variant="fused")
    strips = [cm.features(decomps, 4, (64, width, 32), "float32", table, CACHE, variant="fused")]
    walker = cm._Walker(decomps, 4, 4, table, CACHE, variant="fused")
    acc = walker.run(0, "acc", (64, width, 32))
    strips += [acc] * (1024 // width - 1)
    assert whole.gemm_s == pytest.approx(sum(f.gemm_s for f in strips))
    assert whole.fused_bytes == sum(f.fused_bytes for f in strips)


# ---------------------------------------------------------------------- a budget planned (issue 31)
class FakeClock:
    """codegen.calibrate's clock, advanced by the fake measurements below instead of by time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def fake_machine(key, monkeypatch, clock: FakeClock, slowdown: float = 1.0, noisy: int = 0) -> None:
    """measure_many and measure_gemm replaced by ones that advance ``clock`` by what such a run takes
    on a machine whose gemm is :func:`gemm_truth`: generating each kernel (numba compiles a fused
    one), the reference and the checks, then every round of the kernels and the vendor matmul, all
    ``slowdown`` times slower (a busy machine); the records of the first ``noisy`` runs spread."""
    import fmmforge.codegen.bench as bench

    runs: list = []

    def fake_measure_many(items, size, *, store=None, rounds=5, min_sample_s=0.05, progress=None, **kwargs):
        vendor = gemm_truth(size)
        start = clock.now
        clock.now += 0.8 + sum(2.6 if plan.variant == "fused" else 0.25 for plan, _ in items)
        clock.now += (4 + 2 * len(items)) * vendor + rounds * (len(items) + 1) * max(vendor, min_sample_s) * 1.05
        clock.now = start + (clock.now - start) * slowdown
        if progress:
            progress(f"timing {len(items)} kernel(s) and the vendor matmul round-robin, {rounds} rounds")
        runs.append(size)
        spread = 0.5 if len(runs) <= noisy else 0.02
        out = [dataclasses.replace(synthetic_record(key, plan, size, vendor * (1 + 0.1 * plan.levels), vendor),
                                   iqr_s=spread * vendor * (1 + 0.1 * plan.levels)) for plan, _ in items]
        for record in out:
            add_record(record, store)
        return out

    def fake_measure_gemm(k, shape, reference=None, layout="contiguous"):
        products = cm.LEAF_LAYOUT ** 3 if layout == "leaf" else 1
        clock.now += 9 * (max(gemm_truth(shape) * products, 0.02) + max(gemm_truth(cal.REFERENCE_GEMM), 0.02))
        return gemm_truth(shape) * (1.2 if layout == "leaf" else 1.0)

    monkeypatch.setattr(cal, "time", clock)
    monkeypatch.setattr(bench, "measure_many", fake_measure_many)
    monkeypatch.setattr(cal, "measure_gemm", fake_measure_gemm)


@pytest.mark.parametrize("slowdown, noisy", [(1.0, 0), (1.25, 2)])
def test_calibrate_on_a_fresh_store_measures_three_sizes_within_its_budget(key, monkeypatch, slowdown, noisy):
    # `calibrate --budget 60` ran twice its budget and failed: every plan at each size, sizes in
    # turn, until the deadline, and the third size never came. Here all plans at one size take
    # 22 s of the fake clock: a 40 s budget fits two such runs, and no fit. Runs slower than their
    # estimates, and records that spread (measured again), still leave the third size its time.
    clock = FakeClock()
    fake_machine(key, monkeypatch, clock, slowdown, noisy)
    seen = []
    result = cal.calibrate(key, backend=_NoBackend(), budget_s=40, store=Store(),
                           progress=lambda phase, done, total, label: seen.append((phase, label)))
    sizes = {(r.m, r.k, r.n) for r in query_records(Store(), device="cpu")}
    assert len(sizes) >= cal.MIN_SIZES and result.model.fitted_on >= cal.MIN_RECORDS
    assert clock.now <= 40  # nothing started that would pass the budget
    assert any(phase == "records" and "round-robin" in label for phase, label in seen)  # progress inside a run


def test_the_plan_reaches_three_sizes_within_the_budget_and_refuses_a_budget_too_small():
    missing = [(size, list(cal.CALIBRATION_PLANS)) for size in cal.CALIBRATION_SIZES]
    runs = cal.plan_runs(missing, gemm_truth, 28.0)
    assert len({r.size for r in runs}) >= cal.MIN_SIZES and sum(len(r.plans) for r in runs) >= cal.MIN_RECORDS
    assert sum(r.cost_s for r in runs) <= 28.0
    assert all(list(r.plans) == [p for p in cal.CALIBRATION_PLANS if p in r.plans] for r in runs)  # cheapest first
    everything = cal.plan_runs(missing, gemm_truth, float("inf"))
    assert sum(len(r.plans) for r in everything) == len(cal.CALIBRATION_SIZES) * len(cal.CALIBRATION_PLANS)
    assert cal.plan_runs(missing, gemm_truth, 5.0) == []
    # records at two sizes already: one more size will do
    two = cal.plan_runs(missing[2:], gemm_truth, 10.0, have_sizes=[(1, 1, 1), (2, 2, 2)], have_records=8)
    assert len({r.size for r in two}) >= 1 and sum(r.cost_s for r in two) <= 10.0


def test_calibrate_with_a_budget_too_small_for_three_sizes_says_what_budget_will_do(key, monkeypatch):
    clock = FakeClock()
    fake_machine(key, monkeypatch, clock)
    with pytest.raises(FmmforgeError, match=r"--budget \d+s or more"):
        cal.calibrate(key, backend=_NoBackend(), budget_s=6, store=Store())
    assert query_records(Store()) == []  # nothing measured that could not be fitted


@pytest.mark.parametrize("text, seconds", [("2m", 120.0), ("90s", 90.0), ("240", 240.0), ("1m30s", 90.0), ("0", 0.0)])
def test_calibrate_takes_tunes_duration_grammar(cli, key, monkeypatch, text, seconds):
    store, _ = synthetic_store(key)
    monkeypatch.setattr(cal, "measure_gemm", lambda k, shape, reference=None, layout="contiguous": gemm_truth(shape))
    real, budgets = cal.calibrate, []
    monkeypatch.setattr(cal, "calibrate", lambda key, **kw: budgets.append(kw["budget_s"]) or real(key, **kw))
    code, out, err = cli("calibrate", "--budget", text)
    assert code == 0, err
    assert budgets == [seconds]


# ---------------------------------------------------------------------- a poor fit (issue 31)
NOISE = (0.35, 2.8, 1.0, 0.5, 1.9, 0.7, 3.0)  # records no model of these features can predict


def test_a_poor_fit_is_stored_as_poor_and_calibrate_says_so_in_one_line(cli, key):
    store, _ = synthetic_store(key, noise=NOISE)
    code, out, err = cli("calibrate", "--budget", "0")
    assert code == 0, err
    model = cm.load_model(key, store)
    assert model.quality.median_ape > cm.POOR_ERROR_PCT and model.quality.poor and not model.trusted
    lines = [line for line in out.splitlines() if "the fit is poor" in line]
    assert len(lines) == 1 and "prior model" in lines[0] and "calibrate" in lines[0]
    with store.reading(cm.TABLES) as conn:
        stored = json.loads(conn.execute("SELECT model FROM cost_models").fetchone()[0])
    assert stored["format"] == cm.MODEL_FORMAT and stored["quality"]["verdict"] == "poor"


def test_a_good_fit_is_good_and_the_threshold_follows_the_repeat_floor():
    assert cm.Quality(3.0, 0.9, 20, 3).verdict == "good"
    assert cm.Quality(67.0, 0.2, 12, 0).verdict == "poor"
    assert cm.Quality(20.0, 0.9, 20, 3, repeat_pct=8.0).verdict == "good"  # a machine too noisy to do better
    assert cm.Quality(20.0, 0.9, 20, 3, repeat_pct=2.0).verdict == "poor"
    assert cm.CalibratedModel(cm.ModelKey("cpu", "m", 1, "float32"), TRUE, cm.GemmTable()).trusted  # no quality: as before


def test_a_stored_model_of_format_7_is_read_and_judged_from_its_numbers(key):
    store = Store()
    for q in (cm.Quality(67.0, 0.2, 12, 1), cm.Quality(4.0, 0.95, 30, 3, 1.5, 4)):
        model = cm.CalibratedModel(key, TRUE, cm.GemmTable({(64, 64, 64): 1e-4}), q, fitted_on=q.records)
        old = json.loads(model.to_json())
        old["format"] = 7
        for field in ("verdict", "threshold_pct"):  # what format 7 did not store
            del old["quality"][field]
        with store.writing(cm.TABLES) as conn:
            conn.execute("INSERT OR REPLACE INTO cost_models VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key.device, key.machine, key.threads, key.dtype, 7, json.dumps(old), "2026-12-07"))
        got = cm.load_model(key, store)
        assert got.quality == q and got.format == 7
        assert got.trusted == (q.median_ape < cm.POOR_ERROR_PCT)


def test_the_latency_model_reward_refuses_a_poor_model_with_what_to_do(cli, key):
    synthetic_store(key, noise=NOISE)
    assert cli("calibrate", "--budget", "0")[0] == 0
    code, out, err = cli("score", "strassen", "--reward", "latency-model", "--device", "cpu", "--size", "512")
    assert code == 2
    one_error(err, "poor", "held-out error", "fmmforge calibrate")


def test_the_prior_model_measures_the_pass_bandwidths_once_per_process(monkeypatch):
    # a tune builds the prior model in every round while its records are too few: the bandwidths
    # are measured the first time only, so the prior ranks alike in every round
    import fmmforge.hardware.timing as timing

    seen = []
    monkeypatch.setattr(timing, "pass_bandwidth", lambda dtype, threads, size: seen.append(size) or 1e10 + size)
    cm._prior_bandwidths.cache_clear()
    key = cm.ModelKey("cpu", "Some CPU|2|2.13.0|mkl", 2, "float32")
    first, again = cm.prior_model(key, Store()), cm.prior_model(key, Store())
    assert len(seen) == 2 and first.parameters == again.parameters
    cm._prior_bandwidths.cache_clear()
