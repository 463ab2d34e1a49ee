"""fmmforge.codegen: plans, kernel emitters per backend, validation, kernel cache, benchmarks.

    from fmmforge.codegen.plan import make_plan
    from fmmforge.codegen.generate import generate
    from fmmforge.plugins import get_backend

    plan, schemes = make_plan("strassen-winograd", levels=2, backend="torch", dtype="float32")
    kernel = generate(plan, schemes, backend=get_backend("torch"))  # emitted, validated, cached
    C = kernel.matmul(A, B)               # kernel.source is a standalone Python module

Modules: plan (what to generate), layouts (the kernel layouts, one list: lowmem, batched, fused,
parallel), schedule (one level as a low-memory straight-line program), emit_python (torch/numpy
modules), emit_batched (torch, ``variant="batched"``: levels flattened, all leaf products in one
bmm), fused (torch CPU, ``variant="fused"``: compiled element-wise passes), emit_cupy (CUDA C +
CuPy host), runtime/ (a package: runtime_* are the kernels' helpers as real modules, copied into
each kernel), backends, kernel, validate, generate (pipeline and cache), bench and records
(measurements in the store), latency (the ``latency`` reward), costmodel and calibrate (a
device's cost model), choices (a device's tuned kernel per shape), tune (the tuning loop).
Backends are looked up by name in the plugin layer (fmmforge.plugins.builtin_backends registers
these); codegen functions take the backend object, and codegen itself never imports
fmmforge.plugins. The ``codegen`` and ``bench`` commands are core/app/codegen_commands.py.
"""
