"""How a process ended, decoded once from its wait status."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitStatus:
    """Exit code, or the signal that killed the process (exactly one is set)."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.WEXITSTATUS(status))

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128 + signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit {self.code}"


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for numbers with no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
