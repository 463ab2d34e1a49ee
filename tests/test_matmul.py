"""fmmforge.matmul and fmmforge.nn: a tuned kernel where the store holds a choice for the shape class,
torch.matmul (numpy.matmul for arrays) everywhere else, with torch's behaviour in both cases."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import fmmforge
from fmmforge.codegen.choices import (MIN_DIMENSION, Choice, TABLES, check_choice, lookup_choice, shape_class,
                                      store_choice)
from fmmforge.codegen.generate import EMITTER_REVISION
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.validate import error_bound
from fmmforge.core.app.matmul import Contention, Matmul
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.store import Store
from fmmforge.hardware.devices import machine_key
from tests.helpers import run_threads

CLASS = (256, 256, 256)
ODD_SHAPES = [(256, 256, 256), (300, 257, 511), (511, 300, 260)]  # all in CLASS


@pytest.fixture(autouse=True)
def _fresh_global_dispatch():
    """fmmforge.matmul caches per process: each test starts (and leaves) it empty."""
    fmmforge.matmul.refresh()
    yield
    fmmforge.matmul.refresh()


def strassen(dtype: str = "float64"):
    return make_plan("strassen", 1, dtype=dtype, device="cpu", cutoff=64)


def tune(dtype: str = "float64", speedup: float = 1.5, shape=CLASS) -> Choice:
    plan, _ = strassen(dtype)
    return store_choice(plan, machine=machine_key(), shape=shape, speedup=speedup, baseline_median_s=1e-3)


def rand(*shape: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.rand(*shape, dtype=dtype, generator=g) * 2 - 1


def assert_within_bound(got: torch.Tensor, A: torch.Tensor, B: torch.Tensor, dtype: str = "float64") -> None:
    _, decomps = strassen(dtype)
    ref = A.double() @ B.double()
    bound = error_bound(A.shape[-1], decomps, dtype, float(A.abs().max()), float(B.abs().max()))
    assert got.shape == ref.shape and got.dtype == A.dtype
    assert float((got.detach().double() - ref).abs().max()) <= bound


@pytest.fixture
def tuned() -> Matmul:
    """A dispatcher over a store with the Strassen choice for float64 256x256x256 on this machine
    (no contention watch: the tests that count kernel calls must not depend on the machine's load;
    the watch has its own tests, on a clock of theirs)."""
    tune()
    return Matmul(warn=pytest.fail, contention=None)


# ------------------------------------------------------------ the choices table
def test_shape_classes_are_power_of_two_buckets_above_a_minimum():
    assert shape_class(256, 300, 511) == (256, 256, 256)
    assert shape_class(512, 1000, 129) == (512, 512, 128)
    assert shape_class(MIN_DIMENSION - 1, 4096, 4096) is None


def test_a_stored_choice_reads_back_and_a_new_one_replaces_it():
    first = tune(speedup=1.2)
    found = lookup_choice("cpu", machine_key(), "float64", CLASS)
    assert found == first and found.to_plan() == strassen()[0]
    assert found.algorithms == ("strassen",) and found.fingerprints == strassen()[0].fingerprints
    tune(speedup=1.7)
    assert lookup_choice("cpu", machine_key(), "float64", CLASS).speedup == 1.7
    assert lookup_choice("cpu", machine_key(), "float32", CLASS) is None
    assert lookup_choice("cpu", "another machine", "float64", CLASS) is None


@pytest.mark.parametrize("change,message", [
    ({"shape_class": (256, 256, 300)}, "powers of two"),
    ({"shape_class": (64, 256, 256)}, "powers of two"),
    ({"speedup": float("nan")}, "speed-up"),
    ({"baseline_median_s": 0.0}, "baseline"),
    ({"dtype": "float32"}, "must agree"),
    ({"plan": {"algorithms": ["strassen"]}}, "not a kernel plan"),
])
def test_an_unusable_choice_is_refused_with_one_line(change, message):
    good = tune()
    with pytest.raises(FmmforgeError, match=message):
        check_choice(replace(good, **change))


def test_a_damaged_choice_row_reads_as_no_choice_with_one_warning():
    tune()
    with Store().writing(TABLES) as conn:
        conn.execute("UPDATE choices SET plan = '{not json'")
    lines: list[str] = []
    assert lookup_choice("cpu", machine_key(), "float64", CLASS, warn=lines.append) is None
    assert len(lines) == 1 and "fmmforge tune" in lines[0]


@pytest.mark.parametrize("emitter,said", [(EMITTER_REVISION - 1, f"emitter revision {EMITTER_REVISION - 1}"),
                                          (None, "before emitter revisions")])
def test_a_choice_measured_with_other_kernels_is_not_used(emitter, said):
    assert tune().emitter == EMITTER_REVISION
    with Store().writing(TABLES) as conn:
        conn.execute("UPDATE choices SET emitter = ?", (emitter,))
    lines: list[str] = []
    assert lookup_choice("cpu", machine_key(), "float64", CLASS, warn=lines.append) is None
    assert len(lines) == 1 and said in lines[0] and "fmmforge tune" in lines[0]
    dispatch = Matmul(warn=lines.append)
    A, B = rand(256, 256), rand(256, 256)
    assert dispatch.decide(A, B) is None and torch.equal(dispatch(A, B), torch.matmul(A, B))
    assert len(lines) == 2  # said once for the class, not per call
    tune()  # tuning again replaces it
    assert lookup_choice("cpu", machine_key(), "float64", CLASS).emitter == EMITTER_REVISION


# ------------------------------------------------------------ dispatch
@pytest.mark.parametrize("M,K,N", ODD_SHAPES)
def test_a_tuned_class_runs_the_kernel_within_the_error_bound(tuned, M, K, N):
    A, B = rand(M, K), rand(K, N)
    route = tuned.decide(A, B)
    assert route is not None and route.choice.algorithms == ("strassen",) and route.shape_class == CLASS
    got = tuned(A, B)
    assert sum(tuned.kernel_calls().values()) == 1
    assert_within_bound(got, A, B)


def test_without_a_choice_it_is_exactly_torch_matmul(tuned):
    for A, B in [(rand(200, 600), rand(600, 300)),  # another class
                 (rand(100, 256), rand(256, 256)),  # below the minimum size
                 (rand(300, 300, dtype=torch.float32), rand(300, 300, dtype=torch.float32))]:  # another dtype
        assert tuned.decide(A, B) is None
        assert torch.equal(tuned(A, B), torch.matmul(A, B))
    assert tuned.kernel_calls() == {}


def test_a_choice_that_is_not_faster_is_not_used():
    tune(speedup=0.9)
    A, B = rand(300, 300), rand(300, 300)
    m = Matmul(warn=pytest.fail)
    assert m.decide(A, B) is None and torch.equal(m(A, B), A @ B)


@pytest.mark.parametrize("A,B", [
    (torch.rand(300, dtype=torch.float64), torch.rand(300, dtype=torch.float64)),  # 1-D
    (torch.rand(300, dtype=torch.float64), torch.rand(300, 300, dtype=torch.float64)),  # 1-D @ 2-D
    (torch.randint(-9, 9, (300, 300)), torch.randint(-9, 9, (300, 300))),  # int
    (torch.rand(2, 300, 300, dtype=torch.float64), torch.rand(2, 300, 300, dtype=torch.float64)),  # batched B
    (torch.rand(300, 300, dtype=torch.float64), torch.rand(300, 300, dtype=torch.float64).to_sparse()),
])
def test_what_the_kernel_does_not_take_is_torch_matmul(tuned, A, B):
    assert tuned.decide(A, B) is None
    assert torch.equal(tuned(A, B).to_dense(), torch.matmul(A, B).to_dense())


@pytest.mark.parametrize("A,B", [
    (torch.rand(300, 300, dtype=torch.float64), torch.rand(300, 300, dtype=torch.float32)),  # mixed dtypes
    (torch.rand(300, 257, dtype=torch.float64), torch.rand(300, 300, dtype=torch.float64)),  # shapes
    (torch.rand(300, 300, dtype=torch.float64), [[1.0]]),  # not a tensor
])
def test_bad_operands_raise_exactly_what_torch_raises(tuned, A, B):
    with pytest.raises(Exception) as theirs:
        torch.matmul(A, B)
    with pytest.raises(type(theirs.value)) as ours:
        tuned(A, B)
    assert str(ours.value) == str(theirs.value)


def test_batched_a_is_folded_into_one_kernel_product(tuned):
    """(..., M, K) @ (K, N) goes to the kernel as one (batch·M) x K product, as torch folds it."""
    A, B = rand(2, 3, 50, 300), rand(300, 260)  # 300 rows in all: class 256
    assert tuned.decide(A, B) is not None
    got = tuned(A, B)
    assert sum(tuned.kernel_calls().values()) == 1
    assert_within_bound(got.reshape(-1, 260), A.reshape(-1, 300), B)
    assert got.shape == (2, 3, 50, 260)


def test_non_contiguous_operands_go_to_the_kernel(tuned):
    A = rand(300, 400).t()[:, :300]  # 400 x 300, transposed strides
    B = rand(520, 300)[::2].t()  # 300 x 260, strided
    assert not A.is_contiguous() and not B.is_contiguous()
    assert_within_bound(tuned(A, B), A, B)
    assert sum(tuned.kernel_calls().values()) == 1


def test_out_is_written_by_the_kernel_when_it_fits_and_by_torch_otherwise(tuned):
    A, B = rand(300, 257), rand(257, 400)
    out = torch.empty(300, 400, dtype=torch.float64)
    assert tuned(A, B, out=out) is out
    assert_within_bound(out, A, B)
    assert sum(tuned.kernel_calls().values()) == 1
    for other in (torch.empty(0, dtype=torch.float64), torch.empty(400, 300, dtype=torch.float64).t()):
        mine, theirs = other.clone(), other.clone()  # resized by torch, or not contiguous
        assert tuned(A, B, out=mine) is mine
        torch.matmul(A, B, out=theirs)
        assert torch.equal(mine, theirs) and mine.stride() == theirs.stride()
    wrong = torch.empty(300, 400, dtype=torch.float32)
    with pytest.raises(RuntimeError) as theirs:
        torch.matmul(A, B, out=wrong)
    with pytest.raises(RuntimeError, match=str(theirs.value)[:30]):
        tuned(A, B, out=wrong)
    assert sum(tuned.kernel_calls().values()) == 1


def test_gradients_match_torch_and_the_backward_dispatches_too(tuned):
    A, B = rand(300, 257).requires_grad_(), rand(257, 400).requires_grad_()
    G = rand(300, 400)
    tuned(A, B).backward(G)
    assert sum(tuned.kernel_calls().values()) == 3  # forward, dA = G·Bᵀ and dB = Aᵀ·G: all class 256
    A2, B2 = A.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()
    torch.matmul(A2, B2).backward(G)
    assert_within_bound(A.grad, G, B.detach().t())
    assert_within_bound(B.grad, A.detach().t(), G)
    assert torch.allclose(A.grad, A2.grad) and torch.allclose(B.grad, B2.grad)


def test_out_with_autograd_is_refused_as_torch_refuses_it(tuned):
    A, B = rand(300, 257).requires_grad_(), rand(257, 400)
    with pytest.raises(RuntimeError, match="out="):
        tuned(A, B, out=torch.empty(300, 400, dtype=torch.float64))


def test_a_choice_stored_after_the_first_call_is_seen_when_the_store_changes():
    m = Matmul(warn=pytest.fail, recheck_s=0.0)
    A, B = rand(300, 300), rand(300, 300)
    assert m.decide(A, B) is None
    tune()
    assert m.decide(A, B) is not None


def test_a_choice_whose_scheme_changed_falls_back_with_one_warning():
    plan, _ = strassen()
    stale = replace(plan, fingerprints=("0" * 24,))
    store_choice(stale, machine=machine_key(), shape=CLASS, speedup=2.0, baseline_median_s=1e-3)
    lines: list[str] = []
    m = Matmul(warn=lines.append)
    A, B = rand(300, 300), rand(300, 300)
    assert torch.equal(m(A, B), A @ B) and torch.equal(m(A, B), A @ B)
    assert len(lines) == 1 and "no longer name" in lines[0] and "vendor matmul" in lines[0]


def test_an_unusable_home_still_multiplies(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FMMFORGE_HOME", str(tmp_path / "file"))
    lines: list[str] = []
    A, B = rand(300, 300), rand(300, 300)
    assert torch.equal(Matmul(warn=lines.append)(A, B), A @ B)
    assert len(lines) == 1 and "FMMFORGE_HOME" in lines[0]


# ------------------------------------------------------------ a busy machine: the contention watch
class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _calls(watch: Contention, clock: FakeClock, kernel_s: float, vendor_s: float, n: int, key="k") -> str:
    """``n`` calls through ``watch``, each taking kernel_s or vendor_s on ``clock``: 'K'/'v' per call."""
    ran = ""
    for _ in range(n):
        kernel = watch.runs_kernel(key)
        seconds = kernel_s if kernel else vendor_s
        clock.now += seconds
        watch.record(key, kernel, seconds, flops=1000)
        ran += "K" if kernel else "v"
    return ran


def test_a_quiet_kernel_keeps_every_call_but_the_periodic_probe():
    clock = FakeClock()
    watch = Contention(clock)
    ran = _calls(watch, clock, 1.0, 1.2, 2 * Contention.PROBE_EVERY)
    assert ran.count("v") == 2 and ran.index("v") == Contention.PROBE_EVERY - 1 and not watch.falling_back()


def test_a_kernel_much_slower_than_torch_falls_back_and_comes_back_with_hysteresis():
    clock = FakeClock()
    watch = Contention(clock)
    assert _calls(watch, clock, 1.0, 1.2, 10) == "K" * 10
    # the machine gets busy: the kernel 5x slower, torch 1.5x; a slow call is compared with torch
    # on the next call, twice (the second time after one more kernel call), then torch takes over
    assert _calls(watch, clock, 5.0, 1.8, 8) == "KvKvvvvv" and watch.falling_back() == ["k"]
    # the first try after RETRY_COST x the kernel's time (5 s), still slow: the next after twice that
    clock.now += Contention.RETRY_COST * 5.0
    assert _calls(watch, clock, 5.0, 1.8, 3) == "Kvv"
    clock.now += Contention.RETRY_COST * 5.0 - 3.6 - 1.0
    assert _calls(watch, clock, 5.0, 1.8, 1) == "v"  # not yet: the wait is never below the kernel's cost
    clock.now += 10.0
    assert _calls(watch, clock, 5.0, 1.8, 1) == "K"
    # within ENTER but above LEAVE of torch: still in fallback (hysteresis)
    clock.now += 1000.0
    assert _calls(watch, clock, 1.1 * 1.8, 1.8, 2) == "Kv" and watch.falling_back()
    clock.now += 1000.0
    assert _calls(watch, clock, 1.0, 1.8, 4) == "KKKK" and not watch.falling_back()


def test_one_slow_call_is_not_a_busy_machine():
    clock = FakeClock()
    watch = Contention(clock)
    _calls(watch, clock, 1.0, 1.2, 5)
    # compared with torch on the next call, and once more after the next kernel call, which is fast
    assert _calls(watch, clock, 9.0, 1.2, 1) + _calls(watch, clock, 1.0, 1.2, 6) == "KvKvKKK"
    assert not watch.falling_back()
    # the first call (compilation, workspaces) is never judged
    fresh = Contention(clock)
    assert _calls(fresh, clock, 30.0, 1.0, 1, key="x") + _calls(fresh, clock, 1.0, 1.2, 3, key="x") == "KKKK"


def test_a_machine_busy_from_the_start_is_found_by_the_periodic_probe():
    clock = FakeClock()
    watch = Contention(clock)
    ran = _calls(watch, clock, 5.0, 1.0, Contention.PROBE_EVERY + 2)  # never faster: no call looks slow
    assert ran == "K" * (Contention.PROBE_EVERY - 1) + "vKv" and watch.falling_back() == ["k"]


def test_one_retry_at_a_time_from_many_threads():
    clock = FakeClock()
    watch = Contention(clock)
    _calls(watch, clock, 1.0, 1.0, 3)
    _calls(watch, clock, 9.0, 1.0, 4)
    assert watch.falling_back() == ["k"]
    clock.now += 1e6
    starts = [watch.runs_kernel("k") for _ in range(8)]  # eight threads at once, before any finishes
    assert starts.count(True) == 1
    watch.abandon("k", True)  # the try raised: the next comes after the back-off again
    assert not watch.runs_kernel("k")


def test_the_dispatcher_sends_a_slow_kernel_to_torch_matmul_and_still_multiplies(monkeypatch):
    tune()
    clock = FakeClock()
    m = Matmul(warn=pytest.fail, contention=Contention(clock))
    A, B = rand(300, 257), rand(257, 400)
    route = m.decide(A, B)
    slow = {"kernel": 1.0}

    def kernel(*a, **kw):
        clock.now += slow["kernel"]
        return route.kernel(*a, **kw)

    real_matmul = torch.matmul

    def vendor(*a, **kw):
        clock.now += 1.2
        return real_matmul(*a, **kw)

    monkeypatch.setattr(m, "decide", lambda A, B: replace(route, kernel=kernel))
    monkeypatch.setattr(torch, "matmul", vendor)
    for _ in range(4):
        assert_within_bound(m(A, B), A, B)
    assert sum(m.kernel_calls().values()) == 4
    slow["kernel"] = 8.0
    got = [m(A, B) for _ in range(8)]
    assert sum(m.kernel_calls().values()) == 6 and len(m.contention.falling_back()) == 1
    assert all(torch.equal(g, real_matmul(A, B)) for g in got[-4:])  # torch.matmul's result, exactly
    m.refresh()
    assert m.contention.falling_back() == []
    assert isinstance(Matmul().contention, Contention) and isinstance(fmmforge.matmul.contention, Contention)


# ------------------------------------------------------------ numpy, threads, the package
def test_numpy_arrays_use_the_kernel_and_otherwise_numpy_matmul(tuned):
    A, B = rand(300, 257).numpy(), rand(257, 400).numpy()
    got = tuned(A, B)
    assert isinstance(got, np.ndarray) and sum(tuned.kernel_calls().values()) == 1
    assert_within_bound(torch.from_numpy(got), torch.from_numpy(A), torch.from_numpy(B))
    out = np.empty((300, 400))
    assert tuned(A, B, out=out) is out and np.array_equal(out, got)
    small, ints = np.ones((3, 4)), np.arange(12).reshape(3, 4)
    assert np.array_equal(tuned(small, small.T), np.matmul(small, small.T))
    assert np.array_equal(tuned(ints, ints.T), np.matmul(ints, ints.T))
    readonly, wide = A.copy(), np.broadcast_to(B[:1], B.shape)  # read-only; a zero stride
    readonly.flags.writeable = False
    for X, Y in [(np.asfortranarray(A), B), (readonly, B), (A, wide)]:
        assert_within_bound(torch.from_numpy(tuned(X, Y)), torch.from_numpy(np.array(X)), torch.from_numpy(np.array(Y)))
    assert sum(tuned.kernel_calls().values()) == 5
    swapped = A.astype(A.dtype.newbyteorder())  # not native: numpy's own
    assert np.array_equal(tuned(swapped, B), np.matmul(swapped, B)) and sum(tuned.kernel_calls().values()) == 5


def test_four_threads_at_once_on_different_shapes(tuned):
    shapes = [(300, 257, 400), (511, 300, 260), (200, 600, 300), (64, 64, 64)]  # two tuned, two not
    inputs = [(rand(M, K, seed=i), rand(K, N, seed=i)) for i, (M, K, N) in enumerate(shapes)]
    barrier = threading.Barrier(4)
    results: dict[int, list[torch.Tensor]] = {}

    errors: list[BaseException] = []

    def work(i: int) -> None:
        A, B = inputs[i]
        barrier.wait()
        try:
            results[i] = [tuned(A, B) for _ in range(3)]
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    run_threads(work, [(i,) for i in range(4)])
    assert errors == []
    for i, (A, B) in enumerate(inputs):
        for got in results[i]:
            if i < 2:
                assert_within_bound(got, A, B)
            else:
                assert torch.equal(got, A @ B)
    assert sum(tuned.kernel_calls().values()) == 6


def test_threads_at_once_through_the_contention_watch():
    """The default dispatcher (its watch on the real clock): whichever way each call goes, every
    product is right and nothing raises, with four threads calling one choice at once."""
    tune()
    m = Matmul(warn=pytest.fail)
    inputs = [(rand(300, 257, seed=i), rand(257, 400, seed=i)) for i in range(4)]
    barrier = threading.Barrier(4)
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        A, B = inputs[i]
        barrier.wait()
        results[i] = [m(A, B) for _ in range(20)]

    run_threads(work, [(i,) for i in range(4)])
    for i, (A, B) in enumerate(inputs):
        for got in results[i]:
            assert_within_bound(got, A, B)
    assert 1 <= sum(m.kernel_calls().values()) <= 80


def test_fmmforge_matmul_is_the_dispatcher_and_core_stays_light():
    tune()
    A, B = rand(300, 300), rand(300, 300)
    assert isinstance(fmmforge.matmul, Matmul) and "matmul" in dir(fmmforge)
    assert_within_bound(fmmforge.matmul(A, B), A, B)
    with pytest.raises(AttributeError):
        fmmforge.no_such_thing  # noqa: B018
    code = "import sys, fmmforge, fmmforge.core.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------ fmmforge.nn
def test_fast_linear_is_a_linear_with_the_same_state_and_results():
    torch.manual_seed(0)
    plain = nn.Linear(257, 300, dtype=torch.float64)
    fast = fmmforge.nn.FastLinear(257, 300, dtype=torch.float64)
    fast.load_state_dict(plain.state_dict())
    assert isinstance(fast, nn.Linear) and fast.state_dict().keys() == plain.state_dict().keys()
    x = rand(260, 257)
    assert torch.equal(fast(x), plain(x))  # no choice: exactly nn.Linear
    tune()
    fmmforge.matmul.refresh()
    y = fast(x)
    assert sum(fmmforge.matmul.kernel_calls().values()) == 1
    assert_within_bound(y - plain.bias.detach(), x, plain.weight.detach().t())


def test_accelerate_swaps_linear_layers_in_place():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(257, 300, dtype=torch.float64), nn.ReLU(),
                          nn.Sequential(nn.Linear(300, 260, dtype=torch.float64)))
    weights = [p for p in model.parameters()]
    x = rand(300, 257)
    before = model(x)
    assert fmmforge.nn.accelerate(model) is model
    assert [type(m) for m in model.modules() if isinstance(m, nn.Linear)] == [fmmforge.nn.FastLinear] * 2
    assert [p for p in model.parameters()] == weights  # the same Parameter objects
    assert torch.equal(model(x), before)  # no choice yet
    tune()
    fmmforge.matmul.refresh()
    x.requires_grad_()
    model(x).sum().backward()
    assert sum(fmmforge.matmul.kernel_calls().values()) >= 2 and x.grad is not None
    single = nn.Linear(4, 4)
    assert type(fmmforge.nn.accelerate(single)) is fmmforge.nn.FastLinear
