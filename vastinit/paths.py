"""Default locations: root gets system paths, any other user their XDG directories."""

from __future__ import annotations

import os
import stat
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


def is_private_runtime_dir(path: Path) -> bool:
    """Whether ``path`` is the non-root fallback socket directory (``/tmp/vastinit-UID``),
    which, being in a world-writable place, anyone could have created first."""
    return path.name == f"vastinit-{os.getuid()}"


def private_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a real directory (not a symlink) owned by this user and closed to
    group and others, as one message naming it; None when it is fine or does not exist.
    (No exception classes here: ``vastinit ctl`` imports this and must stay light.)"""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot check the socket directory: {exc.strerror}"
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}; group and others must have no access"
    if problem is None:
        return None
    return (
        f"{path} {problem}: refusing to use a control socket in it (someone else may have "
        "created it to answer in vastinit's place); remove it, or set XDG_RUNTIME_DIR or "
        "--socket"
    )


def check_private_dir(path: Path) -> None:
    """ControlError with private_dir_problem's message unless ``path`` is fine (or missing)."""
    problem = private_dir_problem(path)
    if problem is not None:
        from vastinit.errors import ControlError

        raise ControlError(problem)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if missing, then check_private_dir it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        from vastinit.errors import ControlError

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


def default_edge_dir(socket: Path | None) -> Path | None:
    """Where vastinit keeps the edge's state (ready markers, the status and Caddy admin
    sockets): $VASTINIT_EDGE_DIR, else next to the control socket (/run/vastinit/edge for
    /run/vastinit.sock, SOCKET_DIR/NAME-edge for any other); None without either."""
    env = os.environ.get("VASTINIT_EDGE_DIR")
    if env:
        return Path(env)
    if socket is None:
        return None
    if socket == Path("/run/vastinit.sock"):
        return Path("/run/vastinit/edge")
    return socket.parent / f"{socket.stem}-edge"


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
