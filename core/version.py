"""The installed fmmforge version (kept in one place)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fmmforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
