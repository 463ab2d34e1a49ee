"""`fmmforge demo` runs the whole loop (search, calibrate, tune, fmmforge.matmul, report); here on
a small shape with small budgets, so that every step runs for real in the test suite."""

from __future__ import annotations

import pytest

from fmmforge.core.paths import default_home


@pytest.mark.slow
def test_the_demo_runs_the_loop_end_to_end(cli, monkeypatch):
    monkeypatch.setattr("fmmforge.core.app.demo.DEMO_SIZE", 512)
    monkeypatch.setattr("fmmforge.core.app.demo.DEMO_CALIBRATE_S", 4.0)
    monkeypatch.setattr("fmmforge.core.app.demo.DEMO_TUNE_S", 10.0)
    from fmmforge.codegen import tune as tuning

    real = tuning.TuneRequest
    monkeypatch.setattr("fmmforge.codegen.tune.TuneRequest",
                        lambda **kw: real(**{**kw, "min_leaf": 128, "max_levels": 1}))
    code, out, err = cli("demo")
    assert code == 0, err
    for step in ("5. Search", "6. Calibrate", "7. Tune 512x512x512", "8. fmmforge.matmul", "9. Report"):
        assert step in out
    assert "choice for cpu, 512x512x512 float32" in out
    assert "routes to:" in out and "max |C - A·B| against float64" in out
    assert (default_home() / "reports" / "demo" / "index.html").is_file()
