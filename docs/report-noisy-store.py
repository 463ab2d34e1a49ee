"""The noisy store behind docs/report-noisy-store.png, and its report.

    FMMFORGE_HOME=DIR fmmforge calibrate --budget 90      # optional: a real model and records
    python docs/report-noisy-store.py DIR OUT             # adds the noisy records, writes OUT/index.html

Synthetic records of this machine: 12 plans at 5 sizes, a kernel IQR that makes a speed-up band
up to 1e13, a 6x outlier, two records as the latency reward wrote them before records carried
names (fp:9b9a3b3685c8), a tune run that chose the vendor matmul at 2048 and a stored kernel
choice at 4096. Without a calibrated model in DIR, a stand-in with a long name is used.
"""

import json
import random
import sys
from pathlib import Path

from fmmforge.codegen.choices import store_choice
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.records import Record, add_record
from fmmforge.core.catalogue import resolve
from fmmforge.core.store import Store, measurement_run
from fmmforge.hardware.devices import machine_key
from fmmforge.reports import build_report, models, report_files, write_files

home, out = Path(sys.argv[1]), Path(sys.argv[2])
store = Store(home)
machine = machine_key()
rng = random.Random(7)
fps = {n: resolve(n).fingerprint for n in ("strassen", "strassen-winograd", "laderman", "alphatensor:4,4,4",
                                           "alphatensor:2,2,3", "strassen-2x2x3")}
times = iter(f"2026-12-0{d}T{h:02d}:{m:02d}:00+00:00" for d in (1, 2) for h in range(24) for m in range(0, 60, 2))


def rec(name, L, n, speedup, *, label=None, variant="lowmem", kernel_iqr=None):
    vendor = 2 * n**3 / 150e9
    kernel = vendor / speedup
    plan = {"algorithms": [label or name] * L, "fingerprints": [fps[name]] * L, "backend": "torch",
            "dtype": "float32", "device": "cpu", "cutoff": 64, **({} if variant == "lowmem" else {"variant": variant})}
    return Record(device="cpu", machine=machine, algorithm=label or name, fingerprint="/".join([fps[name]] * L),
                  plan=json.dumps(plan), plan_key=f"{name}-{L}-{variant}", backend="torch", levels=L, m=n, k=n, n=n,
                  dtype="float32", threads=2, median_s=kernel, iqr_s=kernel / 30 if kernel_iqr is None else kernel_iqr,
                  baseline_median_s=vendor, baseline_iqr_s=vendor / 40, speedup=speedup, max_error=1e-5 * 3**L,
                  error_bound=4e-4 * 12**L, peak_extra_bytes=n * n * 4 * L, workspace_bytes=n * n * L,
                  created_at=next(times))


PLANS = (("strassen", 1, "lowmem", 1.05), ("strassen", 2, "lowmem", 1.08), ("strassen", 1, "fused", 1.10),
         ("strassen", 2, "fused", 1.15), ("strassen-winograd", 1, "lowmem", 1.06),
         ("strassen-winograd", 2, "fused", 1.16), ("laderman", 1, "lowmem", 0.9), ("alphatensor:4,4,4", 1, "fused", 1.12),
         ("alphatensor:2,2,3", 1, "lowmem", 0.97), ("strassen-2x2x3", 1, "lowmem", 0.95),
         ("laderman", 2, "lowmem", 0.85), ("alphatensor:4,4,4", 2, "fused", 1.2))
with measurement_run("bench"):
    for n in (512, 1024, 2048, 4096, 8192):
        for name, L, variant, f in PLANS:
            speedup = 6.0 if (name, L, n) == ("laderman", 1, 4096) else f * (1 + 0.05 * n / 8192) * rng.uniform(0.93, 1.07)
            exploding = 1e13 * 2 * n**3 / 150e9 if (name, L, variant, n) == ("strassen", 2, "lowmem", 2048) else None
            add_record(rec(name, L, n, speedup, variant=variant, kernel_iqr=exploding), store)
with measurement_run("score"):  # the latency reward, before records carried names
    for n in (1024, 2048):
        add_record(rec("strassen", 1, n, 0.16, label=f"fp:{fps['strassen'][:12]}"), store)
with measurement_run("tune"):  # measured 2048, chose none: the vendor matmul
    for name, f in (("strassen", 0.97), ("alphatensor:4,4,4", 0.99)):
        add_record(rec(name, 1, 2048, f, variant="fused"), store)
plan, _ = make_plan("strassen", 2, backend="torch", dtype="float32", device="cpu", variant="fused")
store_choice(plan, machine=machine, shape=(4096, 4096, 4096), speedup=1.19, baseline_median_s=0.92, store=store)


class StandIn:
    name = ("calibrated v7 (120 records), 2 threads float32; calibrated v7 (48 records), 1 threads float32; "
            "calibrated v7 (36 records), 2 threads float64")

    def predict_ms(self, row):
        return row["kernel_median_ms"] * (1.1 if row["levels"] == 1 else 0.85)


model = models.fitted_cost_model(store, "cpu", machine) or StandIn()
write_files(out, report_files(build_report(store, cost_model=model)))
print(out / "index.html")
