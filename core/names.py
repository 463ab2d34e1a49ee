"""The names fmmforge gives algorithms itself, and the rule for names a user may give one.

Built-in names (strassen, laderman, ...), the prefixes naive:, store:, alphatensor: and
alphatensor-mod2:, and Kronecker products (A*B) already mean something, so the store refuses
them as names for stored algorithms; the catalogue resolves them.
"""

from __future__ import annotations

import re

from fmmforge.core import builtins

ALPHATENSOR_PREFIX = {"alphatensor": "Z", "alphatensor-mod2": "Z2"}
BUILTIN_NAMES = (*builtins.BUILTINS, "strassen-2x2x3")
RESERVED_PREFIXES = ("naive:", "store:", *(p + ":" for p in ALPHATENSOR_PREFIX))
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*(:[A-Za-z0-9_.,+-]+)?$")


def is_reserved(name: str) -> bool:
    """Names a user may not give to a stored algorithm (they mean something already)."""
    return name in BUILTIN_NAMES or name.startswith(RESERVED_PREFIXES) or "*" in name
