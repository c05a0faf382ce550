"""TCP probe: passes when ``host:port`` accepts a connection (closed at once)."""

from __future__ import annotations

import anyio

from vastinit.config.values import format_duration, split_hostport
from vastinit.health.result import Outcome, connect_error_text, failed, passed


async def probe_tcp(target: str, timeout: float) -> Outcome:
    """Connect to ``target`` (``host:port``) within ``timeout`` seconds."""
    try:
        host, port = split_hostport(target)
    except ValueError as exc:
        return failed(str(exc))
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
    except TimeoutError:
        return failed(f"connect timed out after {format_duration(timeout)}")
    except OSError as exc:
        return failed(connect_error_text(exc))
    await stream.aclose()
    return passed("connected")
