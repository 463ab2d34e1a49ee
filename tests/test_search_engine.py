"""FlipGraphEngine: reaching known ranks, storing what it finds, lifting, rewards, resume."""

from __future__ import annotations

import json

import pytest

from fmmforge.core.catalogue import resolve
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.search.budget import Budget, parse_budget
from fmmforge.core.search.engine import FlipGraphEngine
from fmmforge.core.search.lift import lift_to_z
from fmmforge.core.store import Store

FLIPS = Budget(flips=3_000_000)


@pytest.mark.parametrize("field", ["Z2", "Z"])
def test_reaches_strassen_rank_from_the_naive_scheme(field):
    store = Store()
    result = FlipGraphEngine().run(resolve("naive:2,2,2"), field=field, target_rank=7, budget=FLIPS,
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
    result = FlipGraphEngine().run(resolve("naive:2,2,2"), field="Z2", target_rank=7, budget=FLIPS, seed=1, store=store)
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
    runs = [FlipGraphEngine().run(resolve("naive:2,3,3"), field="Z2", budget=Budget(flips=200_000), seed=5)
            for _ in range(2)]
    assert runs[0].best.fingerprint == runs[1].best.fingerprint
    assert [(r, f) for r, _, f in runs[0].history] == [(r, f) for r, _, f in runs[1].history]


def test_kronecker_start_and_budget_stop():
    start = resolve("strassen*strassen")
    result = FlipGraphEngine().run(start, field="Z2", budget=Budget(flips=20_000), seed=2)
    assert result.start_rank == 49 and result.best.rank <= 49 and result.best.verify().valid
    assert not result.reached


def test_reward_prefers_higher_scored_schemes_at_the_best_rank():
    calls = []

    def sparsity(d):
        calls.append(d.fingerprint)
        return -float(sum(d.nnz))

    result = FlipGraphEngine().run(resolve("naive:2,2,2"), field="Z", budget=Budget(flips=400_000), seed=4,
                                   reward=sparsity, store=Store())
    assert result.best.rank == 7
    assert calls and result.score == -float(sum(result.best.nnz))
    # the result is the best-scored scheme among the pool the parent kept
    assert result.pool_size >= 1


def test_two_workers_merge_into_the_store_without_duplicates():
    store = Store()
    result = FlipGraphEngine().run(resolve("naive:2,2,2"), field="Z2", target_rank=7,
                                   budget=Budget(seconds=60), workers=2, seed=1, store=store)
    assert result.reached
    fps = [a.fingerprint for a in store.all()]
    assert len(fps) == len(set(fps))


def test_interrupted_run_keeps_its_schemes_and_resumes(tmp_path):
    store = Store()
    ckpt = tmp_path / "run.json"

    def stop_after_first_best(kind, info):
        if kind == "best":
            raise KeyboardInterrupt

    first = FlipGraphEngine(on_event=stop_after_first_best, lift=False).run(
        resolve("naive:3,3,3"), field="Z2", target_rank=23, budget=FLIPS, seed=7, store=store, checkpoint=ckpt)
    assert first.interrupted and not first.reached
    stored_before = {a.fingerprint for a in store.all()}
    assert stored_before and first.best.fingerprint in stored_before
    doc = json.loads(ckpt.read_text())
    assert doc["best_rank"] == first.best.rank and doc["pool"]

    second = FlipGraphEngine(lift=False).run(resolve("naive:3,3,3"), field="Z2", target_rank=23, budget=FLIPS,
                                             seed=7, store=store, checkpoint=ckpt, resume=True)
    assert second.start_rank == first.best.rank
    assert second.reached and second.best.rank == 23
    assert stored_before <= {a.fingerprint for a in store.all()}
    assert json.loads(ckpt.read_text())["epoch"] == 1


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FmmforgeError, match="no checkpoint"):
        FlipGraphEngine().run(resolve("naive:2,2,2"), field="Z2", target_rank=7, budget=FLIPS,
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
        "from fmmforge.core.search.engine import discard_unread\n"
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
