"""fmmforge.codegen: plans, kernel emitters per backend, validation, kernel cache, benchmarks.

    from fmmforge.codegen.plan import make_plan
    from fmmforge.codegen.generate import generate

    plan, schemes = make_plan("strassen-winograd", levels=2, backend="torch", dtype="float32")
    kernel = generate(plan, schemes)      # emitted, validated against float64, cached on disk
    C = kernel.matmul(A, B)               # kernel.source is a standalone Python module

Modules: plan (what to generate), schedule (one level as a low-memory straight-line program),
emit_python (torch/numpy modules), emit_batched (torch, ``variant="batched"``: levels flattened,
all leaf products in one bmm), emit_cupy (CUDA C + CuPy host), backends, validate,
generate (pipeline and cache), bench and records (measurements in the store), latency (the
``latency`` reward), plugin (built-in registration), commands (``codegen``, ``bench``).
"""
