"""What one probe attempt found: passed or not, and a short text saying why."""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """One probe attempt: ``ok``, and ``detail`` (``HTTP 200 OK``, ``connection refused``)."""

    ok: bool
    detail: str


def passed(detail: str) -> Outcome:
    """A passing outcome."""
    return Outcome(True, detail)


def failed(detail: str) -> Outcome:
    """A failing outcome."""
    return Outcome(False, detail)


def connect_error_text(exc: BaseException) -> str:
    """A one-line reason for a failed connection: ``connection refused`` for ECONNREFUSED.

    anyio and aiohttp wrap the socket's OSError; the real one is found through the chain.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or (
            isinstance(cur, OSError) and cur.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cur, OSError) and cur.errno is not None and cur.strerror:
            return cur.strerror.lower() if cur.errno > 0 else f"cannot resolve: {cur.strerror}"
        nxt = getattr(cur, "os_error", None)  # aiohttp's ClientConnectorError
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    return str(exc) or type(exc).__name__
