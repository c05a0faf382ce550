"""The exception tree. Library code raises these; only the CLI prints them and exits."""

from __future__ import annotations

from dataclasses import dataclass


class VastinitError(Exception):
    """Base of every error vastinit raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in one unit file: rendered as ``FILE:LINE: unit NAME: message``."""

    file: str
    line: int
    unit: str
    message: str

    def __str__(self) -> str:
        # File names and messages come from the user: never echo a control character
        # (an escape sequence, a newline that fakes a second problem) raw to a terminal.
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return printable(f"{where}: unit {self.unit}: {self.message}")


def printable(text: str) -> str:
    """``text`` with every character that ``repr`` would escape escaped the same way
    (``\\x1b``, ``\\n``, ``\\u202e``); bytes that were not UTF-8 in a file name
    (surrogate escapes) are shown as ``\\xNN``. Backslashes are left as they are."""
    if text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif "\udc80" <= char <= "\udcff":
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])
    return "".join(out)


class ConfigError(VastinitError):
    """Every problem found in a set of unit files (config validation collects them all)."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ExpansionError(VastinitError, ValueError):
    """A ``${VAR}`` expansion at start would be too large (see config/expand.py's limits),
    or would put a NUL byte into an argument: the unit cannot start."""


class UnknownUnitError(VastinitError):
    """A command named a unit that does not exist; the message names close matches."""


class SpawnError(VastinitError):
    """A unit's process could not be started (missing program, bad user, bad cwd...)."""


class ProgramNotFound(SpawnError):
    """The unit's program is not installed: the unit is skipped, not failed."""


class ControlError(VastinitError):
    """The control client could not talk to the daemon, or the daemon refused."""
