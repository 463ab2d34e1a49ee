"""Third-party plugins found through the `fmmforge` entry-point group.

Rather than pip-installing tests/example_plugin (slow, and it would change the developer's
environment), each test writes the package's dist-info (METADATA and entry_points.txt,
taken from its pyproject.toml) into a temporary folder and puts that folder and the
package's source on the path: importlib.metadata discovers entry points exactly as it does
for an installed package. The CLI runs in a subprocess so discovery starts from scratch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from fmmforge.plugins import get_reward, reset_plugin_manager, rewards
from fmmforge.plugins.registry import problems, registry
from tests.helpers import builtin_rewards_and_commands

EXAMPLE = Path(__file__).parent / "example_plugin"


def write_dist(root: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    """A minimal installed-distribution record for ``name`` under ``root``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[fmmforge]"] + [f"{key} = {value}" for key, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def example_dist(root: Path) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    write_dist(root, project["name"], project["version"], project["entry-points"]["fmmforge"])


def broken_dist(root: Path) -> None:
    write_dist(root, "fmmforge-broken-plugin", "0.3.0", {"broken": "fmmforge_broken_plugin"})
    (root / "fmmforge_broken_plugin.py").write_text(
        'raise ImportError("fmmforge_broken_plugin needs libfancy, which is not installed")\n'
    )


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setattr("fmmforge.plugins.manager.BUILTIN_PLUGINS", builtin_rewards_and_commands())
    root = tmp_path / "site"
    root.mkdir()
    return root


def run_cli(site: Path, *args: str, plugins: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE)])
    env["COLUMNS"] = "200"
    env.pop("FMMFORGE_PLUGINS", None)
    if plugins is not None:
        env["FMMFORGE_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "fmmforge.core", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_example_plugin_is_discovered_and_usable_from_the_cli(site):
    example_dist(site)
    listing = run_cli(site, "plugins")
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if " nnz " in ln)
    assert "fmmforge-example-plugin 0.1.0" in line
    assert "minus the nonzero coefficients" in line

    scored = run_cli(site, "score", "strassen", "--reward", "rank", "--reward", "nnz:0.5")
    assert scored.returncode == 0, scored.stderr
    # strassen: rank 7, 12 + 12 + 12 nonzeros -> -7 + 0.5 * -36
    total = next(ln for ln in scored.stdout.splitlines() if "total" in ln)
    assert "-25" in total
    assert "nnz U" in scored.stdout


def test_broken_plugin_is_reported_with_its_package_and_other_commands_work(site):
    example_dist(site)
    broken_dist(site)
    listing = run_cli(site, "plugins")
    assert listing.returncode == 0, listing.stderr
    assert "nnz" in listing.stdout  # the healthy plugin still loads
    broken = [ln for ln in listing.stdout.splitlines() if ln.startswith("broken:")]
    assert len(broken) == 1
    assert "fmmforge-broken-plugin 0.3.0" in broken[0] and "libfancy" in broken[0]

    for args in (("show", "strassen"), ("score", "strassen", "--reward", "nnz")):
        done = run_cli(site, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr

    unknown = run_cli(site, "score", "strassen", "--reward", "fancy")
    assert unknown.returncode == 2
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown reward 'fancy'" in lines[0]
    assert "broken plugin(s) skipped: fmmforge-broken-plugin 0.3.0" in lines[0]


def test_broken_plugin_does_not_affect_list_in_process(site, monkeypatch, cli):
    broken_dist(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("FMMFORGE_PLUGINS", raising=False)
    reset_plugin_manager()
    try:
        code, out, err = cli("list", "--shape", "2,2,2")
        assert code == 0, err
        assert "strassen" in out
        assert [str(p.origin) for p in problems()] == ["fmmforge-broken-plugin 0.3.0"]
    finally:
        reset_plugin_manager()


def test_environment_variable_restricts_third_party_plugins(site, monkeypatch):
    """FMMFORGE_PLUGINS: unset = all, empty = none, else package or entry-point names."""
    example_dist(site)
    broken_dist(site)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))

    def loaded(value: str | None) -> tuple[set[str], int]:
        if value is None:
            monkeypatch.delenv("FMMFORGE_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("FMMFORGE_PLUGINS", value)
        reset_plugin_manager()
        return set(rewards()) - {"rank", "additions", "stability", "tpu-cost"}, len(problems())

    try:
        assert loaded(None) == ({"nnz"}, 1)
        assert loaded("") == (set(), 0)
        assert loaded("fmmforge-example-plugin") == ({"nnz"}, 0)
        assert loaded("FMMFORGE_EXAMPLE_PLUGIN") == ({"nnz"}, 0)  # names are normalised
        assert loaded("example") == ({"nnz"}, 0)  # the entry-point name works too
        assert loaded("fmmforge-broken-plugin") == (set(), 1)
        loaded("fmmforge-example-plugin")
        reg = registry("reward").usable()["nnz"]
        assert str(reg.origin) == "fmmforge-example-plugin 0.1.0"
        assert get_reward("nnz").cheap is True
    finally:
        reset_plugin_manager()

    restricted = run_cli(site, "plugins", plugins="")
    assert restricted.returncode == 0
    assert " nnz " not in restricted.stdout and "broken:" not in restricted.stdout
    assert "third-party plugins: none" in restricted.stdout
