"""The tuning loop as a subsystem of codegen (docs/tuning.md): for one (device, M×K×N, dtype) it
collects schemes, ranks plans by the device's cost model, measures the best, refits and stores the
fastest as the device's choice (codegen.choices), which fmmforge.matmul reads.

* :mod:`.request` -- what a tune is asked (:class:`TuneRequest`) and gives back (:class:`TuneResult`);
* :mod:`.candidates` -- schemes (known, and what the engine collects) and the plans built from them;
* :mod:`.models` -- :class:`CostModel`, the one interface the loop sees of a cost model, and its
  calibrated, prior and (hardware.tpu_model) analytic implementations;
* :mod:`.policy` -- ranking, the per-family correction, the rounds' picks, the anchors, the finalists;
* :mod:`.loop` -- :func:`tune`, handed its search engine, codegen backend and measuring function.
"""

from fmmforge.codegen.tune.loop import Measure, bench_measure, tune
from fmmforge.codegen.tune.models import CostModel, FittedModel, PriorModel
from fmmforge.codegen.tune.request import Candidate, Measured, TuneProgress, TuneRequest, TuneResult

__all__ = ["Candidate", "CostModel", "FittedModel", "Measure", "Measured", "PriorModel", "TuneProgress",
           "TuneRequest", "TuneResult", "bench_measure", "tune"]
