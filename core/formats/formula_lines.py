"""Schemes written as formula lines, parsed exactly (Fractions) and never evaluated as code.

Two notations are read, in upper or lower case, ``*`` or ``·`` for the product::

    M1 = (A11 + A22)·(B11 + B22)          # fmmforge show
    m1 = (a11 + a22) * (b11 + b22)        # the public catalogue's "multiplications"
    C11 = M1 + M4 - M5 + M7               # outputs ("elements")

An entry is ``A12`` (one digit each), ``A1_12`` or ``A[1,12]`` (1-based row, column).
Coefficients are integers, decimals or ratios: ``1/2*A11``, ``A11/2``, ``(1/2)·A11``,
``-0.5 A11``. The matrix format is inferred from the largest indices (or checked against
``shape``). Each M line is one product: a linear form in A's entries times one in B's; each C
line a linear form in the products; an output with no line is zero.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Union

import numpy as np

from fmmforge.core.decomposition import Decomposition
from fmmforge.core.errors import FmmforgeError
from fmmforge.core.exact import check_entries, exact_token
from fmmforge.core.formats.common import build_decomposition, cut, matmul_format
from fmmforge.core.tensor import Format

# A line that starts like a formula: ``M1 =``, ``c12=``, ``C[1,10] =``.
FORMULA_LINE = re.compile(r"^\s*[MmCc](\d+|\d+_\d+|\[\s*\d+\s*,\s*\d+\s*\])\s*=")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<sym>[AaBbMm](?:\[\s*\d+\s*,\s*\d+\s*\]|\d+_\d+|\d+))"
    r"|(?P<op>[-+*/()·×]))"
)
_MAX_LINES = 1_000_000
_MAX_BITS = 256  # while a line is parsed; the factors are checked against 2^62 when built
_HEADER_SHAPE = re.compile(r"^#\s*fmmforge\s+<(\d{1,9}),(\d{1,9}),(\d{1,9});\d{1,12}>")
Form = dict[tuple[str, int, int], Fraction]  # symbol (letter, row, column) -> coefficient; M: (M, r, 0)
_ONE = ("1", 0, 0)  # the constant term of a form


class _Product:
    """The product of two non-constant linear forms (one M line's right-hand side)."""

    def __init__(self, left: Form, right: Form) -> None:
        self.left, self.right = left, right


Value = Union[Form, _Product]


def _index(letter: str, text: str, where: str) -> tuple[str, int, int]:
    """``A12`` / ``A1_12`` / ``A[1,12]`` → ("A", 1, 12); ``M7`` → ("M", 7, 0)."""
    letter = letter.upper()
    if letter == "M":
        if not text.isdigit():
            raise FmmforgeError(f"{where}: product name M{text} should be M followed by its number, like M7")
        return ("M", int(text), 0)
    if text.startswith("["):
        i, j = text[1:-1].split(",")
    elif "_" in text:
        i, j = text.split("_")
    elif len(text) == 2:
        i, j = text[0], text[1]
    else:
        raise FmmforgeError(
            f"{where}: entry {letter}{text} is ambiguous; write one digit per index (A12) or "
            f"separate them ({letter}1_12 or {letter}[1,12])"
        )
    row, col = int(i), int(j)
    if row < 1 or col < 1:
        raise FmmforgeError(f"{where}: entry {letter}{text} has an index 0; indices start at 1")
    return (letter, row, col)


class _Parser:
    """Recursive descent over + - * / · and parentheses, on exact linear forms."""

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                rest = text[pos:].strip()
                raise FmmforgeError(
                    f"{where}: cannot read {cut(rest)!r}; formulas hold only entries (A11, B12, M3), "
                    "numbers, + - * / · and parentheses"
                )
            kind = match.lastgroup or "op"
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise FmmforgeError(f"{self.where}: the formula ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def parse(self) -> Value:
        value = self.sum()
        if self.pos != len(self.tokens):
            raise FmmforgeError(f"{self.where}: unexpected {self.tokens[self.pos][1]!r}")
        return value

    def sum(self) -> Value:
        value = self.term()
        while self.peek() in ("+", "-"):
            sign = self.take()[1]
            other = self.term()
            if isinstance(value, _Product) or isinstance(other, _Product):
                raise FmmforgeError(f"{self.where}: a sum of products; each M line holds one product (...)·(...)")
            value = _add(value, other, 1 if sign == "+" else -1)
        return value

    def term(self) -> Value:
        value = self.unary()
        while self.peek() in ("*", "·", "×", "/") or (self.peek() is not None and self.peek() not in "+-)"):
            op = self.take()[1] if self.peek() in ("*", "·", "×", "/") else "*"  # juxtaposition: 2A11
            other = self.unary()
            value = self._divide(value, other) if op == "/" else self._multiply(value, other)
        return value

    def unary(self) -> Value:
        if self.peek() in ("+", "-"):
            sign = self.take()[1]
            value = self.unary()
            return value if sign == "+" else self._multiply({_ONE: Fraction(-1)}, value)
        kind, text = self.take()
        if kind == "num":
            try:
                number = exact_token(text)
            except FmmforgeError as exc:
                raise FmmforgeError(f"{self.where}: {exc}") from None
            if number is None:
                raise FmmforgeError(f"{self.where}: {text!r} is not a number")
            return {_ONE: number} if number else {}
        if kind == "sym":
            return {_index(text[0], text[1:].replace(" ", ""), self.where): Fraction(1)}
        if text == "(":
            value = self.sum()
            if self.peek() != ")":
                raise FmmforgeError(f"{self.where}: a parenthesis is not closed")
            self.take()
            return value
        raise FmmforgeError(f"{self.where}: unexpected {text!r}")

    def _constant(self, value: Value) -> Fraction | None:
        if isinstance(value, _Product):
            return None
        if set(value) <= {_ONE}:
            return value.get(_ONE, Fraction(0))
        return None

    def _multiply(self, a: Value, b: Value) -> Value:
        ca, cb = self._constant(a), self._constant(b)
        for c in (ca, cb):  # products of numbers may not grow without bound (2*2*...*2 a million times)
            if c is not None and max(abs(c.numerator), c.denominator).bit_length() > _MAX_BITS:
                raise FmmforgeError(f"{self.where}: a coefficient beyond 2^{_MAX_BITS}; entries stay below 2^62")
        if ca is not None and (ca or cb is not None):
            return _scale(b, ca)
        if cb is not None and (cb or ca is not None):
            return _scale(a, cb)
        if ca is not None or cb is not None:  # (A11)·(0): a product whose other factor is zero, kept as written
            if isinstance(a, _Product) or isinstance(b, _Product):
                raise FmmforgeError(f"{self.where}: a product of more than two factors; use (...)·(...)")
            return _Product(a, b)
        if isinstance(a, _Product) or isinstance(b, _Product):
            raise FmmforgeError(f"{self.where}: a product of more than two factors; use (...)·(...)")
        if _ONE in a or _ONE in b:
            raise FmmforgeError(f"{self.where}: a factor has a constant term; factors are sums of entries")
        return _Product(a, b)

    def _divide(self, a: Value, b: Value) -> Value:
        cb = self._constant(b)
        if cb is None:
            raise FmmforgeError(f"{self.where}: division by something that is not a number")
        if cb == 0:
            raise FmmforgeError(f"{self.where}: division by zero")
        return _scale(a, 1 / cb)


def _add(a: Form, b: Form, sign: int) -> Form:
    out = dict(a)
    for key, c in b.items():
        out[key] = out.get(key, Fraction(0)) + sign * c
        if not out[key]:
            del out[key]
    return out


def _scale(value: Value, c: Fraction) -> Value:
    if isinstance(value, _Product):
        return _Product(_scale(value.left, c), value.right)  # type: ignore[arg-type]
    return {k: v * c for k, v in value.items() if v * c}


def _letters(form: Form) -> set[str]:
    return {key[0] for key in form}


def _product_factors(value: Value, where: str) -> tuple[Form, Form]:
    """(form in A, form in B) of an M line (either order); a lone entry times another counts."""
    if not isinstance(value, _Product):
        if not value:  # (0)·(0)
            return {}, {}
        raise FmmforgeError(f"{where}: a product line needs (sum of A entries)·(sum of B entries)")
    left, right = value.left, value.right
    if "B" in _letters(left) or "A" in _letters(right):  # written (B...)·(A...)
        left, right = right, left
    if not _letters(left) <= {"A"} or not _letters(right) <= {"B"}:
        raise FmmforgeError(f"{where}: a product line needs (sum of A entries)·(sum of B entries)")
    return left, right


def looks_like_formulas(text: str) -> bool:
    """Whether the first line that is not blank or a comment reads like ``M1 = ...`` or ``c11 = ...``."""
    for line in text.splitlines()[:1000]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return bool(FORMULA_LINE.match(stripped))
    return False


def loads_formulas(
    text: str, *, source: str = "formula text", shape: tuple[int, int, int] | None = None,
    field: str | None = None,
) -> Decomposition:
    """Parse formula lines (see the module text) into an unchecked decomposition.

    A comment line ``# field=Z2`` sets the field unless ``field`` is given; errors say ``source:line``.
    """
    products: dict[int, tuple[Form, Form, int]] = {}
    outputs: dict[tuple[int, int], tuple[Form, int]] = {}
    file_field = None
    lines = text.splitlines()
    if len(lines) > _MAX_LINES:
        raise FmmforgeError(f"{source}: {len(lines):,} lines, more than {_MAX_LINES:,}; is this a scheme?")
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        where = f"{source}:{lineno}"
        if stripped.startswith("#"):
            found = re.search(r"\bfield=(Z2|Z)\b", stripped)
            file_field = found.group(1) if found else file_field
            declared = _HEADER_SHAPE.search(stripped)
            if declared and shape is None:  # keeps outputs that are all zero, which the lines cannot show
                shape = (int(declared.group(1)), int(declared.group(2)), int(declared.group(3)))
            continue
        if not stripped:
            continue
        lhs, eq, rhs = stripped.partition("=")
        match = FORMULA_LINE.match(lhs + "=")
        if not eq or not match:
            raise FmmforgeError(f"{where}: expected a line like 'M1 = (A11 + A22)·(B11 + B22)' or 'C11 = M1 + M4'")
        name = _index(lhs.strip()[0], match.group(1).replace(" ", ""), where)
        try:
            value = _Parser(rhs, where).parse()
        except RecursionError:
            raise FmmforgeError(f"{where}: parentheses or signs nested too deeply to be a formula; fix the line") from None
        if name[0] == "M":
            if name[1] in products:
                raise FmmforgeError(f"{where}: M{name[1]} is defined twice (first on line {products[name[1]][2]})")
            products[name[1]] = (*_product_factors(value, where), lineno)
        else:
            if isinstance(value, _Product) or not _letters(value) <= {"M"}:
                raise FmmforgeError(f"{where}: an output line is a sum of products M1, M2, ... with numbers")
            key = (name[1], name[2])
            if key in outputs:
                raise FmmforgeError(f"{where}: C{key[0]}{key[1]} is defined twice (first on line {outputs[key][1]})")
            outputs[key] = (value, lineno)
    return _assemble(products, outputs, source, shape, field or file_field or "Z")


def _assemble(
    products: dict[int, tuple[Form, Form, int]], outputs: dict[tuple[int, int], tuple[Form, int]],
    source: str, shape: Format | None, field: str,
) -> Decomposition:
    if not products:
        raise FmmforgeError(f"{source}: no product lines (M1 = ...); this is not a scheme in formulas")
    numbers = sorted(products)
    if numbers != list(range(1, len(numbers) + 1)):
        missing = next(i for i in range(1, len(numbers) + 2) if i not in products)
        raise FmmforgeError(f"{source}: products are numbered M1..M{numbers[-1]} but M{missing} has no line")
    a_keys = [k for u, _v, _l in products.values() for k in u]
    b_keys = [k for _u, v, _l in products.values() for k in v]
    used = {k for form, _l in outputs.values() for k in form}
    for _letter, r, _c in used:
        if r not in products:
            line = next(l for form, l in outputs.values() if ("M", r, 0) in form)
            raise FmmforgeError(f"{source}:{line}: M{r} is used but has no line")
    n = max([k[1] for k in a_keys] + [i for i, _j in outputs], default=0)
    m = max([k[2] for k in a_keys] + [k[1] for k in b_keys], default=0)
    p = max([k[2] for k in b_keys] + [j for _i, j in outputs], default=0)
    if shape is None and 0 in (n, m, p):
        raise FmmforgeError(
            f"{source}: the formulas use no entry of {'A' if not n else 'A or B' if not m else 'B or C'}, so their "
            "matrix format cannot be told; pass --shape n,m,p"
        )
    if shape is not None:
        if shape[0] < n or shape[1] < m or shape[2] < p:
            raise FmmforgeError(
                f"{source}: the formulas use entries up to <{n},{m},{p}>, beyond the requested "
                f"<{','.join(map(str, shape))}>; drop --shape or pass the right one"
            )
        n, m, p = shape
    rank = len(numbers)
    check_entries((n * m + m * p + n * p) * rank, f"{source}: the factors")
    U = np.zeros((n * m, rank), dtype=object)
    V = np.zeros((m * p, rank), dtype=object)
    W = np.zeros((n * p, rank), dtype=object)
    for r, (u, v, _line) in products.items():
        for (_a, i, j), c in u.items():
            U[(i - 1) * m + j - 1, r - 1] = c
        for (_b, i, j), c in v.items():
            V[(i - 1) * p + j - 1, r - 1] = c
    for (i, j), (form, _line) in outputs.items():
        for (_m, r, _z), c in form.items():
            W[(i - 1) * p + j - 1, r - 1] = c
    try:
        return build_decomposition(U, V, W, (n, m, p), field)
    except FmmforgeError as exc:
        raise FmmforgeError(f"{source}: {exc}") from None


# ---------------------------------------------------------------------- writing
def _entry(letter: str, index: int, cols: int, lower: bool) -> str:
    i, j = divmod(index, cols)
    name = f"{letter}{i + 1}{j + 1}" if i < 9 and j < 9 else f"{letter}{i + 1}_{j + 1}"
    return name.lower() if lower else name


def _combination(coeffs: list[Fraction], names: list[str]) -> str:
    parts: list[str] = []
    for c, name in zip(coeffs, names):
        if not c:
            continue
        size = abs(c)
        term = name if size == 1 else f"{size}*{name}"
        if parts:
            parts.append(("- " if c < 0 else "+ ") + term)
        else:
            parts.append(("-" if c < 0 else "") + term)
    return " ".join(parts) if parts else "0"


def formula_lines(d: Decomposition, *, lower: bool = False, times: str = "·") -> tuple[list[str], list[str]]:
    """(product lines, output lines) of ``d``: ``M1 = (A11 + A22)·(B11 + B22)``, ``C11 = M1 + M4``
    (``lower``: ``m1 = (a11 + a22) * (b11 + b22)``, the catalogue's own notation, with ``times=" * "``)."""
    n, m, p = matmul_format(d, "formulas")
    U, V, W = (x.tolist() for x in d.factors())
    a_names = [_entry("A", i, m, lower) for i in range(n * m)]
    b_names = [_entry("B", i, p, lower) for i in range(m * p)]
    m_names = [("m" if lower else "M") + str(r + 1) for r in range(d.rank)]
    mults = []
    for r in range(d.rank):
        left = _combination([row[r] for row in U], a_names)
        right = _combination([row[r] for row in V], b_names)
        mults.append(f"{m_names[r]} = ({left}){times}({right})")
    elements = [f"{_entry('C', c, p, lower)} = {_combination(W[c], m_names)}" for c in range(n * p)]
    return mults, elements


def dumps_formulas(d: Decomposition, *, name: str | None = None) -> str:
    """The formula lines of ``d`` with a comment header that keeps its field."""
    mults, elements = formula_lines(d)
    header = f"# fmmforge <{','.join(map(str, matmul_format(d, 'formulas')))};{d.rank}> field={d.field}"
    if name:
        header += " name=" + " ".join(str(name).split())
    return "\n".join([header, *mults, *elements]) + "\n"
