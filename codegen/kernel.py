"""A generated kernel: its source files, the facts of its plan, and (after validation) a callable."""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fmmforge.codegen.plan import Plan
from fmmforge.core.atomic import writable_target, write_text
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.paths import make_directory


def check_file_name(name: object) -> str:
    """A kernel's file name must be a plain name (no folder part, no '..', not absolute), so that
    nothing a kernel names can land outside the kernel's own folder."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or Path(name).is_absolute() or Path(name).name != name):
        raise FmmforgeError(f"kernel file name {name!r} is not a plain file name (no '/', no '..', not absolute)")
    return name


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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

    def digests(self) -> dict[str, str]:
        """sha256 of every file: what a cache entry records and checks before each use."""
        return {name: sha256_text(text) for name, text in sorted(self.files.items())}

    def write(self, directory: Path) -> Path:
        """Write every file into ``directory`` (created); all targets are checked before any is written."""
        targets = [(writable_target_in(directory, name), text) for name, text in self.files.items()]
        for target, text in targets:
            write_text(target, text)
        self.path = directory
        return directory / self.module_file

    def module(self) -> types.ModuleType:
        """The kernel's module, made once from the text in ``files`` (the text that was checked)."""
        if self._module is None:
            self._module = self.new_module()
        return self._module

    def new_module(self) -> types.ModuleType:
        """A fresh module from the text in ``files``, named after its file when written so that
        tracebacks show the source. Validation runs on one of its own, so that changing its
        constants never touches a module that other threads may be calling."""
        name = f"fmmforge_kernel_{self.plan.key()}"
        where = str(self.module_path) if self.module_path is not None else f"<{name}>"
        mod = types.ModuleType(name)
        if self.module_path is not None:
            mod.__file__ = where
        exec(compile(self.source, where, "exec"), mod.__dict__)
        return mod

    @property
    def matmul(self) -> Callable[..., Any]:
        return self.module().matmul


def writable_target_in(directory: Path, name: str) -> Path:
    """The path ``directory/name`` may be written at, after checking that ``name`` is plain and
    ``directory`` exists (created if needed) and that the file there may be replaced."""
    make_directory(directory)
    return writable_target(directory / check_file_name(name))

