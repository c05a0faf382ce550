"""A rate-limited exception handler for the event loop.

asyncio logs a full traceback for every error its own machinery hits: under EMFILE the
control socket's accept loop alone logged ~3,800 "socket.accept() out of system resource"
tracebacks (1.8 MB) in seconds. Here the first error of each kind is logged as asyncio
would, the repeats are counted, and at most one summary line per kind and window says how
many there were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("vastinit")

WINDOW = 10.0  # seconds: at most one summary line per kind per window


def _kind(context: dict[str, Any]) -> str:
    exc = context.get("exception")
    what = type(exc).__name__ if exc is not None else ""
    return f"{context.get('message', '')}|{what}"


class LoopErrorLimiter:
    """``loop.set_exception_handler(LoopErrorLimiter(loop))``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._window = window
        self._clock = clock
        self._seen: set[str] = set()
        self._suppressed: dict[str, int] = {}
        self._flush_armed: set[str] = set()
        self.logged = 0  # full reports passed to asyncio's default handler
        self.summaries = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        kind = _kind(context)
        if kind not in self._seen:
            self._seen.add(kind)
            self.logged += 1
            loop.default_exception_handler(context)
            return
        self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        if kind not in self._flush_armed:
            self._flush_armed.add(kind)
            loop.call_later(self._window, self._flush, kind, str(context.get("message", "")))

    def _flush(self, kind: str, message: str) -> None:
        self._flush_armed.discard(kind)
        count = self._suppressed.pop(kind, 0)
        if count:
            self.summaries += 1
            log.error(
                "event loop error repeated",
                error=message,
                times=count,
                within=f"{self._window:g}s",
            )
