"""codegen.schedule: the low-memory straight-line program of one level (exact coefficients)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from fmmforge.codegen import schedule
from fmmforge.codegen.plan import make_plan
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition


def _halved(name: str, term: int = 0) -> Decomposition:
    """``name`` with u_term halved and w_term doubled: the same scheme with rational coefficients."""
    d = resolve(name)
    U, V, W = (np.array(x, dtype=object) for x in d.factors())
    U[:, term] = [Fraction(x) / 2 for x in U[:, term]]
    W[:, term] = [Fraction(x) * 2 for x in W[:, term]]
    return Decomposition.create(U, V, W, d.format)


def _apply(sched: schedule.LevelSchedule, d: Decomposition, rng) -> bool:
    """Run the program on random integer blocks (1×1) and compare with the exact product."""
    n, m, p = d.format
    A = [Fraction(int(x)) for x in rng.integers(-5, 6, n * m)]
    B = [Fraction(int(x)) for x in rng.integers(-5, 6, m * p)]
    env = {("C", c): Fraction(0) for c in range(n * p)}
    val = {"A": A, "B": B}

    def get(o):
        return val[o.kind][o.index] if o.kind in val else env[(o.kind, o.index)]

    for op in sched.ops:
        if isinstance(op, schedule.Product):
            x = op.coef * get(op.a) * get(op.b)
            env[(op.dst.kind, op.dst.index)] = x if op.mode == "set" else env[(op.dst.kind, op.dst.index)] + x
        elif isinstance(op, schedule.Add2):
            env[(op.dst.kind, op.dst.index)] = get(op.x) + op.coef * get(op.y)
        elif isinstance(op, schedule.Axpy):
            env[(op.dst.kind, op.dst.index)] = get(op.dst) + op.coef * get(op.x)
        else:
            env[(op.dst.kind, op.dst.index)] = op.coef * get(op.x)
    want = [sum(A[i * m + k] * B[k * p + j] for k in range(m)) for i in range(n) for j in range(p)]
    return [env[("C", i * p + j)] for i in range(n) for j in range(p)] == want


@pytest.mark.parametrize("name", ["strassen", "strassen-winograd", "laderman", "alphatensor:2,2,3"])
def test_a_level_computes_the_product_exactly_with_integral_and_rational_coefficients(name):
    rng = np.random.default_rng(1)
    for d in (resolve(name), _halved(name), _halved(name, term=3)):
        sched = schedule.schedule_level(d, "set", search_steps=50)
        assert all(isinstance(op.coef, Fraction) for op in sched.ops)  # the emitters format Fractions
        assert _apply(sched, d, rng)


def test_scaling_a_term_by_a_rational_does_not_change_the_pass_count():
    for name in ("strassen-winograd", "laderman"):
        plain = schedule.schedule_level(resolve(name), "set", search_steps=0)
        halved = schedule.schedule_level(_halved(name), "set", search_steps=0)
        assert halved.passes == plain.passes


def test_rational_scheme_kernel_validates():
    d = _halved("strassen-winograd", term=2)
    from fmmforge.codegen.generate import generate
    from fmmforge.plugins import get_backend

    plan, _ = make_plan("strassen-winograd", 2, dtype="float64", cutoff=4)
    kernel = generate(plan, [d, d], backend=get_backend("torch"))
    assert kernel.validation
