"""Default locations: root gets system paths, any other user their XDG directories."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_UNITS = Path(__file__).resolve().parent / "units"
SYSTEM_UNIT_DIRS = (Path("/etc/vastinit/units"), Path("/etc/vastinit/units.d"))


def _is_root() -> bool:
    return os.geteuid() == 0


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    candidate = Path(f"/run/user/{os.getuid()}")
    if candidate.is_dir() and os.access(candidate, os.W_OK):
        return candidate
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"vastinit-{os.getuid()}"


def _state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg else Path.home() / ".local" / "state"


def default_socket() -> Path:
    """``--socket`` default: $VASTINIT_SOCKET, /run/vastinit.sock, or the user's runtime dir."""
    env = os.environ.get("VASTINIT_SOCKET")
    if env:
        return Path(env)
    return Path("/run/vastinit.sock") if _is_root() else _runtime_dir() / "vastinit.sock"


def default_log_dir() -> Path:
    """``--log-dir`` default: $VASTINIT_LOG_DIR, /var/log/vastinit, or the user's state dir."""
    env = os.environ.get("VASTINIT_LOG_DIR")
    if env:
        return Path(env)
    return Path("/var/log/vastinit") if _is_root() else _state_dir() / "vastinit" / "log"


def default_unit_dirs() -> list[Path]:
    """The unit search path: $VASTINIT_UNITS (colon-separated) or the built-in one."""
    env = os.environ.get("VASTINIT_UNITS")
    if env:
        return [Path(p) for p in env.split(":") if p]
    return [PACKAGE_UNITS, *SYSTEM_UNIT_DIRS]
