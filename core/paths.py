"""Where fmmforge keeps its files: the FMMFORGE_HOME rules and the one way it makes folders.

The home is ``$FMMFORGE_HOME``, else ``$XDG_DATA_HOME/fmmforge``, else
``~/.local/share/fmmforge``. Everything fmmforge keeps (the store, caches, checkpoints, kernels,
device peaks) lives in folders of it made by :func:`home_subdir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from fmmforge.core.errors import FmmforgeError


def default_home() -> Path:
    """$FMMFORGE_HOME, else $XDG_DATA_HOME/fmmforge, else ~/.local/share/fmmforge.

    Raises FmmforgeError when that path cannot be a directory (see :func:`check_home`).
    """
    env = os.environ.get("FMMFORGE_HOME")
    if env:
        return check_home(Path(env).expanduser())
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return check_home(base / "fmmforge")


def check_home(home: Path) -> Path:
    """``home`` when it is a directory or can be created as one; raises FmmforgeError otherwise.

    A file there (or at one of its parents) would read as an empty store and break the
    checkpoints and the kernel cache later, so it is refused where the home is asked for.
    """
    try:
        existing = next((p for p in (home, *home.parents) if p.exists()), None)
    except OSError as exc:
        raise FmmforgeError(
            f"cannot use the fmmforge home {home} ({exc.strerror or exc}); set FMMFORGE_HOME to a directory"
        ) from None
    if existing is not None and not existing.is_dir():
        what = "is not a directory" if existing == home else f"cannot be created: {existing} is not a directory"
        raise FmmforgeError(
            f"the fmmforge home {home} {what}; set FMMFORGE_HOME to a directory (it is created if missing)"
        )
    return home


def make_directory(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its parents) if needed; a file in the way or a denied permission is
    one :class:`FmmforgeError` naming what blocks it, never an OSError."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is not a directory" if blocker is not None else (exc.strerror or str(exc))
        raise FmmforgeError(f"cannot create directory {directory}: {why}; "
                            "give a path in a writable directory (or set FMMFORGE_HOME to one)") from None
    if not directory.is_dir():
        raise FmmforgeError(f"cannot create directory {directory}: it exists and is not a directory")
    return directory


def home_subdir(*parts: str) -> Path:
    """``$FMMFORGE_HOME/<parts>``, created: the one way fmmforge makes folders in its home."""
    return make_directory(default_home().joinpath(*parts))
