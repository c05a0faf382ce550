"""The control client: HTTP/1.1 over the Unix socket with the standard library only.

``vastinit ctl`` must feel instant, so this module imports ``socket`` and ``json`` and
nothing of aiohttp, anyio or structlog (``python -X importtime -m vastinit ctl status``
shows it). One request per connection; replies are read by Content-Length or chunked.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

from vastinit.paths import is_private_runtime_dir, private_dir_problem

TYPE_CHECKING = False  # typing costs milliseconds at import: only the type checker reads it
if TYPE_CHECKING:
    from typing import Any

_MAX_HEADER = 64 * 1024
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class CtlError(Exception):
    """A control request failed; the message is the one line the user sees."""

    def __init__(self, message: str, *, code: str = "error", status: int = 0, reply: Any = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.reply = reply


class Reply:
    """A finished HTTP reply: status and decoded JSON body."""

    def __init__(self, status: int, data: Any) -> None:
        self.status = status
        self.data = data


def quote(text: str) -> str:
    """``text`` percent-encoded for a URL path segment or query value (RFC 3986)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def query(path: str, params: dict[str, Any]) -> str:
    """``path?params`` where list values repeat their key and None/False values are left out."""
    pairs: list[str] = []
    for key, value in params.items():
        if value is None or value is False:
            continue
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{key}={quote('1' if item is True else str(item))}")
    return f"{path}?{'&'.join(pairs)}" if pairs else path


def unit_path(name: str) -> str:
    """The ``/v1/units/NAME`` path, NAME quoted."""
    return "/v1/units/" + quote(name)


class Client:
    """Talks to one vastinit over its control socket."""

    def __init__(self, socket_path: str, *, connect_timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout

    # ---- public -----------------------------------------------------------------------

    def get(self, path: str) -> Any:
        """GET ``path``; the JSON reply, or CtlError carrying the server's one-line error."""
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON to ``path``; the JSON reply, or CtlError."""
        return self._call("POST", path, {} if body is None else body)

    def delete(self, path: str) -> Any:
        """DELETE ``path``; the JSON reply, or CtlError."""
        return self._call("DELETE", path, None)

    def stream(self, path: str) -> Iterator[list[Any]]:
        """GET ``path`` and yield the JSON lines of its NDJSON reply, a list per chunk read,
        until the server ends the stream (CtlError if the connection is cut instead)."""
        sock, reader = self._send("GET", path, None)
        try:
            status, headers = _read_head(reader)
            if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
                _raise_for(status, _read_body(reader, headers))
            pending = b""
            for data in _chunks(reader):
                pending += data
                *lines, pending = pending.split(b"\n")
                batch = [json.loads(line) for line in lines if line]
                if batch:
                    yield batch
        finally:
            reader.close()
            sock.close()

    # ---- plumbing ---------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        sock, reader = self._send(method, path, body)
        try:
            status, headers = _read_head(reader)
            raw = _read_body(reader, headers)
        finally:
            reader.close()
            sock.close()
        if status >= 400:
            _raise_for(status, raw)
        try:
            return json.loads(raw)
        except ValueError:
            raise CtlError(f"vastinit sent a reply that is not JSON (HTTP {status})") from None

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[Any, Any]:
        sock = self._connect()
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: vastinit\r\nConnection: close\r\n"
            f"Accept: application/json\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        try:
            sock.sendall(head.encode() + b"\r\n" + payload)
        except OSError as exc:
            sock.close()
            raise CtlError(
                f"lost the connection to vastinit on {self.socket_path}: {exc}"
            ) from None
        return sock, sock.makefile("rb")

    def _connect(self) -> socket.socket:
        path = self.socket_path
        if is_private_runtime_dir(Path(path).parent):
            # Never talk to a socket in a /tmp/vastinit-UID that someone else owns.
            problem = private_dir_problem(Path(path).parent)
            if problem is not None:
                raise CtlError(problem, code="unsafe_socket_dir")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            sock.close()
            raise CtlError(
                f"no vastinit is listening on {path} (it does not exist)", code="no_daemon"
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise CtlError(
                f"no vastinit is listening on {path} (connection refused)", code="no_daemon"
            ) from None
        except PermissionError:
            sock.close()
            raise CtlError(
                f"permission denied on {path}: run as root or as a member of its group",
                code="permission_denied",
            ) from None
        except OSError as exc:
            sock.close()
            raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        # Waiting verbs hold the request open as long as the wait lasts: no read timeout.
        sock.settimeout(None)
        return sock


def _closed() -> CtlError:
    return CtlError("vastinit closed the connection before replying", code="closed")


def _read_head(reader: Any) -> tuple[int, dict[str, str]]:
    line = reader.readline(_MAX_HEADER)
    if not line:
        raise _closed()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise CtlError(f"vastinit sent a malformed reply: {line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(_MAX_HEADER)
        if not line:
            raise _closed()
        if line in (b"\r\n", b"\n"):
            break
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _read_body(reader: Any, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", ""):
        return b"".join(_chunks(reader))
    length = headers.get("content-length")
    if length is None:
        return bytes(reader.read())
    data = bytes(reader.read(int(length)))
    if len(data) < int(length):
        raise _closed()
    return data


def _chunks(reader: Any) -> Iterator[bytes]:
    """The chunks of a chunked body; CtlError if the connection ends before the last one."""
    while True:
        line = reader.readline(_MAX_HEADER)
        if not line:
            raise CtlError("the connection to vastinit was cut", code="closed")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while reader.readline(_MAX_HEADER) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        data = reader.read(size)
        reader.readline(_MAX_HEADER)  # the CRLF after the chunk
        if len(data) < size:
            raise CtlError("the connection to vastinit was cut", code="closed")
        yield data


def _raise_for(status: int, raw: bytes) -> None:
    """Raise the server's JSON error (one line) as CtlError."""
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        raise CtlError(
            reply["error"], code=str(reply.get("code", "error")), status=status, reply=reply
        )
    text = raw.decode(errors="replace").strip().splitlines()
    raise CtlError(f"vastinit replied HTTP {status}: {text[0] if text else ''}", status=status)
