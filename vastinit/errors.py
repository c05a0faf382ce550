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
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return f"{where}: unit {self.unit}: {self.message}"


class ConfigError(VastinitError):
    """Every problem found in a set of unit files (config validation collects them all)."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownUnitError(VastinitError):
    """A command named a unit that does not exist; the message names close matches."""


class SpawnError(VastinitError):
    """A unit's process could not be started (missing program, bad user, bad cwd...)."""


class ProgramNotFound(SpawnError):
    """The unit's program is not installed: the unit is skipped, not failed."""


class ControlError(VastinitError):
    """The control client could not talk to the daemon, or the daemon refused."""
