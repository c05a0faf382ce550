"""The edge's auth token: from the environment, else kept in a root-only file; never logged."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import structlog

from vastinit.stack.common import StackError

log = structlog.get_logger("vastinit.stack.caddy")

TOKEN_VARS = ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD")
SYSTEM_TOKEN_FILE = Path("/etc/vastinit/caddy_token")

# Characters that would break the cookie or the Authorization header it travels in.
_UNSAFE = re.compile(r'[\x00-\x20\x7f;,"\\]')


def default_token_file(env: Mapping[str, str]) -> Path:
    """``$VASTINIT_TOKEN_FILE``, /etc/vastinit/caddy_token for root, else the user's state dir."""
    if env.get("VASTINIT_TOKEN_FILE"):
        return Path(env["VASTINIT_TOKEN_FILE"])
    if os.geteuid() == 0:
        return SYSTEM_TOKEN_FILE
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vastinit" / "caddy_token"


def check_token(value: str, source: str) -> str:
    """``value`` without surrounding whitespace; StackError (naming ``source`` only) if unusable."""
    token = value.strip()
    if _UNSAFE.search(token):
        raise StackError(
            f"{source} contains a space, control character, ';', ',', '\"' or '\\'; "
            "it cannot be used as a cookie or Bearer token (use letters, digits, - _ . ~)"
        )
    return token


def ensure_token(env: Mapping[str, str], path: Path | str) -> str:
    """The token: OPEN_BUTTON_TOKEN, else WEB_PASSWORD, else ``path``'s (created 0600 if absent)."""
    for name in TOKEN_VARS:
        token = check_token(env.get(name, ""), name)
        if token:
            return token
    path = Path(path)
    kept = _read(path)
    if kept:
        return kept
    # An empty file (say, touched by hand) is replaced; a missing one is created exclusively.
    return _create(path, replace=kept is not None)


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"{path}: cannot read the auth token file: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StackError(f"{path}: the auth token file is not a regular file")
    with os.fdopen(fd, encoding="utf-8") as file:
        if info.st_mode & 0o077:
            # It may have been copied in carelessly; a token others can read is no secret.
            os.fchmod(file.fileno(), 0o600)
            log.warning("caddy.token_file_mode_fixed", path=str(path), mode="0600")
        return check_token(file.read(), str(path))


def _create(path: Path, *, replace: bool) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StackError(f"{path.parent}: cannot create the token directory: {exc}") from None
    token = secrets.token_urlsafe(32)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()  # left by a crashed run that had our pid
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, path)
        else:
            # link() never replaces: if another start created the file first, use its token.
            os.link(temp, path)
    except FileExistsError:
        existing = _read(path)
        if not existing:
            raise StackError(f"{path}: the auth token file appeared empty; remove it") from None
        return existing
    except OSError as exc:
        raise StackError(f"{path}: cannot write the auth token file: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    log.info("caddy.token_generated", path=str(path))
    return token
