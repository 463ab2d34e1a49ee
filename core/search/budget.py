"""Search budgets: a time ("90s", "2m", "1h30m") and/or a number of flips ("10M flips")."""

from __future__ import annotations

import re

from fmmforge.core.contracts import Budget
from fmmforge.core.errors import FmmforgeError

__all__ = ["Budget", "parse_budget", "parse_duration", "parse_flips"]

_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|min|s|sec|ms)?", re.I)
_FLIPS = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg])?\s*flips?\s*$", re.I)
_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "sec": 1.0, "ms": 0.001, None: 1.0}
_SCALE = {"k": 1e3, "m": 1e6, "g": 1e9, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "2m", "1h", "1h30m", "1.5h"; zero or negative is an error."""
    raw = text.strip()
    if raw.startswith("-"):
        raise FmmforgeError(f"budget {text!r} is negative; give a positive time like 90s, 2m or 1h")
    pos, total, matched = 0, 0.0, False
    compact = raw.replace(" ", "")
    while pos < len(compact):
        m = _TIME_PART.match(compact, pos)
        if not m or m.end() == pos:
            raise FmmforgeError(f"cannot read budget {text!r}; write a time like 90s, 2m, 1h or flips like '10M flips'")
        unit = m.group(2).lower() if m.group(2) else None
        total += float(m.group(1)) * _UNITS[unit]
        pos, matched = m.end(), True
    if not matched:
        raise FmmforgeError(f"cannot read budget {text!r}; write a time like 90s, 2m, 1h or flips like '10M flips'")
    if total <= 0:
        raise FmmforgeError(f"budget {text!r} is zero; give a positive time like 90s, 2m or 1h")
    return total


def parse_flips(text: str) -> int:
    """A number of flips: "1000000", "10M", "2.5k", "10M flips"."""
    raw = text.strip()
    if raw.startswith("-"):
        raise FmmforgeError(f"flip budget {text!r} is negative; give a positive number like 10M")
    candidate = raw if re.search(r"flips?\s*$", raw, re.I) else raw + " flips"
    m = _FLIPS.match(candidate)
    if not m:
        raise FmmforgeError(f"cannot read flip budget {text!r}; write a number like 1000000, 10M or '10M flips'")
    value = int(float(m.group(1)) * _SCALE[m.group(2).lower() if m.group(2) else None])
    if value <= 0:
        raise FmmforgeError(f"flip budget {text!r} is zero; give a positive number like 10M")
    return value


def parse_budget(budget: str | None = None, flips: str | None = None) -> Budget:
    """``--budget`` (a time, or a number followed by "flips") and ``--flips`` together."""
    seconds: float | None = None
    n_flips: int | None = parse_flips(flips) if flips is not None else None
    if budget is not None:
        if re.search(r"flips?\s*$", budget.strip(), re.I):
            n_flips = parse_flips(budget)
        else:
            seconds = parse_duration(budget)
    return Budget(seconds, n_flips)
