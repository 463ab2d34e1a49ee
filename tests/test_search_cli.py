"""`fmmforge search` from the command line (in-process)."""

from __future__ import annotations

import pytest

from fmmforge.core.store import Store


def test_search_finds_stores_and_writes_the_scheme(cli, tmp_path):
    out = tmp_path / "best.txt"
    code, stdout, err = cli("search", "2x2x2", "--field", "Z2", "--rank", "7", "--flips", "3M",
                            "--workers", "1", "--seed", "1", "-o", out, "--format", "fastmm")
    assert code == 0, err
    assert "7 (reached)" in stdout
    assert out.exists() and out.read_text().strip()
    stored = Store().all()
    assert any(a.rank == 7 and a.field == "Z2" for a in stored)
    best = min((a for a in stored if a.field == "Z2"), key=lambda a: a.rank)
    code, stdout, _ = cli("show", f"store:{best.id}")
    assert code == 0 and "rank 7" in stdout


@pytest.mark.parametrize("args, message", [
    (["0x3x3"], "not three positive integers"),
    (["3x3x3", "--budget", "-5s"], "negative"),
    (["3x3x3", "--budget", "0s"], "zero"),
    (["3x3x3", "--field", "Q"], "unknown field"),
    (["7x3x3"], "at most 6"),
    (["3x3x3", "--engine", "mcts"], "unknown engine"),
    (["3x3x3", "--workers", "0"], "at least 1"),
    (["3x3x3", "--rank", "0"], "positive"),
    (["3x3x3", "--start", "strassen"], "not <3,3,3>"),
    (["2x2x2", "--rank", "7", "-o", "x.bin", "--format", "xyz"], "unknown file format"),
    (["2x2x2", "--rank", "7", "-o", "x.csv"], "cannot tell the format"),
    (["2x2x2", "--field", "Z", "--rank", "7", "--via-z2", "--no-lift", "--flips", "10k"], "drop --no-lift"),
])
def test_bad_options_exit_2_with_one_clear_line(cli, args, message):
    code, out, err = cli("search", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_interrupt_then_resume(cli, monkeypatch):
    from fmmforge.core.search import walker

    real = walker.Walker.advance
    calls = {"n": 0}

    def interrupted(self, max_flips):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(self, max_flips)

    monkeypatch.setattr(walker.Walker, "advance", interrupted)
    code, out, err = cli("search", "3x3x3", "--rank", "23", "--flips", "5M", "--workers", "1", "--seed", "2", "--no-lift")
    assert code == 130
    assert "--resume" in out
    before = {a.fingerprint for a in Store().all()}
    monkeypatch.setattr(walker.Walker, "advance", real)
    code, out, err = cli("search", "3x3x3", "--rank", "23", "--flips", "5M", "--workers", "1", "--seed", "2",
                         "--no-lift", "--resume")
    assert code == 0, err
    assert "23 (reached)" in out
    assert before <= {a.fingerprint for a in Store().all()}


def test_rewards_come_from_the_plugin_layer(cli):
    code, out, err = cli("search", "2x2x2", "--field", "Z", "--flips", "300k", "--workers", "1", "--seed", "1",
                         "--reward", "rank", "--reward", "additions:0.01")
    assert code == 0, err
    assert "reward of the best scheme" in out
    code, out, err = cli("search", "2x2x2", "--rank", "7", "--reward", "no-such-reward")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_engine_registers_as_plugin_flip():
    from fmmforge.core.contracts import Engine
    from fmmforge.core.search.engine import FlipGraphEngine
    from fmmforge.plugins import get_engine, registry

    chosen = get_engine("flip")
    assert isinstance(chosen, FlipGraphEngine) and isinstance(chosen, Engine)
    reg = registry.registry("engine").usable()["flip"]
    assert str(reg.origin) == "built-in" and reg.plugin == "fmmforge.plugins.builtin_engines"


def test_z_target_through_a_mod_2_walk_and_lifting(cli):
    code, out, err = cli("search", "2x2x3", "--field", "Z", "--via-z2", "--rank", "11", "--flips", "5M",
                         "--workers", "1", "--seed", "1")
    assert code == 0, err
    assert any(a.field == "Z" and a.rank == 11 for a in Store().all())


@pytest.mark.parametrize("args, message", [
    (["2x2x2", "--rank", "7", "--flips", "1e999"], "too large"),
    (["2x2x2", "--rank", "7", "--budget", "100000h"], "too large"),
    (["2x2x2", "--rank", "9"], "--rank (at most the naive rank n·m·p)"),
    (["2x2x2", "--rank", "7", "--workers", "100000"], "--workers must be between 1"),
    (["2x2x2", "--rank", "7", "--plateau", str(10**20)], "--plateau must be between 1"),
    (["2x2x2", "--rank", "7", "--seed", "-1"], "--seed must be between 0"),
    (["2x2x2", "--rank", "7", "--levels", "50"], "at most 8"),
    (["2x2x2", "--rank", "7", "--size", str(10**30)], "--size"),
])
def test_numbers_out_of_range_exit_2_with_one_line(cli, args, message):
    code, out, err = cli("search", *args, "--workers", "1") if "--workers" not in args else cli("search", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert Store().all() == []


def test_checkpoint_under_a_missing_folder_is_refused_before_the_walk(cli, tmp_path):
    path = tmp_path / "missing" / "c.json"
    code, out, err = cli("search", "2x2x2", "--rank", "7", "--flips", "100k", "--workers", "1", "--checkpoint", path)
    assert code == 2, err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert Store().all() == [] and not path.parent.exists()


def test_a_resumed_search_reports_the_checkpoint_it_started_from(cli, tmp_path):
    import json

    path = tmp_path / "c.json"
    common = ["search", "3x3x3", "--flips", "20k", "--workers", "1", "--seed", "4", "--no-lift", "--checkpoint", path]
    code, out, err = cli(*common)
    assert code == 0, err
    best_rank = json.loads(path.read_text())["best_rank"]
    assert best_rank < 27
    code, out, err = cli(*common, "--resume")
    assert code == 0, err
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("│ start"))
    last = next(i for i, line in enumerate(lines) if line.startswith("│ best rank"))
    start = " ".join(line.split("│")[2].strip() for line in lines[first:last])  # the wrapped cell
    assert start.startswith("checkpoint ") and str(path) in start.replace(" ", "")
    assert f"(rank {best_rank}," in start and "naive" not in start


class ToyEngine:
    """A third-party engine: answers every request with Strassen's scheme, reported as found."""

    name = "toy"
    description = "returns Strassen's scheme"

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer

    def run(self, request, events=None):
        from fmmforge.core.catalogue import resolve
        from fmmforge.core.contracts import FoundScheme, SearchResult

        self.calls.append(request)
        best = resolve("strassen")
        events.report_found(FoundScheme(best, "best", 0.0, 0, None, 0, request.start_label))
        return self.answer if self.answer is not None else SearchResult(best, request.start.rank, request.target_rank)


@pytest.fixture
def with_engine():
    """Register an engine plugin at runtime, as a third-party package's hook would."""
    from fmmforge.plugins import hookimpl, plugin_manager, reset_plugin_manager

    def install(engine):
        class Plugin:
            @staticmethod
            @hookimpl
            def register_engines(register):
                register(engine)

        plugin_manager().register(Plugin, name="toy-engines")
        return engine

    reset_plugin_manager()
    yield install
    reset_plugin_manager()


def test_a_third_party_engine_is_picked_by_name_and_called_through_the_contract(cli, with_engine):
    from fmmforge.core.contracts import SearchRequest

    engine = with_engine(ToyEngine())
    code, out, err = cli("search", "2x2x2", "--engine", "toy", "--rank", "7", "--workers", "1", "--seed", "5")
    assert code == 0, err
    (request,) = engine.calls
    assert isinstance(request, SearchRequest)
    assert (request.target_rank, request.seed, request.workers, request.field) == (7, 5, 1, "Z2")
    assert request.start.rank == 8 and request.start_label == "naive:2,2,2"
    assert "7 (reached)" in out
    (stored,) = Store().all()
    assert stored.rank == 7 and stored.provenance.engine == "toy" and stored.provenance.params["kind"] == "best"


@pytest.mark.parametrize("answer, message", [("junk", "not a SearchResult"), (False, "invalid scheme")])
def test_an_engine_returning_junk_is_one_clear_error(cli, with_engine, answer, message):
    from fmmforge.core.catalogue import resolve
    from fmmforge.core.contracts import SearchResult
    from fmmforge.core.decomposition import Decomposition

    if answer is False:
        u, v, w = resolve("strassen").numerators()
        u = u.copy()
        u[0, 0] += 1
        answer = SearchResult(Decomposition.unchecked(u, v, w, (2, 2, 2)), 8, 7)
    with_engine(ToyEngine(answer))
    code, out, err = cli("search", "2x2x2", "--engine", "toy", "--rank", "7", "--workers", "1")
    assert code == 2, err
    assert message in err and "toy" in err and len(err.strip().splitlines()) == 1


def summary_row(out: str, key: str) -> str:
    """The value of one row of search's summary table."""
    line = next(line for line in out.splitlines() if line.startswith(f"│ {key} "))
    return line.split("│")[2].strip()


@pytest.mark.parametrize("fmt, rank", [("2x2x2", 7), ("3x3x3", 23)])
def test_a_file_asked_for_over_z_holds_a_scheme_verified_over_z(cli, tmp_path, fmt, rank):
    import json

    from fmmforge.core.formats import read_file

    out = tmp_path / "z.json"
    code, stdout, err = cli("search", fmt, "--field", "Z", "--rank", rank, "--via-z2", "--flips", "20M",
                            "--workers", "1", "--seed", "1", "-o", out)
    assert code == 0, err
    assert json.loads(out.read_text())["field"] == "Z"
    ((_, d),) = read_file(out)
    assert d.field == "Z" and d.rank == rank and d.verify().valid
    # the summary and the store speak of the scheme in the file
    assert summary_row(stdout, "format").startswith(f"<{fmt.replace('x', ',')}> over Z")
    assert summary_row(stdout, "fingerprint") == d.fingerprint
    assert summary_row(stdout, "target rank") == f"{rank} (reached)"
    (row,) = [a for a in Store().all() if a.fingerprint == d.fingerprint]
    assert row.field == "Z" and row.rank == rank
    assert f"(rank {rank} over Z, store:{row.id}) to {out}" in stdout.replace("\n", "")


def test_a_z_search_whose_mod_2_schemes_do_not_lift_says_so_and_writes_nothing(cli, tmp_path, monkeypatch):
    from fmmforge.core.search import lift

    monkeypatch.setattr(lift, "lift_to_z", lambda d, bits=40: None)
    out = tmp_path / "z.json"
    code, stdout, err = cli("search", "2x2x2", "--field", "Z", "--rank", "7", "--via-z2", "--flips", "100k",
                            "--workers", "1", "--seed", "1", "-o", out)
    assert code == 1
    assert "no scheme over Z was found" in err and "nothing written" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert summary_row(stdout, "best rank") == "none over Z" and summary_row(stdout, "fingerprint") == "-"
    assert all(a.field == "Z2" for a in Store().all())
