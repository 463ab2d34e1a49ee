"""Devices, the timing harness and the memory probe (behaviour only: no wall-clock thresholds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmmforge.core.errors import FmmforgeError
from fmmforge.hardware.devices import cached_peak, cpu_device, get_device, list_devices, measure_peak
from fmmforge.hardware.memory import peak_extra_bytes
from fmmforge.hardware.timing import Timing, compare, pinned_threads, tf32_off, time_one


def test_cpu_device_details():
    cpu = cpu_device()
    assert cpu.name == "cpu" and cpu.runnable
    assert cpu.details["cores"] >= 1 and cpu.details["torch_threads"] >= 1
    assert cpu.details["torch_blas"]


def test_device_listing_and_lookup():
    names = [d.name for d in list_devices()]
    assert names[0] == "cpu"
    assert "tpu-v4" in names
    with pytest.raises(FmmforgeError, match="spec-only"):
        get_device("tpu-v4")
    assert get_device("tpu-v4", runnable=False).kind == "spec"
    if not torch.cuda.is_available():
        with pytest.raises(FmmforgeError, match="not present"):
            get_device("cuda:0")
    with pytest.raises(FmmforgeError, match="unknown device"):
        get_device("abacus")


def test_timing_stats():
    t = Timing.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert t.median == 3.0 and t.iqr == pytest.approx(2.0)


def test_compare_interleaves_and_reports_both():
    calls: list[str] = []
    res = compare(lambda: calls.append("c"), lambda: calls.append("b"), pairs=4, warmup=1, min_sample_s=0.0)
    assert res.candidate.median > 0 and res.baseline.median > 0
    assert len(res.candidate.samples) == len(res.baseline.samples) == 4
    assert calls[:2] == ["c", "b"] and "c" in calls[-2:] and "b" in calls[-2:]


def test_threads_pinned_and_restored_and_tf32_off():
    before = torch.get_num_threads()
    with pinned_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with tf32_off():
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_time_one_repeats_short_calls():
    t = time_one(lambda: None, samples=3, min_sample_s=0.001)
    assert t.median >= 0 and len(t.samples) == 3


def test_peak_memory_probe_sees_an_allocation():
    got = peak_extra_bytes(lambda: np.ones(32 * 2**20 // 8))
    if got is None:
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    assert got >= 16 * 2**20


def test_peak_memory_probe_sees_blocks_that_reuse_freed_heap_memory():
    """After a large free, glibc serves blocks of a few MiB from heap pages it still holds; the
    probe must count them anyway (it reported 0 for a <3,3,3> kernel's 9 MiB blocks)."""

    def blocks():
        parts = [np.ones(8 * 2**20 // 8) for _ in range(3)]
        return sum(float(p[0]) for p in parts)

    big = np.ones(24 * 2**20 // 8)  # freed from a mapping: glibc raises its mmap threshold to 24 MiB
    del big
    blocks()  # the 8 MiB blocks now live on the heap, and stay resident after they are freed
    got = peak_extra_bytes(blocks)
    if got is None:
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    assert got >= 20 * 2**20


def test_measured_peak_is_cached():
    assert cached_peak("cpu") is None
    value = measure_peak("cpu", size=128, samples=3, min_sample_s=0.005)
    assert value > 0 and cached_peak("cpu") == value


def test_cli_devices(cli):
    code, out, err = cli("devices")
    assert code == 0, err
    assert "cpu" in out and "tpu-v4" in out and "spec only" in out


def test_available_memory_is_read_from_the_system():
    from fmmforge.hardware.limits import available_memory_bytes

    have = available_memory_bytes()
    assert have is not None and 0 < have < 2**60


def test_numeric_limits():
    import math

    from fmmforge.core.errors import FmmforgeError
    from fmmforge.hardware.limits import MAX_DIMENSION, check_dimensions, check_float, check_int

    assert check_dimensions([5], "5", "--size") == (5, 5, 5)
    assert check_dimensions([1, MAX_DIMENSION, 3], "x", "--size") == (1, MAX_DIMENSION, 3)
    assert check_int(None, "--threads") is None and check_int(3, "--threads") == 3
    assert check_float(0.5, "--x", minimum=0.0, maximum=1.0) == 0.5
    for bad in (lambda: check_dimensions([MAX_DIMENSION + 1], "x", "--size"), lambda: check_dimensions([1, 2], "x", "--size"),
                lambda: check_int(0, "--threads"), lambda: check_int(True, "--threads"),
                lambda: check_float(math.nan, "--x", minimum=0.0, maximum=1.0),
                lambda: check_float(0.0, "--x", minimum=0.0, maximum=1.0)):
        with pytest.raises(FmmforgeError):
            bad()


def test_measuring_the_peak_with_a_home_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    home = tmp_path / "home-file"
    home.write_text("")
    monkeypatch.setenv("FMMFORGE_HOME", str(home))
    with pytest.raises(FmmforgeError, match="not a directory"):
        measure_peak("cpu", size=16, samples=1, min_sample_s=0.001)
