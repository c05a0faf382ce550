"""Small helpers the stack commands share: their error type and environment flag parsing."""

from __future__ import annotations

from collections.abc import Mapping

from vastinit.errors import VastinitError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class StackError(VastinitError):
    """A stack command's input is wrong or its work failed; the message says which and where."""


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """``env[name]`` as a boolean (1/0, true/false, yes/no, on/off); unset or empty: default."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise StackError(
        f"{name}={env[name]!r} is not a boolean: use 1/0, true/false, yes/no or on/off"
    )


def configure_cli_logging() -> None:
    """Send structlog events to stderr, as the supervisor renders them, for a stack command.

    stdout stays clean for what the command prints (a Caddyfile, a server command line).
    """
    import os

    from vastinit.logs.events import configure_structlog

    fmt = "json" if os.environ.get("VASTINIT_LOG_FORMAT", "").lower() == "json" else "text"
    configure_structlog(None, fmt)
