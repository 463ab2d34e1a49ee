"""The package installs from a built wheel (not only editable): the root package (only its
__init__.py), the five subpackages, the data files (DeepMind's factorizations with their licence,
the chip specs) and the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                              ".hypothesis", ".fmmforge-demo")


@pytest.mark.slow
def test_built_wheel_installs_and_runs(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("fmmforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in ("core", "core/formats", "plugins", "hardware", "codegen", "codegen/runtime", "reports"):
        assert f"fmmforge/{sub}/__init__.py" in names
    assert "fmmforge/__init__.py" in names  # the root package: fmmforge.matmul, fmmforge.nn
    subpackages = ("core", "plugins", "hardware", "codegen", "reports")
    from_root = sorted(n for n in names if n.startswith("fmmforge/") and n.split("/")[1] not in subpackages)
    assert from_root == ["fmmforge/__init__.py"]  # nothing else of the root: no tests/, benchmarks/
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "fmmforge/core/data/alphatensor_z.npz" in names
    assert "fmmforge/core/data/ALPHATENSOR.md" in names
    assert any(n.startswith("fmmforge/hardware/data/devices/") and n.endswith(".toml") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site), "FMMFORGE_HOME": str(tmp_path / "home")}
    code = ("import fmmforge.core, fmmforge.core.alphatensor as at, sys\n"
            "from fmmforge.core.app.cli import main\n"
            "assert 'torch' not in sys.modules\n"
            "import fmmforge, torch\n"
            "assert fmmforge.matmul(torch.eye(2), torch.eye(2)).equal(torch.eye(2))\n"
            f"assert fmmforge.core.__file__.startswith({str(site)!r}), fmmforge.core.__file__\n"
            "assert at.load((4, 4, 5)).verify().valid\n"
            "sys.exit(main(['show', 'strassen']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "M7" in run.stdout and "C22" in run.stdout


def test_the_package_namespace_is_the_public_api_and_its_version():
    """``fmmforge`` exposes matmul, nn, tune, TuneRequest and __version__ (lazily: importing it and
    reading the version load no torch), and none of its own helpers (typing's Any, __future__'s
    annotations)."""
    code = ("import sys, fmmforge\n"
            "from importlib.metadata import version\n"
            "assert fmmforge.__version__ == version('fmmforge'), fmmforge.__version__\n"
            "from fmmforge.core.version import __version__\n"
            "assert fmmforge.__version__ == __version__\n"
            "assert 'torch' not in sys.modules\n"
            "print(' '.join(dir(fmmforge)))\n"
            "for name in ('Any', 'annotations'):\n"
            "    assert not hasattr(fmmforge, name), name\n"
            "import fmmforge.core\n"
            "print(' '.join(dir(fmmforge)))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    public = ["TuneRequest", "__version__", "matmul", "nn", "tune"]
    assert [line.split() for line in run.stdout.splitlines()] == [public, public]
