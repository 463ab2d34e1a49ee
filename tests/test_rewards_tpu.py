"""The systolic-array (TPU) cost model, its chip specs, and its check against AlphaTensor."""

from __future__ import annotations

import csv
import dataclasses
from importlib import resources

import pytest
from fmmforge.core.builtins import builtin
from fmmforge.core.catalogue import resolve
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import RewardContext, get_reward, reset_plugin_manager
from fmmforge.hardware.chips import available_specs, load_chip
from fmmforge.hardware.tpu_model import predict

TOLERANCE_POINTS = 5.0


pytestmark = pytest.mark.usefixtures("builtin_rewards_only")


def published_tpu_v2() -> list[dict[str, float]]:
    """AlphaTensor Fig. 5b, shipped as data with its source line."""
    text = (resources.files("fmmforge.plugins") / "data" / "alphatensor_tpu_v2.csv").read_text()
    assert "Nature 610" in text  # the source travels with the numbers
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return [{k: float(v) for k, v in row.items()} for row in rows]


def test_strassen_square_on_tpu_v2_matches_alphatensor_within_five_points():
    """One level of the rank-49 <4,4,4> scheme (Strassen-square), bfloat16, N/4 blocks."""
    scheme = resolve("strassen*strassen")
    chip = load_chip("tpu-v2")
    table = []
    for row in published_tpu_v2():
        n = int(row["size"])
        predicted = predict(scheme, chip, (n, n, n), "bfloat16", levels=1).speedup * 100
        table.append((n, row["strassen_square"], predicted, predicted - row["strassen_square"]))
    report = "\n".join(f"{n:>6} published {pub:5.1f}%  predicted {pred:5.1f}%  diff {diff:+5.1f}"
                       for n, pub, pred, diff in table)
    print("\n" + report)
    assert len(table) == 7
    assert all(abs(diff) <= TOLERANCE_POINTS for *_, diff in table), report


def test_levels_are_the_kronecker_power():
    chip = load_chip("tpu-v2")
    two_levels = predict(builtin("strassen"), chip, (8192,) * 3, levels=2)
    square = predict(resolve("strassen*strassen"), chip, (8192,) * 3, levels=1)
    assert two_levels == dataclasses.replace(square, levels=2)


def test_baseline_is_the_roofline_of_one_padded_dot():
    chip = load_chip("tpu-v2")
    p = predict(builtin("strassen"), chip, (8192,) * 3)
    assert p.baseline_s == pytest.approx(2 * 8192**3 / 45e12)
    assert p.leaf == p.leaf_padded == (4096, 4096, 4096) and p.leaf_count == 7
    # far beyond the ridge point a fast algorithm pays less than its 8/7 arithmetic saving
    assert 0 < p.speedup < 8 / 7 - 1


def test_leaves_are_padded_to_the_mxu_and_odd_sizes_padded():
    chip = load_chip("tpu-v4")
    p = predict(builtin("strassen"), chip, (1001, 1001, 1001))
    assert p.leaf == (501, 501, 501) and p.leaf_padded == (512, 512, 512)
    assert p.padding_s > 0
    # a tiny leaf leaves most of the chip's 8 MXUs idle: the baseline wins easily
    tiny = predict(builtin("strassen"), chip, (256, 256, 256))
    assert tiny.speedup < -0.2


def test_denser_operands_cost_more():
    chip = load_chip("tpu-v2")
    size = (8192,) * 3
    # same rank, more nonzeros in U and V: predicted slower
    assert predict(resolve("strassen*strassen"), chip, size).speedup > predict(resolve("alphatensor:4,4,4"), chip, size).speedup


def test_a_memory_starved_chip_gains_less():
    d, size = resolve("strassen*strassen"), (8192,) * 3
    v2, v4 = load_chip("tpu-v2"), load_chip("tpu-v4")
    assert v4.peak_flops("bfloat16") / v4.bandwidth > v2.peak_flops("bfloat16") / v2.bandwidth
    assert predict(d, v4, size).speedup < predict(d, v2, size).speedup


def test_model_refuses_what_it_cannot_run():
    chip = load_chip("tpu-v2")
    with pytest.raises(FmmforgeError, match="modulo 2"):
        predict(resolve("alphatensor-mod2:4,4,4"), chip, (8192,) * 3)
    with pytest.raises(FmmforgeError, match="no peak FLOP/s for float32"):
        predict(builtin("strassen"), chip, (8192,) * 3, "float32")
    with pytest.raises(FmmforgeError, match="too small"):
        predict(builtin("strassen"), chip, (0, 4, 4))


def test_tpu_cost_reward_reports_time_and_speedup():
    reward = get_reward("tpu-cost")
    result = reward.score(resolve("strassen*strassen"), RewardContext(device="tpu-v2", size=(8192,) * 3))
    assert result.value == pytest.approx(-result.parts["predicted ms"], rel=1e-3)
    assert 1.6 < result.parts["speed-up %"] < 11.6
    assert result.parts["leaf matmuls"] == "49 x 2048x2048x2048"


# ---------------------------------------------------------------------- chip specs
def test_shipped_specs_carry_the_published_figures():
    assert {"tpu-v2", "tpu-v4", "tpu-v5e"} <= set(available_specs())
    figures = {name: (load_chip(name).peak_tflops["bfloat16"], load_chip(name).hbm_gbps,
                      load_chip(name).mxu_size, load_chip(name).mxu_count) for name in ("tpu-v2", "tpu-v4", "tpu-v5e")}
    assert figures == {"tpu-v2": (45, 600, 128, 2), "tpu-v4": (275, 1200, 128, 8), "tpu-v5e": (197, 819, 128, 4)}


SPEC = """
name = "my-chip"
description = "a made-up chip"
hbm_gbps = 100
mxu_size = 64
mxu_count = 1
[peak_tflops]
bfloat16 = 10
"""


def test_a_user_adds_a_chip_as_a_small_file(cli, _isolated_store):
    devices = _isolated_store / "devices"
    devices.mkdir(parents=True)
    (devices / "my-chip.toml").write_text(SPEC)
    chip = load_chip("my-chip")
    assert chip.mxu_size == 64 and chip.peak_flops("bfloat16") == 10e12
    code, out, err = cli("score", "strassen", "--reward", "tpu-cost", "--device", "my-chip", "--size", "1024")
    assert code == 0, err
    assert "my-chip, bfloat16" in out
    code, out, err = cli("score", "strassen", "--reward", "tpu-cost", "--device", str(devices / "my-chip.toml"),
                         "--size", "1024")
    assert code == 0, err


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\nhbm_gbps = 100\n", "has no 'peak_tflops'"),
    (SPEC.replace("bfloat16 = 10", "bfloat16 = -1"), "must be a positive number"),
    (SPEC.replace("bfloat16", "fp7"), "unknown dtype 'fp7'"),
    ("clock_ghz = 1\n" + SPEC, "unknown field(s) clock_ghz"),
    ("name = [", "cannot read device spec"),
])
def test_a_broken_spec_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "chip.toml"
    path.write_text(text)
    with pytest.raises(FmmforgeError) as info:
        load_chip(str(path))
    assert message in str(info.value) and str(path) in str(info.value)
