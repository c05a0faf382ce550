"""TCP probe: passes when ``host:port`` accepts a connection (closed at once)."""

from __future__ import annotations

import anyio

from vastinit.health.result import Outcome, connect_error_text, failed, passed
from vastinit.supervisor.policy import format_duration


def split_hostport(target: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` -> ("127.0.0.1", 80); ``"[::1]:80"`` -> ("::1", 80); ValueError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


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
