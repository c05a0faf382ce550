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
        for size in range(1, len(path) + 1):
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
