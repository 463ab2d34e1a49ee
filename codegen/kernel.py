"""A generated kernel: its source files, the facts of its plan, and (after validation) a callable."""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmmforge.codegen.plan import Plan
from fmmforge.core.atomic import write_text


@dataclass
class Kernel:
    """``files`` maps file names to their text; ``module_file`` is the Python module among them."""

    plan: Plan
    files: dict[str, str]
    module_file: str
    facts: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # directory the files were written to (cache or -o)
    validation: list[Any] = field(default_factory=list)
    _module: types.ModuleType | None = None

    @property
    def source(self) -> str:
        return self.files[self.module_file]

    @property
    def module_path(self) -> Path | None:
        return None if self.path is None else self.path / self.module_file

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            write_text(directory / name, text)
        self.path = directory
        return directory / self.module_file

    def module(self) -> types.ModuleType:
        """Import the module (from its file when written, so tracebacks show the source)."""
        if self._module is None:
            name = f"fmmforge_kernel_{self.plan.key()}"
            if self.module_path is not None and self.module_path.exists():
                spec = importlib.util.spec_from_file_location(name, self.module_path)
                assert spec is not None and spec.loader is not None
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            else:
                mod = types.ModuleType(name)
                exec(compile(self.source, f"<{name}>", "exec"), mod.__dict__)
            self._module = mod
        return self._module

    @property
    def matmul(self) -> Callable[..., Any]:
        return self.module().matmul


def loaded_module_names() -> list[str]:
    return [n for n in sys.modules if n.startswith("fmmforge_kernel_")]
