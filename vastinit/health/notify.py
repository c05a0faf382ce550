"""The sd_notify protocol: a datagram socket per unit run, passed as ``$NOTIFY_SOCKET``.

The unit (or any of its processes) sends datagrams of ``KEY=VALUE`` lines; ``READY=1``
marks it ready, ``STATUS=...`` is shown in status, ``STOPPING=1`` marks it not ready,
``MAINPID=`` is recorded; other keys (``WATCHDOG=1``, ``RELOADING=1``, ...) are ignored.

Where the sockets live: one private directory per vastinit process, mode 0711 (others may
pass through it but not list it), under ``/run`` for root, else ``$XDG_RUNTIME_DIR`` or the
temp dir. Each socket is mode 0666 so a unit running as another user can send, and has a
random name, so only processes that were given ``$NOTIFY_SOCKET`` know where to send.
A filesystem path (not the abstract ``@`` namespace) works with every sd_notify client,
including those that simply ``sendto`` the path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

_MAX_DATAGRAM = 16384
_MAX_STATUS = 1024  # a STATUS= text longer than this is cut: it is shown in one table cell
_dir: Path | None = None


def parse_notify(data: bytes) -> dict[str, str]:
    """One datagram's ``KEY=VALUE`` assignments (lines without ``=`` are ignored)."""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            out[key] = value
    return out


def notify_dir() -> Path:
    """This process's private directory for notify sockets, created on first use."""
    global _dir
    if _dir is None or not _dir.is_dir():
        _dir = Path(tempfile.mkdtemp(prefix="vastinit-notify.", dir=_runtime_base()))
        os.chmod(_dir, 0o711)
        atexit.register(shutil.rmtree, _dir, ignore_errors=True)
    return _dir


def remove_notify_dir() -> None:
    """Remove this process's notify directory now (``vastinit run`` ends with ``os._exit``,
    which skips the atexit clean-up registered by ``notify_dir``)."""
    global _dir
    if _dir is not None:
        shutil.rmtree(_dir, ignore_errors=True)
        _dir = None


def _runtime_base() -> str:
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return "/run"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return xdg
    return tempfile.gettempdir()


class NotifySocket:
    """A bound datagram socket read on the event loop; each message goes to ``on_message``.

    Create it inside the running loop; raises OSError when the socket cannot be made.
    """

    def __init__(
        self,
        on_message: Callable[[dict[str, str]], None],
        *,
        name: str = "unit",
        directory: Path | None = None,
    ) -> None:
        where = directory if directory is not None else notify_dir()
        # Short names: an AF_UNIX path must fit in 107 bytes.
        self.path = str(where / f"{name[:24]}.{secrets.token_hex(6)}.sock")
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o666)  # a unit running as another user must be able to send
            sock.setblocking(False)
        except OSError:
            sock.close()
            self._unlink()
            raise
        self._sock: socket.socket | None = sock
        self._loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        while self._sock is not None:
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            message = parse_notify(data)
            if "STATUS" in message:
                message["STATUS"] = message["STATUS"][:_MAX_STATUS]
            if message:
                self._on_message(message)

    def close(self) -> None:
        """Stop reading, close and remove the socket (idempotent); unread messages are
        dropped: the run they were about is over."""
        if self._sock is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
