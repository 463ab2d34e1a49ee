"""The reward interface, the weighted mix, the built-in rewards and `fmmforge score`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import one_error
from fmmforge.core.builtins import builtin
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.plugins import (
    RewardContext,
    RewardMix,
    RewardResult,
    RewardTerm,
    evaluate,
    get_reward,
    parse_reward_spec,
    parse_reward_specs,
    reset_plugin_manager,
)

CTX = RewardContext()


pytestmark = pytest.mark.usefixtures("builtin_rewards_only")


# ---------------------------------------------------------------------- built-in rewards
def test_rank_is_minus_the_rank():
    assert get_reward("rank").score(builtin("strassen"), CTX).value == -7
    assert evaluate(get_reward("rank"), resolve("laderman"), CTX).value == -23.0


def test_additions_reports_naive_and_eliminated_counts():
    result = evaluate(get_reward("additions"), builtin("strassen-winograd"), CTX)
    assert result.value == -15
    assert result.parts["additions (naive)"] == 24 and result.parts["additions (CSE)"] == 15
    assert result.parts["outputs (W) naive/CSE"] == "10/7"
    assert evaluate(get_reward("additions"), builtin("strassen"), CTX).value == -18


def test_stability_is_minus_levels_times_log_e():
    reward = get_reward("stability")
    one = evaluate(reward, builtin("strassen"), CTX)
    assert one.value == pytest.approx(-math.log(12)) and one.parts["e"] == "12"
    two = evaluate(reward, builtin("strassen"), RewardContext(levels=2))
    assert two.value == pytest.approx(-2 * math.log(12))
    assert evaluate(reward, resolve("naive:2,2,2"), CTX).value == pytest.approx(-math.log(2))
    with pytest.raises(FmmforgeError, match="valid over Z"):
        evaluate(reward, resolve("alphatensor-mod2:4,4,4"), CTX)


def test_rewards_score_verified_schemes_only():
    U, V, W = (np.array(x) for x in builtin("strassen").numerators())
    W = W.copy()
    W[0, 0] = 0
    wrong = Decomposition.unchecked(U, V, W, (2, 2, 2))
    with pytest.raises(InvalidDecompositionError, match="verified"):
        evaluate(get_reward("rank"), wrong, CTX)


def test_a_reward_returning_nonsense_is_named():
    class Broken:
        name, description, cheap = "broken", "returns nan", True

        def score(self, d, context):
            return float("nan")

    with pytest.raises(FmmforgeError, match="reward 'broken' returned nan"):
        evaluate(Broken(), builtin("strassen"), CTX)


def test_context_rejects_nonsense():
    with pytest.raises(FmmforgeError, match="levels"):
        RewardContext(levels=0)
    with pytest.raises(FmmforgeError, match="size"):
        RewardContext(size=(8192, 0, 8192))


# ---------------------------------------------------------------------- weights and mixes
def test_reward_specs_parse_names_and_weights():
    assert parse_reward_spec("rank") == RewardTerm("rank", 1.0)
    assert parse_reward_spec(" tpu-cost:0.1 ") == RewardTerm("tpu-cost", 0.1)
    assert parse_reward_spec("additions:-2e-1") == RewardTerm("additions", -0.2)
    assert parse_reward_specs([]) == (RewardTerm("rank", 1.0),)


@pytest.mark.parametrize("spec, message", [
    ("rank:abc", "is not a number"),
    ("rank:", "empty weight"),
    ("rank:nan", "finite number"),
    ("rank:inf", "finite number"),
    (":2", "no reward name"),
])
def test_bad_weights_are_one_clear_error(spec, message):
    with pytest.raises(FmmforgeError, match=message):
        parse_reward_spec(spec)


def test_a_reward_given_twice_is_an_error():
    with pytest.raises(FmmforgeError, match="given twice"):
        parse_reward_specs(["rank", "rank:2"])


def test_mix_is_the_weighted_sum_alphatensor_style():
    d = resolve("alphatensor:4,4,4")
    ctx = RewardContext(device="tpu-v2", size=(8192, 8192, 8192))
    mix = RewardMix.from_specs(["rank", "tpu-cost:0.5"])
    scored = mix.score(d, ctx)
    time_reward = evaluate(get_reward("tpu-cost"), d, ctx).value
    assert scored.total == pytest.approx(-49 + 0.5 * time_reward)
    assert [t.term.name for t in scored.terms] == ["rank", "tpu-cost"]
    assert mix.cheap
    assert mix.bind(ctx)(d) == pytest.approx(scored.total)
    assert RewardMix.of({"rank": 1.0, "tpu-cost": 0.5}).score(d, ctx).total == pytest.approx(scored.total)


def test_expensive_rewards_are_cached_per_scheme_and_context():
    calls = []

    class Measured:
        name, description, cheap = "measured", "pretends to run a kernel", False

        def score(self, d, context):
            calls.append(d.fingerprint)
            return RewardResult(-1.5, {"ms": 1.5})

    mix = RewardMix((RewardTerm("measured", 2.0),), {"measured": Measured()})
    d = builtin("strassen")
    assert mix.score(d, CTX).total == -3.0
    assert mix.score(d, CTX).total == -3.0
    assert len(calls) == 1
    mix.score(d, RewardContext(levels=2))
    mix.score(builtin("strassen-winograd"), CTX)
    assert len(calls) == 3
    assert not mix.cheap


# ---------------------------------------------------------------------- the score command
def test_score_prints_a_table_of_rewards_and_parts(cli):
    code, out, err = cli("score", "alphatensor:4,4,4", "--reward", "rank", "--reward", "tpu-cost:0.1",
                         "--device", "tpu-v4", "--size", "8192")
    assert code == 0, err
    assert "<4,4,4> rank 49" in out and "tpu-v4" in out
    for word in ("rank", "tpu-cost", "0.1", "-49", "total", "speed-up %", "predicted ms", "standard matmul ms"):
        assert word in out
    code, out, _ = cli("score", "strassen")  # default reward: rank
    assert code == 0 and "-7" in out


def test_score_with_every_builtin_reward(cli):
    code, out, err = cli("score", "strassen-winograd", "-r", "rank", "-r", "additions:0.1", "-r", "stability",
                         "-r", "tpu-cost", "--device", "tpu-v5e", "--size", "4096,4096,2048", "--levels", "2")
    assert code == 0, err
    assert "additions (CSE)" in out and "e^2" in out and "4096x4096x2048" in out


@pytest.mark.parametrize("args, message", [
    (("--reward", "bogus"), "unknown reward 'bogus'; known: additions, rank, stability, tpu-cost; run `fmmforge plugins`"),
    (("--reward", "rank:abc"), "weight 'abc' is not a number"),
    (("--reward", "rank:"), "empty weight"),
    (("--reward", "rank:nan"), "finite number"),
    (("--reward", "tpu-cost", "--size", "8192"), "needs a device"),
    (("--reward", "tpu-cost", "--device", "tpu-v4"), "needs a matrix size"),
    (("--reward", "tpu-cost", "--device", "abacus", "--size", "8192"), "no chip spec for device 'abacus'"),
    (("--reward", "tpu-cost", "--device", "tpu-v4", "--size", "8192x"), "--size"),
    (("--reward", "tpu-cost", "--device", "tpu-v4", "--size", "8192", "--dtype", "float32"), "no peak FLOP/s for float32"),
    (("--levels", "0",), "levels must be a positive integer"),
])
def test_score_bad_input_is_one_line_and_exit_2(cli, args, message):
    code, _, err = cli("score", "strassen", *args)
    assert code == 2
    assert message in one_error(err)


def test_combine_rewards_gives_engines_a_plain_callable():
    from fmmforge.plugins import combine_rewards

    scorer = combine_rewards(["rank", "additions:0.1"])
    assert scorer(builtin("strassen-winograd")) == pytest.approx(-7 - 1.5)
    with pytest.raises(FmmforgeError, match="unknown reward 'speed'"):
        combine_rewards(["speed"])


@pytest.mark.parametrize("size", ["10^30", str(10**30), "0", "-5", "8192,0,8192", str(2**31 + 1), "4096,4096"])
def test_score_refuses_absurd_or_non_positive_sizes(cli, size):
    code, out, err = cli("score", "strassen", "--size", size)
    assert code == 2, err
    assert "--size" in err and len(err.strip().splitlines()) == 1


def test_score_refuses_absurd_levels(cli):
    code, out, err = cli("score", "strassen", "--levels", "1000000")
    assert code == 2 and "at most 8" in err and len(err.strip().splitlines()) == 1
