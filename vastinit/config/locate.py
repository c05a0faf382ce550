"""Line numbers for TOML keys: tomllib gives none, so scan the text for headers and ``key =``.

Good enough for hand-written unit files: it follows ``[table]``, ``[[array]]`` (counting
elements), dotted and quoted keys, and skips over multi-line strings and arrays; keys inside
inline tables map to the line of the key that holds the inline table.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY_PART = rf"\s*(?:{_BARE}|{_QUOTED})\s*"
_DOTTED = rf"{_KEY_PART}(?:\.{_KEY_PART})*"
_HEADER = re.compile(rf"\s*(\[\[|\[)({_DOTTED})(\]\]|\])")
_ASSIGN = re.compile(rf"({_DOTTED})=")
_PART = re.compile(rf"\s*({_BARE}|{_QUOTED})\s*")
_MAX_PARTS = 64


class Locator:
    """Maps key paths of one TOML document to the 1-based line that defines them."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._scan(text)

    def line(self, path: KeyPath) -> int:
        """The line of ``path``, else of its nearest enclosing table or key, else 1."""
        for size in range(len(path), 0, -1):
            found = self._lines.get(path[:size])
            if found is not None:
                return found
        return 1

    def _record(self, path: KeyPath, line: int) -> None:
        # Parents too, so that `a.b = 1` locates the implicit table `a`; first mention wins.
        # Bounded: a path deeper than any valid unit is located by its first parts.
        for size in range(1, min(len(path), _MAX_PARTS) + 1):
            self._lines.setdefault(path[:size], line)

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        lines = text.splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            number += 1
            header = _HEADER.match(line)
            if header is not None:
                path: KeyPath = _split(header.group(2))
                if header.group(1) == "[[":
                    index = counts.get(path, 0)
                    counts[path] = index + 1
                    self._lines.setdefault(path, number)
                    path = (*path, index)
                table = path
                self._record(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign is None:
                continue
            self._record((*table, *_split(assign.group(1))), number)
            # A value that opens a multi-line string or array swallows the lines after it.
            state = _State()
            state.feed(line[assign.end() :])
            while state.open() and number < len(lines):
                state.feed("\n" + lines[number])
                number += 1


def _split(dotted: str) -> tuple[str, ...]:
    parts: list[str] = []
    for match in _PART.finditer(dotted):
        part = match.group(1)
        if part[0] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


class _State:
    """Just enough of a TOML value lexer to know whether a value continues on the next line."""

    def __init__(self) -> None:
        self.depth = 0  # open [ and {
        self.string: str | None = None  # the delimiter of the string we are inside

    def open(self) -> bool:
        return self.depth > 0 or self.string is not None

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self.string is not None:
                if self.string in ('"', '"""') and text[i] == "\\":
                    i += 2
                    continue
                if text.startswith(self.string, i):
                    i += len(self.string)
                    self.string = None
                    continue
                if text[i] == "\n" and len(self.string) == 1:
                    self.string = None  # single-line strings cannot span lines
                i += 1
                continue
            char = text[i]
            if char == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
                continue
            for delim in ('"""', "'''", '"', "'"):
                if text.startswith(delim, i):
                    self.string = delim
                    i += len(delim)
                    break
            else:
                if char in "[{":
                    self.depth += 1
                elif char in "]}":
                    self.depth -= 1
                i += 1


_INTEREST = re.compile(r"[\[\]{}\"'#\n.=,]")
_BASIC_STOP = re.compile(r"[\\\"\n]")


def too_deep_line(text: str, limit: int) -> int | None:
    """The line where brackets nest, or a dotted key has parts, beyond ``limit``; else None.

    A linear pre-scan run before the TOML parser, which recurses on nested arrays and
    inline tables and is slow on very long dotted keys. Strings and comments are skipped.
    """
    if text.count("[") + text.count("{") <= limit and text.count(".") <= limit:
        return None
    depth = 0
    dots = 0  # dots of the key (or header) being read; any other token starts a new one
    line = 1
    pos = 0
    end = len(text)
    while True:
        match = _INTEREST.search(text, pos)
        if match is None:
            return None
        pos = match.start()
        char = text[pos]
        pos += 1
        if char == ".":
            dots += 1
            if dots >= limit:
                return line
            continue
        dots = 0
        if char == "\n":
            line += 1
        elif char == "#":
            newline = text.find("\n", pos)
            pos = end if newline < 0 else newline
        elif char in "[{":
            depth += 1
            if depth > limit:
                return line
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char in "\"'":
            pos, line = _skip_string(text, pos - 1, line)


def _skip_string(text: str, start: int, line: int) -> tuple[int, int]:
    """The position after the string that opens at ``start``, and the line it ends on.
    An unterminated single-line string ends at its line's end (the parser reports it)."""
    quote = text[start]
    delim = quote * 3 if text.startswith(quote * 3, start) else quote
    pos = start + len(delim)
    end = len(text)
    while pos < end:
        if quote == "'":
            closing = text.find(delim, pos)
            newline = text.find("\n", pos)
            if len(delim) == 1 and 0 <= newline < (closing if closing >= 0 else end):
                return newline, line
            if closing < 0:
                return end, line + text.count("\n", pos)
            return closing + len(delim), line + text.count("\n", pos, closing)
        match = _BASIC_STOP.search(text, pos)
        if match is None:
            return end, line
        pos = match.start()
        char = text[pos]
        if char == "\\":
            if text.startswith("\n", pos + 1):
                line += 1
            pos += 2
        elif char == "\n":
            if len(delim) == 1:
                return pos, line
            line += 1
            pos += 1
        elif text.startswith(delim, pos):
            return pos + len(delim), line
        else:
            pos += 1
    return end, line
