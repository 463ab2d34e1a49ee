"""The one file writer: whole files or nothing, and only onto regular files or new paths."""

from __future__ import annotations

import os
import stat

import pytest

from fmmforge.core.atomic import atomic_writer, write_text
from fmmforge.core.errors import FmmforgeError


def test_new_file_and_replaced_file_keep_the_usual_modes(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "one")
    assert target.read_text() == "one"
    os.chmod(target, 0o640)
    write_text(target, "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary left behind


def test_an_exception_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("kind", ["directory", "fifo", "devnull", "link-to-devnull"])
def test_non_regular_targets_are_refused_and_left_alone(tmp_path, kind):
    if kind == "directory":
        target = tmp_path / "d"
        target.mkdir()
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    elif kind == "devnull":
        target = tmp_path.joinpath("/dev/null")
    else:
        target = tmp_path / "null-link"
        target.symlink_to("/dev/null")
    before = os.lstat(target)
    with pytest.raises(FmmforgeError, match="cannot write .*: it is a"):
        write_text(target, "x")
    after = os.lstat(target)
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)
    if kind != "devnull":
        assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(FmmforgeError, match="does not exist; create it first"):
        write_text(tmp_path / "missing" / "a.txt", "x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FmmforgeError, match="is not a directory"):
        write_text(blocker / "a.txt", "x")
