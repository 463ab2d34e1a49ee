"""The command line: what it prints, its exit codes, and its bad-input paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import one_error

from fmmforge.core.catalogue import resolve
from fmmforge.core.store import Provenance, Store

STRASSEN_TEXT = """\
# Strassen's algorithm in the fast-matmul text format
1 0 1 0 1 -1 0
0 0 0 0 1 0 1
0 1 0 0 0 1 0
1 1 0 1 0 0 -1
#
1 1 0 -1 0 1 0
0 0 1 0 0 1 0
0 0 0 1 0 0 1
1 0 -1 0 1 0 1
#
1 0 0 1 -1 0 1
0 0 1 0 1 0 0
0 1 0 1 0 0 0
1 -1 1 0 0 1 0
"""


def test_show_strassen_prints_products_and_outputs(cli):
    code, out, _ = cli("show", "strassen")
    assert code == 0
    assert "M1 = (A11 + A22)·(B11 + B22)" in out
    assert "M7 = (A12 - A22)·(B21 + B22)" in out
    assert "C11 = M1 + M4 - M5 + M7" in out
    assert "C22 = M1 - M2 + M3 + M6" in out
    assert sum(line.startswith("M") for line in out.splitlines()) == 7
    assert sum(line.startswith("C") for line in out.splitlines()) == 4


def test_list_shows_catalogue_with_properties(cli):
    code, out, _ = cli("list", "--shape", "2,2,2")
    assert code == 0
    assert "strassen-winograd" in out and "alphatensor:2,2,2" in out and "laderman" not in out
    code, out, _ = cli("list", "--field", "Z2")
    assert code == 0 and "alphatensor-mod2:4,4,4" in out and "strassen" not in out


def test_verify_valid_invalid_unusable(cli, tmp_path):
    good = tmp_path / "strassen-2-2-2-7.txt"
    good.write_text(STRASSEN_TEXT)
    code, out, _ = cli("verify", good)
    assert code == 0 and "valid" in out and "<2,2,2> rank 7" in out
    bad = tmp_path / "broken.txt"
    bad.write_text(STRASSEN_TEXT.replace("1 0 1 0 1 -1 0", "1 0 1 0 1 1 0", 1))
    code, out, _ = cli("verify", bad)
    assert code == 1 and "INVALID" in out and "tensor entry (A11," in out
    assert "holds modulo 2" in out  # only a sign changed
    code, out, _ = cli("verify", bad, "--field", "Z2")
    assert code == 0
    worse = tmp_path / "worse.txt"
    worse.write_text(STRASSEN_TEXT.replace("1 0 1 0 1 -1 0", "1 0 1 0 1 0 0", 1))
    code, out, _ = cli("verify", worse)
    assert code == 1 and "INVALID" in out and "modulo 2" not in out
    code, _, err = cli("verify", tmp_path / "missing.txt")
    assert code == 2 and "missing.txt" in one_error(err)


def test_import_name_then_use_it_everywhere(cli, tmp_path):
    f = tmp_path / "s.txt"
    f.write_text(STRASSEN_TEXT)
    code, out, _ = cli("import", f, "--format", "fastmm", "--name", "mine")
    assert code == 0 and "added: mine" in out
    code, out, _ = cli("import", f, "--name", "mine")
    assert code == 0 and "already stored" in out
    code, out, _ = cli("show", "mine")
    assert code == 0 and "M7 = (A12 - A22)·(B21 + B22)" in out
    code, out, _ = cli("list")
    assert "mine" in out
    target = tmp_path / "out.json"
    code, _, _ = cli("export", "mine", "--format", "json", "-o", target)
    assert code == 0 and json.loads(target.read_text())["rank"] == 7


@pytest.mark.parametrize("fmt,suffix", [("json", ".json"), ("npz", ".npz"), ("fastmm", ".txt")])
def test_export_then_verify_every_format(cli, tmp_path, fmt, suffix):
    target = tmp_path / f"laderman{suffix}"
    assert cli("export", "laderman", "--format", fmt, "-o", target)[0] == 0
    code, out, _ = cli("verify", target)
    assert code == 0 and "<3,3,3> rank 23" in out


def test_verify_detects_z2_schemes(cli, tmp_path):
    target = tmp_path / "f2.txt"
    cli("export", "alphatensor-mod2:3,4,4", "--format", "fastmm", "-o", target)
    code, out, _ = cli("verify", target)
    assert code == 0 and "over Z2" in out
    code, out, _ = cli("verify", target, "--field", "Z")
    assert code == 1


# ----------------------------------------------------------------------- bad input
BAD_FILES = {
    "malformed-json.json": ("{not json", "json"),
    "blocks.txt": (STRASSEN_TEXT.split("#\n1 0 0 1")[0], "block"),
    "ragged.txt": (STRASSEN_TEXT.replace("0 0 0 0 1 0 1", "0 0 0 0 1 0"), "ragged.txt:3: row has 6 entries"),
    "nonnumeric.txt": (STRASSEN_TEXT.replace("0 1 0 0 0 1 0", "0 1 0 zero 0 1 0"), "zero"),
    "symbolic.txt": (STRASSEN_TEXT.replace("0 1 0 0 0 1 0", "0 1 0 x 0 1 0"), "approximate"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_exit_2_with_one_line(cli, tmp_path, name):
    text, expected = BAD_FILES[name]
    f = tmp_path / name
    f.write_text(text)
    for command in (["verify", f], ["import", f, "--name", "x"]):
        code, _, err = cli(*command)
        assert code == 2
        assert expected in one_error(err).lower()
    assert Store().all() == [] and not Store().path.exists()


def test_shape_that_does_not_match(cli, tmp_path):
    f = tmp_path / "s.txt"
    f.write_text(STRASSEN_TEXT)
    code, _, err = cli("verify", f, "--shape", "2,2,3")
    assert code == 2 and "2,2,3" in one_error(err).replace("<", "").replace(">", "")
    code, _, err = cli("verify", f, "--shape", "2,x,3")
    assert code == 2 and one_error(err)


@pytest.mark.parametrize("args,expected", [
    (["show", "nonesuch"], "unknown algorithm"),
    (["export", "nonesuch", "-o", "out.json"], "unknown algorithm"),
    (["export", "strassen", "--format", "xml", "-o", "out.xml"], "unknown file format"),
    (["verify", "x.txt", "--format", "xml"], "unknown file format"),
    (["list", "--field", "GF7"], "unknown field"),
    (["list", "--shape", "2,2"], "three positive integers"),
    (["show"], "missing argument"),
    (["verify", "x.txt", "--bogus"], "no such option"),
])
def test_bad_arguments_exit_2_with_one_line(cli, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert code == 2
    assert expected in one_error(err).lower()
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.xml").exists()


def test_unwritable_store_on_import(cli, tmp_path, monkeypatch):
    f = tmp_path / "s.txt"
    f.write_text(STRASSEN_TEXT)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FMMFORGE_HOME", str(blocker / "home"))
    code, _, err = cli("import", f)
    assert code == 2 and "FMMFORGE_HOME" in one_error(err)


def test_console_script_and_module_entry_points(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fmmforge.core", "show", "nonesuch"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: unknown algorithm")
    assert resolve("strassen").rank == 7


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "alphatensor"


def test_verify_every_deepmind_factorization_and_a_corrupted_copy(cli, tmp_path):
    import numpy as np

    from fmmforge.core.alphatensor import data_path

    code, out, _ = cli("verify", data_path("Z"))
    assert code == 0 and "93 valid, 0 invalid" in out
    code, out, _ = cli("verify", data_path("Z2"), "--field", "Z2")
    assert code == 0 and "20 valid, 0 invalid" in out
    arrays = dict(np.load(data_path("Z")))
    arrays["3,4,5.u"] = arrays["3,4,5.u"].copy()
    arrays["3,4,5.u"][2, 5] += 1
    corrupted = tmp_path / "corrupted.npz"
    np.savez(corrupted, **arrays)
    code, out, _ = cli("verify", corrupted)
    assert code == 1 and "92 valid, 1 invalid" in out and "INVALID  3,4,5" in out


@pytest.mark.skipif(not SHARED.exists(), reason="DeepMind's original files (../shared/data) are not beside this checkout")
def test_verify_deepmind_originals_needs_allow_pickle(cli):
    original = SHARED / "factorizations_r.npz"
    code, _, err = cli("verify", original)
    assert code == 2 and "--allow-pickle" in one_error(err)
    code, out, _ = cli("verify", original, "--allow-pickle")
    assert code == 0 and "93 valid, 0 invalid" in out
    code, out, _ = cli("verify", SHARED / "factorizations_f2.npz", "--allow-pickle", "--field", "Z2")
    assert code == 0 and "20 valid, 0 invalid" in out


def test_a_crash_is_reported_as_a_bug_with_its_own_exit_code(cli, monkeypatch):
    from fmmforge.core import catalogue
    from fmmforge.core.app.cli import INTERNAL_ERROR

    def broken(name):
        raise ZeroDivisionError("a planted bug")

    monkeypatch.setattr(catalogue, "resolve", broken)
    code, out, err = cli("show", "strassen")
    assert code == INTERNAL_ERROR and code not in (0, 1, 2)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error (a bug in fmmforge")
    assert "ZeroDivisionError: a planted bug" in lines[0] and "please report it" in lines[0]
    crash_file = lines[0].split("the traceback is in ")[1].split(";")[0]
    try:
        assert "ZeroDivisionError" in open(crash_file).read()
    finally:
        os.unlink(crash_file)  # the planted crash's report is not left in the temp folder


@pytest.mark.parametrize("args", [["-h"], ["list", "-h"], ["show", "-h"], ["store", "-h"], ["store", "check", "-h"],
                                  ["search", "-h"]])
def test_dash_h_is_help_everywhere(cli, args):
    code, out, err = cli(*args)
    assert code == 0 and out.startswith(f"Usage: fmmforge {' '.join(args[:-1])}".rstrip()) and "-h, --help" in out
    assert err == ""


def test_version_option_at_top_level(cli):
    from fmmforge.core.version import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == __version__


def test_list_format_points_to_shape(cli):
    code, _, err = cli("list", "--format", "4,4,4")
    line = one_error(err)
    assert code == 2 and "`fmmforge list --shape 4,4,4`" in line and "fmmforge list --help" in line
    code, out, _ = cli("list", "-s", "4,4,4")
    assert code == 0 and "alphatensor:4,4,4" in out and "strassen " not in out


@pytest.mark.parametrize("name,expected", [
    ("strasen", "(did you mean strassen, "),
    ("abcd", "a fingerprint prefix needs at least 8 hex digits ('abcd' has 4)"),
    ("mien", "(did you mean mine?)"),
])
def test_unknown_names_suggest_known_ones(cli, name, expected):
    Store().add(resolve("strassen"), Provenance("test"), name="mine")
    code, _, err = cli("show", name)
    line = one_error(err)
    assert code == 2 and expected in line and "names are strassen, " in line and "fmmforge list" not in line
    code, out, _ = cli("show", resolve("strassen").fingerprint[:8])
    assert code == 0 and "rank 7" in out


def test_devices_prints_each_chip_spec_once(cli, monkeypatch, _isolated_store):
    from fmmforge.hardware.chips import available_specs, load_chip

    folder = _isolated_store / "devices"
    folder.mkdir(parents=True)
    (folder / "npu-x.toml").write_text('name = "npu-x"\nhbm_gbps = 321\n[peak_tflops]\nbfloat16 = 123\n')
    code, out, err = cli("devices")
    assert code == 0, err
    for name in available_specs():
        chip = load_chip(name)
        assert out.count(f"{chip.hbm_gbps:g} GB/s") == 1, name
        bf16 = chip.peak_tflops.get("bfloat16")
        assert bf16 is None or out.count(f"{bf16:g} TFLOP/s") == 1, name
    assert "123 TFLOP/s bfloat16, 321 GB/s HBM" in out  # a spec without a description: its numbers


def test_counts_agree_with_their_nouns(cli):
    from fmmforge.core.app.console import counted

    assert (counted(1, "worker"), counted(2, "worker"), counted(0, "scheme"), counted(1234, "flip")) == (
        "1 worker", "2 workers", "0 schemes", "1,234 flips")
    code, out, err = cli("search", "2x2x2", "--rank", "7", "--flips", "2M", "--workers", "1", "--seed", "1")
    assert code == 0, err
    assert "(1 worker)" in out and "1 workers" not in out
    from fmmforge.core.builtins import naive

    Store().add(naive(4, 4, 6), Provenance(source="test"))  # the only <4,4,6> scheme listed
    code, out, err = cli("list", "--shape", "4,4,6")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("1 algorithm;")
