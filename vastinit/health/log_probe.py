"""Log probe: the first line of a unit's output (stdout or stderr) matching a regex."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import anyio

from vastinit.logs.mux import UnitLog


class LogMatcher:
    """Watches one run's output lines for the first that matches ``pattern`` (``re.search``).

    Attach before the process is spawned so that not even its first line is missed; the
    watcher detaches itself at the match, so a ready unit's log path pays nothing for it.
    Raises ``re.error`` for an invalid pattern.
    """

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)
        self.matched = anyio.Event()
        self.line: str | None = None
        self.at: float | None = None  # time.time() of the match
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, ulog: UnitLog) -> None:
        """Start watching ``ulog``'s lines."""
        self._unsubscribe = ulog.add_watcher(self.feed)

    def feed(self, lines: list[bytes]) -> None:
        """Look at one batch of complete lines (without their ``\\n``)."""
        if self.line is not None:
            return
        search = self.regex.search
        for raw in lines:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            if search(text):
                self.line, self.at = text, time.time()
                self.matched.set()
                self.detach()
                return

    def detach(self) -> None:
        """Stop watching (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
