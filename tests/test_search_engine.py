"""FlipGraphEngine: reaching known ranks, storing what it finds, lifting, rewards, resume."""

from __future__ import annotations

import json

import pytest

from fmmforge.core.catalogue import resolve
from fmmforge.core.contracts import FoundScheme, SearchEvents, SearchRequest, SearchResult
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.budget import Budget, parse_budget
from fmmforge.core.search.engine import FlipGraphEngine
from fmmforge.core.search.lift import lift_to_z
from fmmforge.core.search.recording import StoreRecorder
from fmmforge.core.store import Store

FLIPS = Budget(flips=3_000_000)


def search(start, store=None, found=None, **options) -> SearchResult:
    """Run the flip engine through its contract; schemes it reports go to ``store`` (if given)."""
    request = SearchRequest(start, **options)
    recorder = StoreRecorder(store, request, "flip") if store is not None else None

    def on_found(scheme: FoundScheme) -> None:
        if recorder is not None:
            recorder(scheme)
        if found is not None:
            found(scheme)

    return FlipGraphEngine().run(request, SearchEvents(found=on_found))


@pytest.mark.parametrize("field", ["Z2", "Z"])
def test_reaches_strassen_rank_from_the_naive_scheme(field):
    store = Store()
    result = search(resolve("naive:2,2,2"), field=field, target_rank=7, budget=FLIPS,
                                   seed=3, store=store)
    assert result.reached and result.best.rank == 7
    assert result.best.field == field and result.best.verify().valid
    assert result.history[-1][0] == 7
    rows = [a for a in store.all() if a.field == field]
    assert min(a.rank for a in rows) == 7
    for a in rows:
        assert a.decomposition.verify().valid
        assert a.provenance.engine == "flip" and a.provenance.seed == 3
        assert a.provenance.params["flips"] >= 0 and "seconds" in a.provenance.params


def test_z2_search_stores_a_lifted_z_scheme():
    store = Store()
    result = search(resolve("naive:2,2,2"), field="Z2", target_rank=7, budget=FLIPS, seed=1, store=store)
    assert result.reached
    assert result.lifted is not None and result.lifted.field == "Z" and result.lifted.rank == 7
    assert any(a.field == "Z" and a.rank == 7 and a.provenance.params["kind"] == "lifted" for a in store.all())


def test_lifting_a_known_z2_scheme():
    d = resolve("laderman")
    from fmmforge.core.decomposition import Decomposition

    mod2 = Decomposition.create(*d.numerators(), field="Z2", target=d.target)
    z = lift_to_z(mod2)
    assert z is not None and z.field == "Z" and z.rank == 23 and z.verify().valid


def test_same_seed_and_flip_budget_give_the_same_walk():
    runs = [search(resolve("naive:2,3,3"), field="Z2", budget=Budget(flips=200_000), seed=5)
            for _ in range(2)]
    assert runs[0].best.fingerprint == runs[1].best.fingerprint
    assert [(r, f) for r, _, f in runs[0].history] == [(r, f) for r, _, f in runs[1].history]


def test_kronecker_start_and_budget_stop():
    start = resolve("strassen*strassen")
    result = search(start, field="Z2", budget=Budget(flips=20_000), seed=2)
    assert result.start_rank == 49 and result.best.rank <= 49 and result.best.verify().valid
    assert not result.reached


def test_reward_prefers_higher_scored_schemes_at_the_best_rank():
    calls = []

    def sparsity(d):
        calls.append(d.fingerprint)
        return -float(sum(d.nnz))

    result = search(resolve("naive:2,2,2"), field="Z", budget=Budget(flips=400_000), seed=4,
                                   scorer=sparsity, store=Store())
    assert result.best.rank == 7
    assert calls and result.score == -float(sum(result.best.nnz))
    # the result is the best-scored scheme among the pool the parent kept
    assert result.pool_size >= 1


def test_two_workers_merge_into_the_store_without_duplicates():
    store = Store()
    result = search(resolve("naive:2,2,2"), field="Z2", target_rank=7,
                                   budget=Budget(seconds=60), workers=2, seed=1, store=store)
    assert result.reached
    fps = [a.fingerprint for a in store.all()]
    assert len(fps) == len(set(fps))


def test_interrupted_run_keeps_its_schemes_and_resumes(tmp_path):
    store = Store()
    ckpt = tmp_path / "run.json"

    def stop_after_first_best(scheme):
        if scheme.kind == "best":
            raise KeyboardInterrupt

    first = search(resolve("naive:3,3,3"), store, stop_after_first_best, field="Z2", target_rank=23, budget=FLIPS,
                   seed=7, checkpoint=ckpt, lift=False)
    assert first.interrupted and not first.reached
    stored_before = {a.fingerprint for a in store.all()}
    assert stored_before and first.best.fingerprint in stored_before
    doc = json.loads(ckpt.read_text())
    assert doc["best_rank"] == first.best.rank and doc["pool"]

    second = search(resolve("naive:3,3,3"), store, field="Z2", target_rank=23, budget=FLIPS,
                    seed=7, checkpoint=ckpt, resume=True, lift=False)
    assert second.start_rank == first.best.rank
    assert second.reached and second.best.rank == 23
    assert stored_before <= {a.fingerprint for a in store.all()}
    assert json.loads(ckpt.read_text())["epoch"] == 1


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FmmforgeError, match="no checkpoint"):
        search(resolve("naive:2,2,2"), field="Z2", target_rank=7, budget=FLIPS,
                              checkpoint=tmp_path / "none.json", resume=True)


@pytest.mark.parametrize("text, seconds, flips", [
    ("90s", 90, None), ("2m", 120, None), ("1h", 3600, None), ("1h30m", 5400, None),
    ("10M flips", None, 10_000_000), ("2.5k flips", None, 2500),
])
def test_budget_parsing(text, seconds, flips):
    b = parse_budget(text)
    assert b.seconds == seconds and b.flips == flips


@pytest.mark.parametrize("text", ["-5s", "0s", "0", "soon", "-3 flips", "0 flips"])
def test_bad_budgets_are_clear_errors(text):
    with pytest.raises(FmmforgeError, match="budget"):
        parse_budget(text)


def test_schemes_queued_for_stopped_workers_do_not_hang_exit(tmp_path):
    """A search that forwarded many pool schemes to workers that had already stopped hung at
    interpreter exit (the inbox feeder threads blocked on full pipes)."""
    import subprocess
    import sys

    script = tmp_path / "flood.py"
    script.write_text(
        "import multiprocessing as mp, sys\n"
        "from fmmforge.core.search.workers import discard_unread\n"
        "q = mp.get_context('fork').Queue()\n"
        "for _ in range(64):\n"
        "    q.put(b'x' * 65536)  # 4 MiB for a reader that never comes\n"
        "if sys.argv[1] == 'discard':\n"
        "    discard_unread([q])\n"
    )
    done = subprocess.run([sys.executable, str(script), "discard"], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(subprocess.TimeoutExpired):  # what happened before: exit waits forever
        subprocess.run([sys.executable, str(script), "keep"], timeout=5, capture_output=True)


def test_the_engine_runs_from_python_without_a_terminal(tmp_path):
    """A SearchRequest in, a SearchResult out, found schemes through a callback: no rich, no plugins."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text(
        "import sys\n"
        "from fmmforge.core.catalogue import resolve\n"
        "from fmmforge.core.contracts import Budget, SearchEvents, SearchRequest\n"
        "from fmmforge.core.search.engine import FlipGraphEngine\n"
        "found = []\n"
        "request = SearchRequest(resolve('naive:2,2,2'), field='Z2', target_rank=7, budget=Budget(flips=3_000_000), seed=1)\n"
        "result = FlipGraphEngine().run(request, SearchEvents(found=found.append))\n"
        "assert result.reached and result.best.verify().valid, result\n"
        "assert [f.kind for f in found][0] == 'best' and found[-1].decomposition.rank == 7\n"
        "assert all(f.decomposition.verify().valid for f in found)\n"
        "assert 'lifted' in {f.kind for f in found} and result.lifted.field == 'Z'\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'typer', 'torch') or m.startswith('fmmforge.plugins'))\n"
        "assert not loaded, loaded\n"
        "print('ok', len(found))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_progress_snapshots_and_found_schemes_reach_the_callbacks():
    snapshots, found = [], []
    request = SearchRequest(resolve("naive:3,3,3"), field="Z2", target_rank=23, budget=FLIPS, seed=2, lift=False)
    result = FlipGraphEngine().run(request, SearchEvents(progress=snapshots.append, found=found.append))
    assert result.reached
    assert snapshots and all(s.target == "<3,3,3>" and s.field == "Z2" and s.target_rank == 23 for s in snapshots)
    assert [s.flips for s in snapshots] == sorted(s.flips for s in snapshots)
    bests = [f.decomposition.rank for f in found if f.kind == "best"]
    assert bests == sorted(bests, reverse=True) and bests[-1] == 23 == result.best.rank
    assert [h[0] for h in result.history] == bests


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be at least 1"),
    ({"target_rank": 0}, "positive number of products"),
    ({"budget": Budget()}, "target rank or a budget"),
    ({"target_rank": 7, "plateau": 0}, "plateau"),
    ({"target_rank": 7, "checkpoint_every": 0}, "positive number of seconds"),
])
def test_bad_requests_are_one_clear_error_naming_the_field_not_a_flag(options, message):
    with pytest.raises(FmmforgeError, match=message) as info:
        SearchRequest(resolve("naive:2,2,2"), **options)
    assert "--" not in str(info.value)


def test_engine_errors_name_request_fields_not_command_line_flags(tmp_path):
    for request in (SearchRequest(resolve("naive:2,2,2"), field="Z", target_rank=7, require_z=True),
                    SearchRequest(resolve("naive:2,2,2"), target_rank=7, checkpoint=tmp_path / "none.json",
                                  resume=True)):
        with pytest.raises(FmmforgeError) as info:
            FlipGraphEngine().run(request)
        assert "--" not in str(info.value)


def test_a_checkpoint_whose_pool_is_for_another_tensor_is_refused(tmp_path):
    ckpt = tmp_path / "run.json"
    search(resolve("naive:2,2,2"), field="Z2", budget=Budget(flips=1000), checkpoint=ckpt, lift=False)
    doc = json.loads(ckpt.read_text())
    doc["pool"] = [{**doc["pool"][0], "field": "Z"}]
    ckpt.write_text(json.dumps(doc))
    with pytest.raises(FmmforgeError, match="unreadable .*not <2,2,2> over Z2"):
        search(resolve("naive:2,2,2"), field="Z2", budget=Budget(flips=1000), checkpoint=ckpt, resume=True)
