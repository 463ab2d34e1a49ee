"""Generated kernels (torch, numpy, cupy's CUDA source): correctness, validation, cache, CLI."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmmforge.codegen.backends import compile_cuda, nvcc_path
from fmmforge.codegen.generate import generate, kernels_dir, validate_kernel
from fmmforge.codegen.plan import make_plan
from fmmforge.codegen.validate import KernelValidationError, error_bound
from fmmforge.core.catalogue import resolve
from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError, InvalidDecompositionError
from fmmforge.plugins import get_backend

# Strassen, Winograd, Laderman, a DeepMind rectangular scheme, a Kronecker product
SCHEMES = [
    ("strassen", 2),
    ("strassen-winograd", 2),
    ("laderman", 1),
    ("alphatensor:2,3,4", 1),
    ("strassen*naive:1,1,2", 1),
    ("laderman/strassen", 2),
]
SHAPES = [(16, 16, 16), (24, 36, 48), (17, 29, 23), (1, 1, 1), (1, 9, 5), (7, 1, 6), (5, 8, 1), (33, 2, 40)]


def _run(kernel, backend, A, B):
    if backend == "torch":
        return kernel.matmul(torch.from_numpy(A), torch.from_numpy(B)).numpy()
    return kernel.matmul(A, B)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("name,levels", SCHEMES)
def test_kernels_equal_the_reference(backend, name, levels):
    plan, decomps = make_plan(name, levels, backend=backend, dtype="float64", cutoff=1)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    assert kernel.validation and all(r.ok for r in kernel.validation)
    rng = np.random.default_rng(1)
    for M, K, N in SHAPES:
        A, B = rng.uniform(-1, 1, (M, K)), rng.uniform(-1, 1, (K, N))
        C = _run(kernel, backend, A, B)
        assert C.shape == (M, N)
        np.testing.assert_allclose(C, A @ B, atol=1e-12 * max(K, 1) * 100)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_float32_kernel_within_error_bound(backend):
    plan, decomps = make_plan("strassen-winograd", 3, backend=backend, dtype="float32", cutoff=2)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    rng = np.random.default_rng(2)
    A, B = rng.uniform(-1, 1, (70, 45)).astype(np.float32), rng.uniform(-1, 1, (45, 66)).astype(np.float32)
    C = _run(kernel, backend, A, B)
    assert C.dtype == np.float32
    err = np.abs(C.astype(np.float64) - A.astype(np.float64) @ B.astype(np.float64)).max()
    assert err <= error_bound(45, decomps, "float32")


@pytest.mark.parametrize("name,levels,shape,leaf_calls", [
    # 15 = 4·3 + 3: one peel at the top to a multiple of 4, then 49 leaf products on 3×3 blocks
    ("strassen-winograd", 2, (15, 15, 15), 49 + 3),
    # <3,3,3> then <2,2,2>: multiples 6; 13×19×8 peels to 12×18×6 once, 23·7 leaves below
    ("laderman/strassen", 2, (13, 19, 8), 23 * 7 + 3),
    # below the cut-off at the second level: peel to the first level's multiple only (4 = 2·2)
    ("strassen", 2, (5, 5, 5), 7 + 3),
])
def test_peeling_happens_once_at_the_top(name, levels, shape, leaf_calls):
    plan, decomps = make_plan(name, levels, backend="torch", dtype="float64", cutoff=1)
    mod = generate(plan, decomps, backend=get_backend(plan.backend)).module()
    peels, leaves = [], []
    peel, leaf_set, leaf_acc, cutoff = mod._peel, mod._leaf_set, mod._leaf_acc, mod.CUTOFF
    try:
        mod.CUTOFF = 2 if name == "strassen" else 1
        mod._peel = lambda core, leaf, A, B, C, alpha, *mult: (peels.append(mult), peel(core, leaf, A, B, C, alpha, *mult))
        mod._leaf_set = lambda *a: (leaves.append(1), leaf_set(*a))
        mod._leaf_acc = lambda *a: (leaves.append(1), leaf_acc(*a))
        M, K, N = shape
        A, B = torch.rand(M, K, dtype=torch.float64), torch.rand(K, N, dtype=torch.float64)
        assert torch.allclose(mod.matmul(A, B), A @ B)
    finally:
        mod._peel, mod._leaf_set, mod._leaf_acc, mod.CUTOFF = peel, leaf_set, leaf_acc, cutoff
    assert len(peels) == 1, peels  # the deeper levels see divisible blocks
    assert len(leaves) == leaf_calls


def test_zero_levels_is_the_vendor_gemm_and_empty_shapes_work():
    plan, decomps = make_plan("strassen", 0, dtype="float64")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    A = torch.rand(5, 0, dtype=torch.float64)
    B = torch.rand(0, 3, dtype=torch.float64)
    assert torch.equal(kernel.matmul(A, B), torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(TypeError):
        kernel.matmul(A.float(), B.float())


def test_emitted_module_is_standalone_and_readable(tmp_path):
    plan, decomps = make_plan("strassen", 2, dtype="float32")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    src = kernel.source
    imports = {n.names[0].name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import)}
    imports |= {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert imports == {"torch", "threading"}  # threading: per-thread workspaces
    assert "fmmforge" not in src.replace("fmmforge kernel", "").replace("Generated by fmmforge", "")
    assert "# M1 = (A11 + A22)·(B11 + B22)" in src  # the formulas as comments
    copy = tmp_path / "my_kernel.py"
    copy.write_text(src)
    code = ("import torch, my_kernel\n"
            "A = torch.rand(300, 200); B = torch.rand(200, 100)\n"
            "print(float((my_kernel.matmul(A, B) - A @ B).abs().max()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": "", "PYTHONPATH": str(tmp_path)})
    assert float(out.stdout) < 1e-3


def test_numpy_module_imports_only_numpy():
    plan, decomps = make_plan("laderman", 1, backend="numpy", dtype="float64")
    src = generate(plan, decomps, backend=get_backend(plan.backend)).source
    imports = {n.names[0].name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import)}
    assert imports == {"numpy", "threading"}


def test_wrong_decomposition_cannot_reach_codegen():
    good = resolve("strassen")
    U, V, W = good.numerators()
    W = W.copy()
    W[0, 0] += 1
    bad = Decomposition.unchecked(U, V, W, (2, 2, 2))
    plan, _ = make_plan("strassen", 1)
    with pytest.raises(InvalidDecompositionError):
        generate(plan, [bad], backend=get_backend(plan.backend))
    with pytest.raises(InvalidDecompositionError):
        make_plan("x", 1, resolve=lambda name: bad)


def test_mod2_scheme_is_refused():
    with pytest.raises(FmmforgeError, match="modulo 2"):
        make_plan("alphatensor-mod2:4,4,4", 1)


def test_a_wrong_kernel_fails_validation_and_is_not_cached():
    plan, decomps = make_plan("strassen", 1, dtype="float64")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend), validate=False)
    kernel.files["kernel.py"] = kernel.source.replace("torch.add(A11, A22, out=S)", "torch.sub(A11, A22, out=S)")
    assert kernel.files["kernel.py"] != generate(plan, decomps, backend=get_backend(plan.backend), validate=False).source
    with pytest.raises(KernelValidationError, match="will not be benchmarked"):
        validate_kernel(kernel, get_backend("torch"), decomps)


def test_kernels_are_cached_by_plan(monkeypatch):
    plan, decomps = make_plan("strassen", 1, dtype="float64")
    first = generate(plan, decomps, backend=get_backend(plan.backend))
    assert first.path is not None and first.path.parent == kernels_dir()
    calls = []
    from fmmforge.codegen import backends

    monkeypatch.setattr(backends.TorchBackend, "emit", lambda self, *a: calls.append(a))
    again = generate(plan, decomps, backend=get_backend(plan.backend))
    assert calls == [] and again.path == first.path and again.source == first.source
    other, ds = make_plan("strassen", 2, dtype="float64")
    generate(other, ds, backend=get_backend(other.backend), validate=False, use_cache=False)
    assert len(calls) == 1  # a different plan is emitted anew


def test_bad_plans_are_clear_errors():
    with pytest.raises(FmmforgeError, match="levels"):
        make_plan("strassen", -1)
    with pytest.raises(FmmforgeError, match="dtype"):
        make_plan("strassen", 1, dtype="int7")
    with pytest.raises(FmmforgeError, match="unknown algorithm"):
        make_plan("no-such-scheme", 1)
    plan, decomps = make_plan("strassen", 1, backend="nope")
    with pytest.raises(FmmforgeError, match="unknown backend 'nope'"):
        get_backend(plan.backend)  # backends are looked up by name in the plugin layer only
    plan, decomps = make_plan("strassen", 1, backend="torch")
    with pytest.raises(FmmforgeError, match="the plan is for backend torch, not numpy"):
        generate(plan, decomps, backend=get_backend("numpy"))


# ---------------------------------------------------------------------- CUDA (cupy backend)
def test_cupy_backend_emits_cuda_that_nvcc_compiles(tmp_path):
    plan, decomps = make_plan("strassen/laderman", 2, backend="cupy", device="cuda", dtype="float32")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend), validate=False)
    assert set(kernel.files) == {"kernel.py", "kernel.cu"}
    host = kernel.files["kernel.py"]
    imports = {n.names[0].name for n in ast.walk(ast.parse(host)) if isinstance(n, ast.Import)}
    assert imports == {"cupy"}
    if nvcc_path() is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed: cannot compile the emitted CUDA")
    kernel.write(tmp_path)
    ptx = compile_cuda(tmp_path / "kernel.cu")
    text = ptx.read_text()
    assert "fmm_sums" in text and "fmm_outputs" in text


def test_cupy_float64_cuda_compiles(tmp_path):
    if nvcc_path() is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed: cannot compile the emitted CUDA")
    plan, decomps = make_plan("alphatensor:2,3,4", 1, backend="cupy", device="cuda", dtype="float64")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend), validate=False)
    kernel.write(tmp_path)
    assert compile_cuda(tmp_path / "kernel.cu").exists()


def _cuda_reason() -> str | None:
    from fmmforge.codegen.backends import CupyBackend

    return CupyBackend().available()


@pytest.mark.skipif(_cuda_reason() is not None, reason=f"cupy kernels need a GPU with cupy: {_cuda_reason()}")
@pytest.mark.parametrize("name,levels", [("strassen", 2), ("laderman", 1), ("alphatensor:2,3,4", 1)])
def test_cupy_kernels_equal_the_reference_on_gpu(name, levels):
    import cupy

    plan, decomps = make_plan(name, levels, backend="cupy", device="cuda:0", dtype="float64", cutoff=1)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    rng = np.random.default_rng(3)
    for M, K, N in SHAPES:
        A, B = rng.uniform(-1, 1, (M, K)), rng.uniform(-1, 1, (K, N))
        C = cupy.asnumpy(kernel.matmul(cupy.asarray(A), cupy.asarray(B)))
        np.testing.assert_allclose(C, A @ B, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch CUDA kernels cannot run here")
def test_torch_cuda_kernel_equals_reference():
    plan, decomps = make_plan("strassen", 2, device="cuda:0", dtype="float64", cutoff=1)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    A = torch.rand(37, 41, dtype=torch.float64, device="cuda")
    B = torch.rand(41, 29, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(kernel.matmul(A, B), A @ B)


# ---------------------------------------------------------------------- CLI
def test_cli_codegen_writes_kernel_and_prints_plan(cli, tmp_path):
    out = tmp_path / "k"
    code, stdout, err = cli("codegen", "strassen-winograd", "--backend", "torch", "--device", "cpu",
                            "--levels", "2", "-o", out)
    assert code == 0, err
    assert (out / "kernel.py").exists()
    assert "2 levels" in stdout and "after CSE" in stdout and "15 (U 4, V 4, W 7)" in stdout
    assert "workspace" in stdout and str(out / "kernel.py") in stdout


def test_cli_codegen_store_name(cli, tmp_path):
    from fmmforge.core.formats import write_file

    path = tmp_path / "s.json"
    write_file(resolve("strassen"), path, "json")
    assert cli("import", path, "--name", "mine")[0] == 0
    code, stdout, err = cli("codegen", "mine", "--backend", "numpy", "--levels", "1", "--dtype", "float64")
    assert code == 0, err
    assert "kernel:" in stdout


@pytest.mark.parametrize("args,message", [
    (["--levels", "-1"], "levels"),
    (["--backend", "nope"], "unknown backend"),
    (["--device", "cuda:7"], "not present"),
    (["--device", "tpu-v4"], "spec-only"),
    (["--dtype", "int3"], "dtype"),
])
def test_cli_codegen_bad_plans_exit_2(cli, args, message):
    code, stdout, err = cli("codegen", "strassen", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_codegen_cupy_emit_only(cli, tmp_path):
    code, stdout, err = cli("codegen", "laderman", "--backend", "cupy", "--device", "cuda", "--emit-only", "-o", tmp_path)
    assert code == 0, err
    assert (tmp_path / "kernel.cu").exists() and "NOT validated" in stdout


# ---------------------------------------------------------------------- batched torch variant (issue 5)
BATCHED_SCHEMES = [
    ("strassen", 1),
    ("strassen", 2),
    ("laderman", 1),
    ("alphatensor:2,3,4", 1),  # a rectangular DeepMind scheme
    ("strassen*strassen", 1),
]


def _batched_shapes(n, m, p):
    """Divisible (1-wide and wider blocks), non-divisible (peeling), and degenerate shapes."""
    return [(n, m, p), (2 * n, 3 * m, 2 * p), (n, 2 * m, 3 * p), (2 * n + 1, 3 * m + 2, 2 * p + 1),
            (n + 1, m, p), (n, m + 1, p), (n, m, p + 1), (1, 3 * m, 2 * p), (2 * n, 3 * m, 1), (2 * n, 1, 2 * p)] + SHAPES


@pytest.mark.parametrize("name,levels", BATCHED_SCHEMES)
def test_batched_kernels_equal_the_reference(name, levels):
    plan, decomps = make_plan(name, levels, dtype="float64", cutoff=1, variant="batched")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))  # emitted, validated against float64 (every peeling path), cached
    assert kernel.validation and all(r.ok for r in kernel.validation)
    assert kernel.facts["variant"] == "batched"
    src = kernel.source
    assert "batched" in src.splitlines()[0] and "# M1 = " in src  # the plan and the formulas
    nodes = list(ast.walk(ast.parse(src)))
    assert sum(isinstance(x, ast.Call) and getattr(x.func, "attr", "") == "bmm" for x in nodes) == 1
    assert {x.names[0].name for x in nodes if isinstance(x, ast.Import)} == {"torch", "threading"}
    assert not any(isinstance(x, ast.ImportFrom) for x in nodes)
    n, m, p = kernel.facts["flattened"]["format"]
    mod = kernel.module()
    assert (mod.N1, mod.M1, mod.P1, mod.CUTOFF) == (n, m, p, 1)
    rng = np.random.default_rng(5)
    for M, K, N in _batched_shapes(n, m, p):
        A, B = rng.uniform(-1, 1, (M, K)), rng.uniform(-1, 1, (K, N))
        C = kernel.matmul(torch.from_numpy(A), torch.from_numpy(B)).numpy()
        assert C.shape == (M, N)
        np.testing.assert_allclose(C, A @ B, atol=1e-12 * max(K, 1) * 100, err_msg=f"{M}x{K}x{N}")


def test_batched_float32_views_out_and_workspace_figure():
    plan, decomps = make_plan("strassen", 1, dtype="float32", cutoff=2, variant="batched")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    mod = kernel.module()
    rng = np.random.default_rng(6)
    A = torch.from_numpy(rng.uniform(-1, 1, (30, 21)).astype(np.float32))
    B = torch.from_numpy(rng.uniform(-1, 1, (34, 21)).astype(np.float32)).t()  # not contiguous
    ref = A.double() @ B.double()
    out = torch.full((40, 50), 7.0)
    view = out[3:33, 5:39]  # a strided out=
    assert kernel.matmul(A, B, out=view) is view
    assert float((view.double() - ref).abs().max()) <= error_bound(21, decomps, "float32")
    assert bool((out[:3] == 7).all()) and bool((out[:, 39:] == 7).all())  # nothing outside the view
    # the workspace figure printed by `fmmforge codegen` is what a square divisible call holds
    mod.clear_workspaces()
    assert mod.workspace_bytes() == 0
    X = torch.rand(8, 8)
    mod.matmul(X, X)
    coef = 3 * 7 * 4  # U^T, V^T, W of Strassen
    assert mod.workspace_bytes() == (kernel.facts["workspace_fraction_square"] * 64 + coef) * 4


def test_batched_variant_is_torch_only():
    with pytest.raises(FmmforgeError, match="only for backend torch"):
        make_plan("strassen", 1, backend="numpy", variant="batched")
    with pytest.raises(FmmforgeError, match="only for backend torch"):
        make_plan("strassen", 1, backend="cupy", device="cuda", variant="batched")
    plan, decomps = make_plan("strassen", 1, backend="numpy")
    from dataclasses import replace

    with pytest.raises(FmmforgeError, match="no batched variant"):
        generate(replace(plan, variant="batched"), decomps, backend=get_backend("numpy"))
    with pytest.raises(FmmforgeError, match="unknown variant 'fast'; use one of lowmem, batched"):
        make_plan("strassen", 1, variant="fast")


def test_plan_key_unchanged_for_lowmem():
    import hashlib
    import json

    plan, _ = make_plan("strassen", 2, dtype="float64", cutoff=8)
    assert plan.variant == "lowmem" and "variant" not in plan.as_dict() and "batched" not in plan.describe()
    old = {"fingerprints": list(plan.fingerprints), "levels": 2, "backend": "torch", "dtype": "float64",
           "device": "cpu", "cutoff": 8}  # the key's content before variants existed
    assert plan.key() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:20]
    assert make_plan("strassen", 2, dtype="float64", cutoff=8, variant="lowmem")[0].key() == plan.key()
    batched, _ = make_plan("strassen", 2, dtype="float64", cutoff=8, variant="batched")
    assert batched.as_dict()["variant"] == "batched" and batched.key() != plan.key()
    assert "batched" in batched.describe()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch CUDA kernels cannot run here")
def test_batched_torch_cuda_kernel_equals_reference():
    plan, decomps = make_plan("alphatensor:2,3,4", 1, device="cuda:0", dtype="float64", cutoff=1, variant="batched")
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    for M, K, N in [(4, 6, 8), (9, 13, 17), (1, 3, 4)]:
        A = torch.rand(M, K, dtype=torch.float64, device="cuda")
        B = torch.rand(K, N, dtype=torch.float64, device="cuda")
        C = kernel.matmul(A, B)
        assert C.device.type == "cuda"
        torch.testing.assert_close(C, A @ B)


def test_cli_codegen_batched_prints_its_workspace(cli, tmp_path):
    code, stdout, err = cli("codegen", "strassen", "--levels", "2", "--variant", "batched", "--size", "1024",
                            "-o", tmp_path)
    assert code == 0, err
    assert "batched" in stdout and "1 bmm" in stdout
    assert "workspace: 11.188 × size of C" in stdout  # 3·49/16 (S, T, P) + A/C and B blocks
    assert "torch.bmm(S, T, out=P)" in (tmp_path / "kernel.py").read_text()


def test_auto_variant_is_fused_for_torch_on_the_cpu_else_lowmem():
    from fmmforge.codegen.plan import resolve_variant

    assert resolve_variant("auto", "torch", "cpu") == "fused"
    assert resolve_variant("auto", "torch", "cpu", "pad") == "fused"
    assert resolve_variant("auto", "torch", "cpu", "split") == "lowmem"  # uneven blocks: low-memory only
    assert resolve_variant("auto", "numpy", "cpu") == "lowmem"
    assert resolve_variant("auto", "torch", "cuda:0") == "lowmem"
    assert resolve_variant("auto", "cupy", "cuda:0") == "lowmem"
    assert resolve_variant("batched", "torch", "cpu") == "batched"  # an explicit layout stays


@pytest.mark.parametrize("args,variant", [([], "fused"), (["--backend", "numpy"], "lowmem"),
                                          (["--remainder", "split"], "lowmem"), (["--variant", "lowmem"], "lowmem")])
def test_cli_codegen_default_layout(cli, tmp_path, args, variant):
    code, stdout, err = cli("codegen", "strassen", "--levels", "1", "--dtype", "float64", "--cutoff", "4",
                            "--size", "64", "-o", tmp_path, *args)
    assert code == 0, err
    source = (tmp_path / "kernel.py").read_text()
    assert ("_fused_sums(" in source) == (variant == "fused")


def test_cli_bench_default_layout_is_fused_on_the_cpu(cli):
    import json

    from fmmforge.codegen.records import query_records

    code, out, err = cli("bench", "--sizes", "12", "--algos", "strassen", "--levels", "1", "--dtype", "float64",
                         "--cutoff", "2", "--pairs", "1", "--min-sample-ms", "1")
    assert code == 0, err
    assert "variant fused" in out
    (row,) = query_records()
    assert json.loads(row.plan)["variant"] == "fused"


@pytest.mark.parametrize("args,message", [
    (["codegen", "strassen", "--variant", "fast"], "unknown variant 'fast'; use one of lowmem, batched"),
    (["codegen", "strassen", "--backend", "numpy", "--variant", "batched"], "only for backend torch"),
    (["bench", "--sizes", "16", "--algos", "strassen", "--levels", "1", "--variant", "fast"], "unknown variant"),
])
def test_cli_bad_variant_exits_2(cli, args, message):
    code, stdout, err = cli(*args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bench_batched_records_the_variant(cli):
    import json

    from fmmforge.codegen.records import query_records

    code, out, err = cli("bench", "--sizes", "12", "--algos", "strassen", "--levels", "1", "--dtype", "float64",
                         "--cutoff", "2", "--pairs", "1", "--min-sample-ms", "1", "--variant", "batched")
    assert code == 0, err
    assert "variant batched" in out
    (row,) = query_records()
    plan, _ = make_plan("strassen", 1, dtype="float64", cutoff=2, variant="batched")
    assert row.plan_key == plan.key() and json.loads(row.plan)["variant"] == "batched"


@pytest.mark.parametrize("args,message", [
    (["--size", "0"], "--size must be between 1"),
    (["--size", "-4"], "--size must be between 1"),
    (["--size", str(2**31 + 1)], "--size must be between 1"),
    (["--cutoff", "0"], "--cutoff must be between 1"),
    (["--levels", "9"], "--levels must be between 0 and 8"),
])
def test_cli_codegen_numbers_out_of_range_exit_2(cli, tmp_path, args, message):
    code, stdout, err = cli("codegen", "strassen", "-o", tmp_path / "k", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k").exists()


def test_codegen_never_imports_the_plugin_layer():
    """codegen is floor 3, plugins floor 4: backends come in as objects (only the CLI looks them up)."""
    from pathlib import Path

    import fmmforge.codegen

    found = []
    for path in sorted(Path(fmmforge.codegen.__file__).parent.rglob("*.py")):
        if path.name == "commands.py":  # the `codegen`/`bench` commands: the application floor
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.startswith("fmmforge.plugins")]
    assert found == []


def test_python_emitter_refuses_a_backend_it_cannot_write():
    from fmmforge.codegen.emit_python import emit_python

    plan, decomps = make_plan("strassen", 1, backend="cupy", device="cuda")
    with pytest.raises(FmmforgeError, match="writes kernels for torch, numpy, not backend 'cupy'"):
        emit_python(plan, decomps)


@pytest.mark.parametrize("name,levels,pairs", [("strassen", 3, 1), ("laderman/strassen", 3, 2)])
def test_one_function_pair_per_distinct_algorithm(name, levels, pairs):
    plan, decomps = make_plan(name, levels, dtype="float64", cutoff=1)
    kernel = generate(plan, decomps, backend=get_backend(plan.backend))
    defs = [n.name for n in ast.walk(ast.parse(kernel.source)) if isinstance(n, ast.FunctionDef)
            and n.name.endswith(("_set", "_acc")) and not n.name.startswith("_leaf")]
    assert len(defs) == 2 * pairs, defs
    mod = kernel.module()
    assert len(mod.LEVELS) == levels and len(set(mod.LEVELS)) == pairs
    A, B = torch.rand(24, 16, dtype=torch.float64), torch.rand(16, 40, dtype=torch.float64)
    torch.testing.assert_close(mod.matmul(A, B), A @ B)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_kernels_inline_the_runtime_modules(backend):
    """The runtime is real Python (importable, testable) and copied verbatim into each kernel."""
    import inspect

    from fmmforge.codegen.runtime import runtime_caches, runtime_lowmem, runtime_numpy, runtime_torch

    ops = runtime_torch if backend == "torch" else runtime_numpy
    plan, decomps = make_plan("strassen", 2, backend=backend, dtype="float64")
    src = generate(plan, decomps, backend=get_backend(backend)).source
    for fn in (runtime_caches._cache, runtime_caches._ws, ops._fits, ops._allocate, ops._leaf_set, ops.matmul,
               runtime_lowmem._level, runtime_lowmem._multiples, runtime_lowmem._peel):
        assert inspect.getsource(fn) in src, fn.__name__
    other = runtime_numpy if backend == "torch" else runtime_torch
    assert inspect.getsource(other._allocate) not in src


def test_runtime_multiples_stop_at_the_first_level_below_the_cutoff(monkeypatch):
    from fmmforge.codegen.runtime import runtime_lowmem

    monkeypatch.setattr(runtime_lowmem, "FORMATS", [(2, 2, 2), (3, 3, 3)])
    monkeypatch.setattr(runtime_lowmem, "CUTOFF", 4)
    assert runtime_lowmem._multiples(24, 24, 24, 0) == (6, 6, 6)  # 24 / 2 = 12 >= 3·4
    assert runtime_lowmem._multiples(20, 24, 24, 0) == (2, 2, 2)  # 20 / 2 = 10 < 3·4
    assert runtime_lowmem._multiples(7, 24, 24, 0) == (1, 1, 1)
    assert runtime_lowmem._multiples(12, 12, 12, 1) == (3, 3, 3)


def test_runtime_workspaces_are_reused_until_the_shape_changes():
    from fmmforge.codegen.runtime import runtime_numpy

    namespace = {"np": np}
    from fmmforge.codegen.emit_python import backend_runtime, thread_caches

    exec("import threading\n" + thread_caches(False) + backend_runtime(runtime_numpy), namespace)
    like = np.zeros((2, 2))
    first = namespace["_ws"]("S", (3, 4), like)
    assert namespace["_ws"]("S", (3, 4), like) is first and first.shape == (3, 4)
    assert namespace["_ws"]("S", (4, 3), like) is not first
    assert namespace["workspace_bytes"]() == 12 * 8
    namespace["clear_workspaces"]()
    assert namespace["workspace_bytes"]() == 0
