"""The kernel layouts have one home (codegen/layouts.py) and one list that everything reads."""

from __future__ import annotations

import ast
import inspect
from dataclasses import replace

import pytest

from fmmforge.codegen import costmodel, layouts
from fmmforge.codegen.plan import check_layout, make_plan
from fmmforge.core.errors import FmmforgeError
from fmmforge.plugins import get_backend
from tests.test_floors import modules

# a tuple, list, set or dict literal of two or more layout names outside codegen/layouts.py is the
# list written again; the one kept: calibrate's estimate of the seconds a kernel takes to generate
RESTATED_OK = {("fmmforge.codegen.calibrate", "GENERATE_S")}


def _restated_lists() -> list[str]:
    found = []
    for name, path in sorted(modules().items()):
        if name == "fmmforge.codegen.layouts":
            continue
        tree = ast.parse(path.read_text())
        for stmt in ast.walk(tree):
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
            label = target.id if isinstance(target, ast.Name) else None
            for node in ast.walk(stmt) if isinstance(stmt, ast.Assign) else ():
                elts = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", [])
                named = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in layouts.NAMES]
                if len(named) >= 2 and (name, label) not in RESTATED_OK:
                    found.append(f"{name}:{node.lineno} {named}")
    return sorted(set(found))


def test_no_module_writes_the_list_of_layouts_again():
    assert _restated_lists() == []


def test_every_backend_emits_the_layouts_the_list_gives_it():
    assert get_backend("numpy").variants == get_backend("cupy").variants == ("lowmem",)
    assert get_backend("torch").variants == layouts.NAMES == ("lowmem", "batched", "fused", "parallel")


def test_the_plan_checks_read_each_layouts_backends_devices_and_remainders():
    for x in layouts.LAYOUTS:
        for backend, device in (("torch", "cpu"), ("torch", "cuda:0"), ("numpy", "cpu"), ("cupy", "cuda:0")):
            for remainder in ("peel", "pad", "split"):
                expected = (x.has_backend(backend) and x.runs_on(device.split(":")[0])
                            and (remainder == "peel" or (backend == "torch" and remainder in x.remainders)))
                try:
                    check_layout(x.name, backend, device, remainder)
                    allowed = True
                except FmmforgeError:
                    allowed = False
                assert allowed == expected, (x.name, backend, device, remainder)


@pytest.mark.parametrize("layout", layouts.LAYOUTS, ids=lambda x: x.name)
def test_each_layout_emits_by_its_emitter_and_inlines_its_runtime(layout):
    module_name, function = layout.emitter.split(":")
    runtime = __import__(f"fmmforge.codegen.runtime.{layout.runtime}", fromlist=["_"])
    plan, schemes = make_plan("strassen", 2, backend="torch", variant=layout.name)
    kernel = get_backend("torch").emit(plan, schemes)
    assert kernel.source == layout.emit(plan, schemes)[0]
    own = [f for _, f in inspect.getmembers(runtime, inspect.isfunction) if f.__module__ == runtime.__name__]
    inlined = [f.__name__ for f in own if inspect.getsource(f).rstrip() in kernel.source]
    assert inlined, f"no function of {runtime.__name__} in the {layout.name} kernel"
    assert function in dir(__import__(module_name, fromlist=["_"]))


def test_the_cost_model_prices_each_level_by_the_function_its_layout_names(monkeypatch):
    # a fused level priced as the layout says; name the low-memory pricing instead and the fused plan
    # is walked exactly as the low-memory one (at a square shape no strips of K): the walker asks the layout
    d = make_plan("strassen-winograd", 2, backend="torch")[1]
    shape, table = (1024, 1024, 1024), costmodel.GemmTable({(64, 64, 64): 1e-5, (1024, 1024, 1024): 1e-2})

    def walk(variant):
        return costmodel.features(d, 64, shape, "float32", table, variant=variant)

    assert walk("fused") != walk("lowmem")
    swapped = replace(layouts.layout("fused"), passes="lowmem_level")
    monkeypatch.setitem(layouts._BY_NAME, "fused", swapped)
    assert walk("fused") == walk("lowmem")
    for x in layouts.LAYOUTS:
        assert x.passes is None or callable(getattr(costmodel, x.passes)), x.name
        assert not x.fitted or x.passes, f"{x.name} is fitted but not priced"


def test_a_backend_without_the_layout_names_the_backends_that_have_it():
    plan, _ = make_plan("strassen", 1, backend="torch")
    for variant in ("fused", "parallel", "batched"):
        with pytest.raises(FmmforgeError, match=f"the {variant} variant is for backend torch"):
            get_backend("numpy").check_plan(replace(plan, backend="numpy", variant=variant))
    with pytest.raises(FmmforgeError) as info:
        get_backend("torch").check_plan(replace(plan, variant="weird"))
    assert "weird" in str(info.value) and "is for backend" not in str(info.value)


def test_the_variant_help_names_every_layout():
    from fmmforge.core.app.codegen_commands import VARIANT_HELP

    for x in layouts.LAYOUTS:
        assert f"{x.name} ({x.help})" in VARIANT_HELP
    assert VARIANT_HELP.startswith("auto (fused for torch on the CPU")
