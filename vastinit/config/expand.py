"""``${VAR}`` templates: ``${VAR}``, ``${VAR:-default}`` and ``$$``; every other ``$`` is literal.

A lone ``$`` stays as written so that ``$HOME`` in a ``/bin/sh -c`` command is left for
the shell; only ``${`` and ``$$`` belong to vastinit.

Every result is bounded: ``expand`` raises ``ExpansionError`` (a ValueError) as soon as
the output would pass ``MAX_EXPANSION`` bytes, while it is being built, so that
``A1="${A0}${A0}"``, ``A2="${A1}${A1}"``... never allocates the huge string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vastinit.config.files import format_size
from vastinit.errors import ExpansionError

MAX_EXPANSION = 128 * 1024
"""The most bytes one expanded value may have: the kernel's MAX_ARG_STRLEN (execve refuses
a longer argument or environment string anyway)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOP_NESTED = re.compile(r"[$}]")


def expand(text: str, env: Mapping[str, str], *, limit: int = MAX_EXPANSION) -> str:
    """``text`` with every template replaced from ``env``.

    ValueError if a template is malformed; ExpansionError (a ValueError) if the result
    would be longer than ``limit`` bytes (UTF-8).
    """
    if "$" not in text:
        if _size(text) > limit:
            raise ExpansionError(_too_long(text, limit))
        return text
    expander = _Expander(text, env, limit)
    pos = expander.run(0, nested=False, emit=True)
    assert pos == len(text)
    return "".join(expander.parts)


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a well-formed template, or None when it is (syntax only)."""
    try:
        _Expander(text, {}, 0).run(0, nested=False, emit=False)
    except ValueError as exc:
        return str(exc)
    return None


def byte_size(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes, as the kernel counts it."""
    return _size(text)


def _size(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def _too_long(text: str, limit: int) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return f"{shown!r} expands to more than {format_size(limit)}"


class _Expander:
    """One expansion: the output so far and its size, checked at every append."""

    def __init__(self, text: str, env: Mapping[str, str], limit: int) -> None:
        self.text = text
        self.env = env
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def emit(self, piece: str) -> None:
        self.size += _size(piece)
        if self.size > self.limit:
            raise ExpansionError(_too_long(self.text, self.limit))
        self.parts.append(piece)

    def run(self, pos: int, *, nested: bool, emit: bool) -> int:
        """Expand from ``pos`` to the end (or, ``nested``, to an unmatched ``}``, which the
        caller consumes); return where it stopped. ``emit=False`` only checks the syntax."""
        text = self.text
        end = len(text)
        while pos < end:
            if nested:
                match = _STOP_NESTED.search(text, pos)
                stop = end if match is None else match.start()
            else:
                found = text.find("$", pos)
                stop = end if found < 0 else found
            if stop > pos:
                if emit:
                    self.emit(text[pos:stop])
                pos = stop
                continue
            if text[pos] == "}":
                break
            if text.startswith("$$", pos):
                if emit:
                    self.emit("$")
                pos += 2
            elif text.startswith("${", pos):
                pos = self.substitute(pos, emit=emit)
            else:
                if emit:
                    self.emit("$")
                pos += 1
        return pos

    def substitute(self, start: int, *, emit: bool) -> int:
        """Expand the ``${...}`` at ``start``; return the position after its ``}``."""
        text = self.text
        pos = start + 2
        match = _NAME.match(text, pos)
        if match is None:
            raise ValueError(
                _bad(
                    text,
                    start,
                    "expected a variable name after '${' (write '$$' for a literal '$')",
                )
            )
        name = match.group()
        pos = match.end()
        if pos >= len(text):
            raise ValueError(_bad(text, start, "'${' is never closed by '}'"))
        if text[pos] == "}":
            if emit:
                self.emit(self.env.get(name, ""))
            return pos + 1
        if text.startswith(":-", pos):
            # Like sh's ${VAR:-default}: the default also covers a variable set to "".
            # Only the branch taken is built; the other is checked for syntax only.
            value = self.env.get(name) if emit else None
            if value:
                self.emit(value)
            pos = self.run(pos + 2, nested=True, emit=emit and not value)
            if pos >= len(text):
                raise ValueError(_bad(text, start, "'${' is never closed by '}'"))
            return pos + 1
        raise ValueError(
            _bad(
                text,
                start,
                f"unexpected {text[pos]!r} after '${{{name}' (use ${{NAME}} or ${{NAME:-default}})",
            )
        )


def _bad(text: str, start: int, why: str) -> str:
    shown = text if len(text) <= 200 else text[:197] + "..."
    return f"bad template {shown!r} at column {start + 1}: {why}"
