"""Default locations: root gets system paths, any other user their XDG directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vastinit.errors import ControlError

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


def is_private_runtime_dir(path: Path) -> bool:
    """Whether ``path`` is the non-root fallback socket directory (``/tmp/vastinit-UID``),
    which, being in a world-writable place, anyone could have created first."""
    return path.name == f"vastinit-{os.getuid()}"


def check_private_dir(path: Path) -> None:
    """ControlError unless ``path`` is a real directory (not a symlink) owned by this user
    and closed to group and others (the socket in it must be ours, and only ours)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlError(f"{path}: cannot check the socket directory: {exc.strerror}") from None
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}; group and others must have no access"
    if problem:
        raise ControlError(
            f"{path} {problem}: refusing to use a control socket in it (someone else may "
            "have created it to answer in vastinit's place); remove it, or set "
            "XDG_RUNTIME_DIR or --socket"
        )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if missing, then check_private_dir it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlError(f"cannot create {path}: {exc.strerror}") from None
    check_private_dir(path)


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
