"""The one way fmmforge writes a file: whole or not at all, and only onto regular files.

Every writer in fmmforge (exports, checkpoints, kernels, device peaks, reports) goes through
:func:`atomic_writer`. It writes a temporary file beside the target and renames it over the
target only when the content is complete, so a reader sees the old file or the whole new one,
never half of it.

What it writes onto:

- a new path in an existing directory: created;
- an existing regular file: replaced (its permission bits are kept);
- a symbolic link: the link is followed and the file it points to is replaced; the link
  itself stays (the same result as ``open(path, "w")``, but atomic). A link whose target's
  directory does not exist is refused;
- anything else (a directory, a device such as /dev/null, a FIFO, a socket): refused with a
  :class:`FmmforgeError`, and nothing is changed. Renaming over a device node would replace
  it with a regular file, which is never what the user meant.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from fmmforge.core.errors import FmmforgeError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def writable_target(path: str | os.PathLike[str]) -> Path:
    """The regular file (or new path) that writing ``path`` will replace; raises FmmforgeError.

    Symbolic links are resolved, so the caller gets the path the rename must land on.
    """
    given = Path(path)
    if str(given) in ("", "."):
        raise FmmforgeError("no file name given; name the file to write")
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    try:
        st = target.stat()
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise FmmforgeError(f"cannot write {given}: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        hint = "; give a file name inside it" if stat.S_ISDIR(st.st_mode) else \
            "; fmmforge writes regular files only: give a file path"
        raise FmmforgeError(f"cannot write {given}: it is {kind}{hint}")
    directory = target.parent
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise FmmforgeError(f"cannot write {given}: directory {directory} {what}; create it first")
    return target


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it onto ``path``.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. A crash or an exception while writing leaves
    no partial file and keeps any old file. See the module docstring for what may be replaced.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', not {mode!r}")
    target = writable_target(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise FmmforgeError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _new_file_mode(target))  # mkstemp makes 0600; give the usual mode
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        writable_target(path)  # refuse if something else was put there meanwhile
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FmmforgeError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def _new_file_mode(target: Path) -> int:
    """The mode an ordinary open() would give: the old file's, else 0666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is a global
    write that another thread could observe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
