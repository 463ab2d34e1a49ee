"""`fmmforge tune` and codegen.tune: schemes collected by the engine, plans ranked by a model,
the best measured for real, the choice stored (or cleared), Ctrl-C, spec-only chips, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest

from fmmforge.codegen.choices import clear_choice, list_choices, lookup_choice, shape_class, store_choice
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.records import query_records
from fmmforge.core import catalogue, transforms
from fmmforge.codegen.tune import candidates, loop, models, policy
from fmmforge.codegen.tune.candidates import orient
from fmmforge.codegen.tune.request import Candidate, Measured, TuneRequest, TuneResult
from fmmforge.core.app import tune_commands
from fmmforge.core.app.tune_commands import tune
from fmmforge.core.contracts import Budget, SearchEvents, SearchRequest
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.engine import FlipGraphEngine
from fmmforge.core.store import Store
from fmmforge.hardware.devices import machine_key
from tests.helpers import one_error

TINY = dict(shape=(512, 512, 512), budget_s=25.0, max_levels=1, top_k=1, pairs=3, collect=3, min_leaf=128,
            formats=((2, 2, 2), (2, 2, 4)))


# ---------------------------------------------------------------------- the engine collects
def test_the_engine_collects_distinct_schemes_at_the_start_rank():
    start = transforms.kron(catalogue.resolve("strassen-winograd"), catalogue.resolve("strassen-winograd"))
    got = []
    req = SearchRequest(start, field="Z", target_rank=49, budget=Budget(seconds=30), collect=12, seed=2)
    result = FlipGraphEngine().run(req, SearchEvents(found=lambda f: got.append(f)))
    targets = [f.decomposition for f in got if f.kind == "target"]
    assert len(targets) >= 12 and len({d.fingerprint for d in targets}) == len(targets)
    assert all(d.rank == 49 and d.field == "Z" and d.verify().valid for d in targets)
    assert result.best.rank == 49


def test_collecting_needs_a_target_rank_and_a_count_of_at_least_zero():
    s = catalogue.resolve("strassen")
    with pytest.raises(FmmforgeError, match="target rank"):
        SearchRequest(s, field="Z", budget=Budget(seconds=1), collect=3)
    with pytest.raises(FmmforgeError, match="collect"):
        SearchRequest(s, field="Z", target_rank=7, budget=Budget(seconds=1), collect=-1)


# ---------------------------------------------------------------------- schemes and plans
@pytest.mark.parametrize("fmt", [(2, 3, 2), (3, 2, 2), (2, 2, 3), (3, 2, 4), (4, 3, 2)])
def test_orient_turns_a_scheme_into_every_order_of_its_format(fmt):
    d = catalogue.resolve("alphatensor:2,3,4") if 4 in fmt else catalogue.resolve("strassen-2x2x3")
    turned = orient(d, fmt)
    assert turned is not None and turned.format == fmt and turned.rank == d.rank and turned.verify().valid
    assert orient(d, (5, 5, 5)) is None


def test_starting_schemes_are_verified_z_schemes_of_the_format():
    found = candidates.starting_schemes((4, 4, 4), Store())
    names = [n for n, _ in found]
    assert "strassen*strassen" in names and "alphatensor:4,4,4" in names
    assert all(d.format == (4, 4, 4) and d.field == "Z" and d.verify().valid for _, d in found)
    assert len({d.fingerprint for _, d in found}) == len(found)


def test_plans_keep_their_leaves_at_least_min_leaf():
    request = TuneRequest(shape=(4096, 4096, 2048), max_levels=3, min_leaf=512)
    top = [("strassen", catalogue.resolve("strassen")), ("laderman", catalogue.resolve("laderman"))]
    inner = [("strassen-winograd", catalogue.resolve("strassen-winograd"))]
    plans = candidates.level_structures(top, inner, request.shape, request)
    assert plans
    for levels in plans:
        dims = [math.prod(d.format[i] for _, d in levels) for i in range(3)]
        assert all(s // x >= 512 for s, x in zip(request.shape, dims))
    assert max(len(p) for p in plans) == 2  # 2048 / 2^3 = 256 < 512


def test_the_proxy_ranks_fewer_passes_first_at_equal_rank():
    from fmmforge.codegen.costmodel import CalibratedModel, GemmTable, current_key

    model = CalibratedModel(current_key("cpu", "float32"), (1.0, 1e-11, 1e-10, 0.0, 0.0, 0.0, 0.0),
                            GemmTable({(1024,) * 3: 1e-2}), cache=1 << 20)
    ss, ww = catalogue.resolve("strassen*strassen"), catalogue.resolve("strassen-winograd*strassen-winograd")
    assert sum(candidates.side_passes(ss)) < sum(candidates.side_passes(ww))
    fitted = models.FittedModel(model, 64)
    assert fitted.estimate_s([ss], (8192,) * 3) < fitted.estimate_s([ww], (8192,) * 3)


def test_side_passes_follow_the_kernels_schedule_not_the_eliminated_additions():
    """Strassen⊗Strassen has more additions after CSE than Winograd⊗Winograd, but the low-memory
    schedule (one workspace per side) makes fewer passes for it: the tuner ranks by the passes."""
    from fmmforge.codegen.schedule import estimate_side_passes, schedule_level, side_passes
    from fmmforge.core.additions import eliminate

    ss, ww = catalogue.resolve("strassen*strassen"), catalogue.resolve("strassen-winograd*strassen-winograd")
    cse = [sum(side.eliminated for side in eliminate(d).sides) for d in (ss, ww)]
    assert cse[0] > cse[1]
    assert sum(candidates.side_passes(ss)) < sum(candidates.side_passes(ww))
    for name in ("strassen", "laderman", "alphatensor:2,4,4", "alphatensor:3,3,3"):
        d = catalogue.resolve(name)
        full = side_passes(schedule_level(d, "set", search_steps=0).ops)
        assert abs(sum(estimate_side_passes(d)) - sum(full)) <= 0.15 * sum(full)


# ---------------------------------------------------------------------- the choice
def _measured(name: str, speedup: float, predicted: float = 1.2) -> Measured:
    plan, decomps = make_plan(name, 1, dtype="float32", device="cpu")
    c = Candidate(tuple(decomps), (name,), 1e-3 / predicted, predicted)
    return Measured(c, speedup, 1e-3 / speedup, 1e-3, plan, None)


def _finish(measured: list[Measured], **kw) -> TuneResult:
    request = TuneRequest(shape=(1024, 1024, 1024), **kw)
    result = TuneResult(request, measured=list(measured), interrupted=True)  # interrupted: no confirm runs
    return loop.finish(result, Store(), 0.0, lambda *a: None, [None])


def test_the_fastest_measured_is_stored_with_its_prediction():
    result = _finish([_measured("strassen", 1.04, 1.3), _measured("strassen-winograd", 1.08, 1.25)])
    assert result.best is not None and result.best.candidate.names == ("strassen-winograd",)
    got = lookup_choice("cpu", machine_key(), "float32", shape_class(1024, 1024, 1024))
    assert got is not None and got.algorithms == ("strassen-winograd",)
    assert got.speedup == pytest.approx(1.08) and got.predicted_speedup == pytest.approx(1.25)


def test_the_finalists_are_one_per_family_and_the_choice_follows_their_run_together(monkeypatch):
    # strassen and strassen-winograd at one level are one family (<2,2,2>, low-memory): only the
    # faster is a finalist, and the fourth family (<2,2,2> fused) is left out
    lowmem = _measured("strassen-winograd", 1.02)
    fused = dataclasses.replace(lowmem, candidate=dataclasses.replace(lowmem.candidate, variant="fused"))
    measured = [_measured("strassen", 1.10), _measured("strassen-winograd", 1.09), _measured("laderman", 1.05),
                _measured("strassen*strassen", 1.07), fused]
    final = policy.finalists_of(measured)
    assert [m.candidate.names for m in final] == [("strassen",), ("strassen*strassen",), ("laderman",)]
    # plans of fewer families than finalists (a tune of one format): the next fastest fill the rest
    few = policy.finalists_of(measured[:2] + [fused])
    assert len(few) == 3 and few[0] is measured[0] and few[1] is fused and few[2] is measured[1]
    # measured again together: laderman first there. The choice is that run's (its first reading,
    # 1.05, was lower than strassen*strassen's 1.07, and strassen's 1.10 was a lucky one)
    again = {"strassen": 1.01, "strassen*strassen": 1.06, "laderman": 1.08}
    seen = []

    def remeasure(cands, request, store, notes, say=None):
        seen.append([c.names for c in cands])
        return [_measured(c.names[0], again[c.names[0]]) for c in cands]

    result = TuneResult(TuneRequest(shape=(1024, 1024, 1024)), measured=measured, measure_seconds=[1.0])
    result = loop.finish(result, Store(), time.monotonic() + 60, lambda *a: None, [None], remeasure)
    assert seen == [[m.candidate.names for m in final]]  # one run, the three finalists
    assert result.best is not None and result.best.candidate.names == ("laderman",)
    assert result.best.speedup == pytest.approx(1.08)  # the confirming run's reading is what is stored
    got = lookup_choice("cpu", machine_key(), "float32", shape_class(1024, 1024, 1024))
    assert got is not None and got.algorithms == ("laderman",) and got.speedup == pytest.approx(1.08)


def test_with_no_time_left_to_confirm_the_finalists_their_first_readings_choose():
    # a tune whose budget was spent by its rounds: no finalist is measured again, and the fastest
    # first reading (1.27x) is the choice, said so, not the vendor matmul
    measured = [_measured("strassen", 1.27), _measured("laderman", 1.05)]

    def remeasure(cands, request, store, notes, say=None):
        raise AssertionError("no time was left to measure again")

    result = TuneResult(TuneRequest(shape=(1024, 1024, 1024)), measured=measured, measure_seconds=[30.0])
    result = loop.finish(result, Store(), time.monotonic() + 1, lambda *a: None, [None], remeasure)
    assert result.best is not None and result.best.candidate.names == ("strassen",)
    assert any("not measured again; the choice rests on the first readings" in n for n in result.notes)
    got = lookup_choice("cpu", machine_key(), "float32", shape_class(1024, 1024, 1024))
    assert got is not None and got.algorithms == ("strassen",) and got.speedup == pytest.approx(1.27)


def test_when_nothing_beats_the_vendor_matmul_the_choice_is_removed():
    plan, _ = make_plan("strassen", 1, dtype="float32", device="cpu")
    cls = shape_class(1024, 1024, 1024)
    store_choice(plan, machine=machine_key(), shape=cls, speedup=1.3, baseline_median_s=1e-3)
    result = _finish([_measured("strassen", 1.005), _measured("laderman", 0.9)])
    assert result.best is None and result.choice is None
    assert lookup_choice("cpu", machine_key(), "float32", cls) is None
    assert clear_choice("cpu", machine_key(), "float32", cls) is False


# ---------------------------------------------------------------------- the loop, for real
def test_a_tiny_budget_tune_measures_validated_kernels_and_decides():
    seen = []
    result = tune(TuneRequest(**TINY), progress=lambda p: seen.append(p.phase))
    assert {"search", "rank", "measure", "done"} <= set(seen)
    assert result.found_by_engine > 0 and result.measured and not result.interrupted
    records = query_records(None, m=512, k=512, n=512)
    assert records and all(r.max_error is not None and r.max_error <= r.error_bound for r in records)
    measured = {json.loads(r.plan)["fingerprints"][0] for r in records if r.levels == 1}
    assert {m.candidate.decomps[0].fingerprint for m in result.measured} <= measured
    choice = lookup_choice("cpu", machine_key(), "float32", (512, 512, 512))
    if result.best is None:
        assert choice is None
    else:
        assert result.best.speedup > 1.01 and choice is not None
        assert choice.fingerprints == tuple(d.fingerprint for d in result.best.candidate.decomps)
        for name in choice.algorithms:  # the names the plan uses resolve to the tuned schemes
            assert catalogue.resolve(name).fingerprint in choice.fingerprints


def test_ctrl_c_keeps_what_was_measured_and_a_rerun_does_not_measure_it_again():
    def progress(p):  # Ctrl-C as the second round (or the finalists' re-measurement) starts
        if p.phase == "confirm" or (p.phase == "measure" and p.text.startswith("round 2")):
            raise KeyboardInterrupt

    first = tune(TuneRequest(**{**TINY, "calibrate_share": 0.0}), progress=progress)  # no calibration records
    assert first.interrupted and first.rounds >= 1 and first.measured and first.confirmed == []
    kept = [json.loads(r.plan)["fingerprints"] for r in query_records(None, m=512, k=512, n=512)]
    assert all([d.fingerprint for d in m.candidate.decomps] in kept for m in first.measured)
    again = tune(TuneRequest(**{**TINY, "budget_s": 1.0, "collect": 0, "calibrate_share": 0.0}))
    assert any(f"{len(first.measured)} candidate(s) measured at this shape before are not measured again" in note
               for note in again.notes)


def test_ctrl_c_inside_a_round_records_nothing_of_that_round():
    def progress(p):
        if p.phase == "measure" and "round-robin" in p.text:
            raise KeyboardInterrupt

    first = tune(TuneRequest(**{**TINY, "calibrate_share": 0.0}), progress=progress)
    assert first.interrupted and first.measured == [] and first.best is None
    assert query_records(None, m=512, k=512, n=512) == []


def test_the_first_round_measures_the_anchors_beside_the_top_k():
    starts = []

    def progress(p):
        if p.phase == "measure" and p.text.startswith("round 1:") and not starts:
            starts.append(p.text)  # the round's first message names every plan it measures
            raise KeyboardInterrupt  # Ctrl-C there: what the round plans is known, nothing need be timed

    # a budget no setup on a loaded machine can use up before round 1 (with 40 s, a fresh clone's
    # full suite once reached the deadline first); the interrupt ends the tune at round 1's start
    result = tune(TuneRequest(**{**TINY, "budget_s": 900.0, "calibrate_share": 0.0, "collect": 0}), progress=progress)
    assert result.rounds == 1 and result.interrupted and starts
    planned = starts[0].count("x predicted)")
    assert planned >= 2 and "strassen-winograd (1 level" in starts[0]  # top_k is 1 (either layout)


class _FlopModel:
    """A stand-in cost model (codegen.tune.models.CostModel): leaf flops at 1e-11 s each, nothing for additions."""
    name = "flops"
    analytic = False
    trusted = True

    def predict_s(self, decomps, shape, variant="lowmem", remainder="peel"):
        blocks, products = list(shape), 1
        for d in decomps:
            blocks = [b // f for b, f in zip(blocks, d.format)]
            products *= d.rank
        return products * math.prod(blocks) * 1e-11 if decomps else math.prod(shape) * 1e-11

    def estimate_s(self, decomps, shape, variant="lowmem"):
        return self.predict_s(decomps, shape, variant)

    def with_tables(self, store):
        return self


def _flips_and_winograd() -> tuple[list, object, object]:
    """PER_FORMAT + 6 sign flips of Strassen and Strassen–Winograd after them; and the two schemes."""
    s, w = catalogue.resolve("strassen"), catalogue.resolve("strassen-winograd")
    many = [(f"strassen~{i}", transforms.flip_signs(s, [1] * 7, [(-1) ** (i >> j & 1) for j in range(7)]))
            for i in range(candidates.PER_FORMAT + 6)] + [("strassen-winograd", w)]
    return many, s, w


def test_the_classical_schemes_start_plans_even_when_the_shortlist_is_full_of_others(monkeypatch):
    monkeypatch.setattr(candidates, "FUSED_PER_FORMAT", 0)  # the fused ranking would keep Winograd itself
    many, _, _ = _flips_and_winograd()
    assert "strassen-winograd" not in [n for n, _ in candidates._shortlist(many, candidates.PER_FORMAT, 0)]
    inner = [(n, catalogue.resolve(n)) for n in candidates.INNER_SCHEMES]
    names = [n for n, _ in candidates.top_schemes(many, inner, [(2, 2, 2)])]
    assert names.count("strassen-winograd") == 1
    assert "strassen-winograd" not in [n for n, _ in candidates.top_schemes(many, inner, [(4, 4, 4)])]


def test_the_shortlist_keeps_the_schemes_the_fused_layout_moves_fewest_blocks_for():
    # Strassen–Winograd: more low-memory passes than Strassen's sign flips (6, 6, 10 against
    # 5, 5, 7), fewer fused blocks (8, 8, 8 against 9, 9, 9).
    many, s, w = _flips_and_winograd()
    assert sum(candidates.fused_units(w)) < sum(candidates.fused_units(s))
    assert sum(candidates.side_passes(w)) > sum(candidates.side_passes(s))
    got = [n for n, _ in candidates._shortlist(many, candidates.PER_FORMAT, 1)]
    assert len(got) == candidates.PER_FORMAT + 1 and got[-1] == "strassen-winograd"
    assert len(candidates._shortlist(many, candidates.PER_FORMAT)) == min(len(many), candidates.PER_FORMAT
                                                                  + candidates.FUSED_PER_FORMAT)


def test_anchors_are_the_best_classical_depths_and_the_best_plan_that_divides_the_shape():
    request = TuneRequest(shape=(4096,) * 3, max_levels=3, min_leaf=256, variants=("lowmem",))
    w = ("strassen-winograd", catalogue.resolve("strassen-winograd"))
    s = ("strassen", catalogue.resolve("strassen"))
    t = ("strassen-2x2x3@3x2x3", orient(catalogue.resolve("strassen-2x2x3"), (3, 2, 3)) or
         orient(catalogue.resolve("alphatensor:2,3,3"), (3, 2, 3)))
    structures = candidates.level_structures([w, s, t], [w, s], request.shape, request)
    got = policy.anchors(structures, _FlopModel(), request)
    classical = [c for c in got if set(c.names) == {"strassen-winograd"}]
    assert [len(c.names) for c in classical] == [3, 2]  # fewest leaf flops: the deepest two
    others = [c for c in got if c not in classical]
    assert len(others) == 1 and set(others[0].names) != {"strassen-winograd"}
    assert all(4096 % math.prod(d.format[i] for d in others[0].decomps) == 0 for i in range(3))  # no 3 in it


def test_the_classical_anchors_are_measured_in_every_layout_the_other_in_one():
    request = TuneRequest(shape=(4096,) * 3, max_levels=3, min_leaf=256, variants=("lowmem", "fused", "parallel"))
    w = ("strassen-winograd", catalogue.resolve("strassen-winograd"))
    t = ("alphatensor:4,4,4", catalogue.resolve("alphatensor:4,4,4"))
    structures = candidates.level_structures([w, t], [w], request.shape, request)
    got = policy.anchors(structures, _FlopModel(), request)
    classical = [c for c in got if set(c.names) == {"strassen-winograd"}]
    assert sorted((len(c.names), c.variant) for c in classical) == sorted(
        (depth, v) for depth in (2, 3) for v in request.variants)
    others = [c for c in got if c not in classical]
    assert len(others) == 1 and len({c.identity for c in got}) == len(got)


def test_records_of_an_earlier_run_get_the_models_prediction():
    w = catalogue.resolve("strassen-winograd")
    request = TuneRequest(shape=(4096,) * 3)
    earlier = Candidate((w, w), ("strassen-winograd",) * 2, math.nan, math.nan, "fused")
    ranked = Candidate((w,), ("strassen-winograd",), 1.0, 2.0)
    got = policy.predicted([Measured(earlier, 1.2, 1.0, 1.2, None, 7),
                            Measured(ranked, 1.1, 1.0, 1.1, None, 8)], _FlopModel(), request)
    assert got[0].candidate.predicted_speedup == pytest.approx(64 / 49)  # two levels: 49 leaves of an 8th the flops
    assert got[0].speedup == 1.2 and got[0].record_id == 7 and got[0].candidate.variant == "fused"
    assert got[1] == Measured(ranked, 1.1, 1.0, 1.1, None, 8)  # a prediction it has is kept


# ---------------------------------------------------------------------- a spec-only chip
def test_a_tpu_is_ranked_by_its_analytic_model_and_nothing_runs_or_is_stored(cli):
    code, out, err = cli("tune", "--device", "tpu-v4", "--shape", "8192", "--budget", "20s", "--collect", "2",
                         "--formats", "2x2x2,4x4x4", "--max-levels", "2")
    assert code == 0, err
    assert "best predicted on tpu-v4" in out and "no choice is stored" in out
    assert list_choices("tpu-v4", "spec:tpu-v4") == []
    assert query_records(None) == []


def test_a_plan_of_mixed_levels_is_predicted_as_its_kronecker_product():
    from fmmforge.hardware.chips import load_chip
    from fmmforge.hardware.tpu_model import predict, predict_plan

    chip = load_chip("tpu-v4")
    s, r = catalogue.resolve("strassen"), catalogue.resolve("strassen-2x2x3")
    mixed = predict_plan([s, r], chip, (8192, 8192, 6144))
    flat = predict(transforms.kron(s, r), chip, (8192, 8192, 6144))
    assert mixed.algorithm_s == pytest.approx(flat.algorithm_s, rel=1e-12)
    assert predict_plan([s, s], chip, (8192,) * 3).algorithm_s == pytest.approx(
        predict(s, chip, (8192,) * 3, levels=2).algorithm_s, rel=1e-12)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, words", [
    (["--shape", "0"], ["shape"]),
    (["--shape", "4096x4096"], ["shape"]),
    (["--budget", "-5s"], ["budget"]),
    (["--budget", "soon"], ["budget"]),
    (["--formats", "7x7x7"], ["7"]),
    (["--formats", "2x2"], ["format"]),
    (["--engine", "nonesuch"], ["nonesuch"]),
    (["--device", "abacus"], ["abacus"]),
    (["--dtype", "int8"], ["int8"]),
    (["--max-levels", "9"], ["max_levels"]),
    (["--top-k", "0"], ["top_k"]),
    (["--threads", "-2"], ["threads"]),
    (["--shape", "300", "--min-leaf", "256"], ["min_leaf"]),
    (["--variants", "batched"], ["batched", "lowmem"]),
    (["--variants", ","], ["variants"]),
    (["--device", "tpu-v4", "--variants", "fused"], ["fused", "lowmem"]),
])
def test_bad_tune_options_are_one_line_and_exit_2(cli, args, words):
    code, out, err = cli("tune", "--budget", "5s", *args)
    assert code == 2, (out, err)
    one_error(err, *words)
    assert query_records(None) == []


def test_the_loop_is_callable_from_the_root_package():
    import fmmforge

    assert fmmforge.tune is tune and fmmforge.TuneRequest is TuneRequest
    assert {"tune", "TuneRequest", "matmul"} <= set(dir(fmmforge))


# ---------------------------------------------------------------------- --for-model
MODEL_SOURCE = """
import torch

def build():
    return torch.nn.Sequential(torch.nn.Linear(1024, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64),
                               torch.nn.Linear(1024, 512))

NOT_A_MODEL = 3
"""


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    (tmp_path / "user_models_for_tune.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models_for_tune"


def test_a_models_linear_shapes_are_distinct_and_largest_first(user_model):
    model = tune_commands.load_model_callable(f"{user_model}:build")
    assert tune_commands.linear_shapes(model, 256) == [(256, 1024, 512), (256, 512, 64)]


def test_for_model_tunes_each_shape_that_can_take_a_plan(cli, user_model):
    code, out, err = cli("tune", "--device", "tpu-v4", "--for-model", f"{user_model}:build", "--rows", "4096",
                         "--budget", "10s", "--collect", "0", "--min-leaf", "256")
    assert code == 0, err
    assert "2 Linear shape(s) at 4096 rows" in out
    assert "4096x512x64: too small for any plan" in out
    assert out.count("best predicted on tpu-v4") == 1


@pytest.mark.parametrize("spec, rows, words", [
    ("no_such_module_xyz:build", "64", ["cannot import"]),
    ("{m}:missing", "64", ["has no"]),
    ("{m}:NOT_A_MODEL", "64", ["neither"]),
    ("{m}", "64", ["module:callable"]),
    ("{m}:build", "0", ["--rows"]),
])
def test_for_model_bad_input_is_one_line(cli, user_model, spec, rows, words):
    code, out, err = cli("tune", "--device", "tpu-v4", "--for-model", spec.format(m=user_model), "--rows", rows)
    assert code == 2, (out, err)
    one_error(err, *words)


# ---------------------------------------------------------------------- learning at the shape
def test_measurements_correct_their_family_and_a_round_explores_several_families():
    s, w, lad = (catalogue.resolve(n) for n in ("strassen", "strassen-winograd", "laderman"))
    cands = [Candidate((s,), ("strassen",), 1.0, 1.3), Candidate((w,), ("strassen-winograd",), 1.01, 1.29),
             Candidate((lad,), ("laderman",), 1.1, 1.2)]
    # strassen measured far below its prediction: its family (<2,2,2>) is corrected, laderman's by the median
    factor = {((2, 2, 2), "lowmem"): 1.3 / 1.0}.get
    ranked = policy.corrected(cands, lambda fam: factor(fam, 1.0))
    assert [c.names[0] for c in ranked] == ["laderman", "strassen", "strassen-winograd"]
    assert ranked[0].predicted_speedup == pytest.approx(1.2)
    assert ranked[1].predicted_speedup == pytest.approx(1.0)
    picked = policy.diverse(cands, 2)
    assert [c.names[0] for c in picked] == ["strassen", "laderman"]  # one per family first
    assert [c.names[0] for c in policy.diverse(cands, 3)] == ["strassen", "laderman", "strassen-winograd"]


def test_the_correction_factor_is_measured_over_predicted_per_family():
    from fmmforge.codegen.costmodel import CalibratedModel, GemmTable, current_key

    model = CalibratedModel(current_key("cpu", "float32"), (1.0, 1e-11, 1e-10, 1e-10, 0.0, 0.0, 0.0),
                            GemmTable({(512,) * 3: 1e-3, (1024,) * 3: 8e-3}), cache=1 << 20)
    request = TuneRequest(shape=(1024,) * 3)
    predicted = model.predict_s([], 64, (1024,) * 3) / model.predict_s([catalogue.resolve("strassen")], 64, (1024,) * 3)
    measured = [_measured("strassen", predicted / 1.25)]
    factor = policy.correction(measured, models.FittedModel(model, 64), request)
    assert factor(((2, 2, 2), "lowmem")) == pytest.approx(1.25)
    assert factor(((3, 3, 3), "lowmem")) == pytest.approx(1.25)  # an unmeasured family: the median over all
    assert factor(((2, 2, 2), "fused")) == pytest.approx(1.25)  # the other layout is another family
    assert policy.correction([], models.FittedModel(model, 64), request)(((2, 2, 2), "lowmem")) == 1.0


def test_a_tune_of_the_fused_layout_measures_and_records_fused_kernels():
    result = tune(TuneRequest(**{**TINY, "budget_s": 40.0, "calibrate_share": 0.0, "collect": 0,
                                 "variants": ("fused",)}))
    assert result.measured and all(m.candidate.variant == "fused" for m in result.measured)
    assert all(m.plan.variant == "fused" for m in result.measured)
    variants = {json.loads(r.plan).get("variant") for r in query_records(None, m=512, k=512, n=512) if r.levels}
    assert variants == {"fused"}
    # the low-memory layout of the same plans is another candidate: not "measured before"
    again = tune(TuneRequest(**{**TINY, "budget_s": 1.0, "collect": 0, "calibrate_share": 0.0,
                                "variants": ("lowmem",)}))
    assert not any("measured at this shape before" in note for note in again.notes)
    if result.best is not None:
        choice = lookup_choice("cpu", machine_key(), "float32", (512, 512, 512))
        assert choice is not None and choice.to_plan().variant == "fused"


def test_the_default_layouts_are_all_three_on_a_cpu_and_one_on_a_spec_chip():
    assert TuneRequest().variants_for("cpu") == ("lowmem", "fused", "parallel")
    assert TuneRequest().variants_for("spec") == ("lowmem",)
    assert TuneRequest(variants=("fused", "fused")).variants_for("cpu") == ("fused",)
    with pytest.raises(FmmforgeError, match="fused"):
        TuneRequest(variants=("fused",)).variants_for("cuda")


# ---------------------------------------------------------------------- a poor model is not trusted (issue 31)
def test_a_stored_model_whose_fit_is_poor_does_not_rank_the_prior_model_does(monkeypatch):
    from fmmforge.codegen import calibrate as cal
    from fmmforge.codegen import costmodel as cm
    from tests.test_costmodel import CACHE, NOISE, synthetic_store

    monkeypatch.setattr(cal, "cache_bytes", lambda threads: CACHE)
    key = cm.current_key("cpu", "float32")
    synthetic_store(key, noise=NOISE)  # records no model can fit: held-out error far above 15 %
    fitted = cal.calibrate(key, backend=None, budget_s=0).model
    assert fitted.quality.poor and cm.load_model(key, Store()).quality.poor
    starts = []

    def progress(p):  # Ctrl-C as round 1 starts: its ranking is made, nothing need be timed
        if p.phase == "measure" and not starts:
            starts.append(p.text)
            raise KeyboardInterrupt

    result = tune(TuneRequest(**{**TINY, "budget_s": 900.0, "calibrate_share": 0.0, "collect": 0}), progress=progress)
    assert starts and result.model == "the prior model"
    assert any(n.startswith(models.PRIOR) and "poor" in n for n in result.notes), result.notes
