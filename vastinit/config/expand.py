"""``${VAR}`` templates: ``${VAR}``, ``${VAR:-default}`` and ``$$``; every other ``$`` is literal.

A lone ``$`` stays as written so that ``$HOME`` in a ``/bin/sh -c`` command is left for
the shell; only ``${`` and ``$$`` belong to vastinit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every template replaced from ``env``; ValueError if a template is malformed."""
    if "$" not in text:
        return text
    out, pos = _expand(text, 0, env, nested=False)
    assert pos == len(text)
    return out


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a well-formed template, or None when it is."""
    try:
        expand(text, {})
    except ValueError as exc:
        return str(exc)
    return None


def _expand(text: str, pos: int, env: Mapping[str, str], *, nested: bool) -> tuple[str, int]:
    # Inside a default (nested) an unmatched "}" ends the default; the caller consumes it.
    parts: list[str] = []
    end = len(text)
    while pos < end:
        char = text[pos]
        if nested and char == "}":
            break
        if char != "$":
            parts.append(char)
            pos += 1
        elif text.startswith("$$", pos):
            parts.append("$")
            pos += 2
        elif text.startswith("${", pos):
            value, pos = _substitute(text, pos, env)
            parts.append(value)
        else:
            parts.append("$")
            pos += 1
    return "".join(parts), pos


def _substitute(text: str, start: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand the ``${...}`` at ``start``; return its value and the position after its ``}``."""
    pos = start + 2
    match = _NAME.match(text, pos)
    if match is None:
        raise ValueError(
            _bad(text, start, "expected a variable name after '${' (write '$$' for a literal '$')")
        )
    name = match.group()
    pos = match.end()
    if pos >= len(text):
        raise ValueError(_bad(text, start, "'${' is never closed by '}'"))
    if text[pos] == "}":
        return env.get(name, ""), pos + 1
    if text.startswith(":-", pos):
        default, pos = _expand(text, pos + 2, env, nested=True)
        if pos >= len(text):
            raise ValueError(_bad(text, start, "'${' is never closed by '}'"))
        # Like sh's ${VAR:-default}: the default also covers a variable set to "".
        return env.get(name) or default, pos + 1
    raise ValueError(
        _bad(
            text,
            start,
            f"unexpected {text[pos]!r} after '${{{name}' (use ${{NAME}} or ${{NAME:-default}})",
        )
    )


def _bad(text: str, start: int, why: str) -> str:
    return f"bad template {text!r} at column {start + 1}: {why}"
