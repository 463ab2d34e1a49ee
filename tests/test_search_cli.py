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
    import pluggy

    from fmmforge.core.search import plugin
    from fmmforge.core.search.engine import FlipGraphEngine

    got = []
    plugin.register_engines(got.append)
    assert len(got) == 1 and isinstance(got[0], FlipGraphEngine) and got[0].name == "flip"
    assert isinstance(plugin.register_engines, object) and pluggy  # a hookimpl-marked function


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
