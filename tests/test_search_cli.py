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
