"""The SGLang unit's readiness: a small watcher that says ``READY=1`` when the server can serve.

SGLang's own ready line is an INFO log call, so it never shows with ``--log-level warning``
or a logging config of the user's. Readiness comes from the server's HTTP state instead:

- ``GET /ready`` (SGLang >= 0.5.20): 200 once warm-up is over, cheap;
- ``GET /health`` on older releases, with ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false``
  in the server's environment, which makes it a flag check (503 while starting, 200 once
  up) instead of a one-token generation of at least one second;
- ``GET /health`` on multi-node ranks other than 0, which run only a small health server.

``vastinit launch sglang`` starts the watcher just before it execs the server: a grandchild
(so the server never has an unknown child to reap), in the server's process group (a stop
of the unit's group ends it too). It sends ``STATUS=`` lines while the server loads and warms
up, and ``READY=1`` on ``$NOTIFY_SOCKET`` on the first 2xx; then it exits. It also exits
when the server does. Before the port opens it only tries TCP connects (nothing in the
server's access log), then a GET every ``HTTP_POLL_S``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import socket
import sys
import time

TCP_POLL_S = 0.05  # while the port is closed (the model loads): a connect attempt
HTTP_POLL_S = 0.025  # while it answers 503 (warm-up): a GET; ready is seen within this
HTTP_TIMEOUT_S = 30.0  # a generating /health (the user forced it on) may take 20 s


def start_watcher(port: int, path: str, notify_socket: str) -> None:
    """Fork the watcher (a grandchild) for the process that is about to exec the server."""
    server = os.getpid()
    pidfd = os.pidfd_open(server) if hasattr(os, "pidfd_open") else -1
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the short-lived middle process
        try:
            if os.fork() == 0:
                code = 1
                try:
                    code = watch(port, path, notify_socket, server, pidfd)
                finally:
                    os._exit(code)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    if pidfd >= 0:
        os.close(pidfd)


def notify(notify_socket: str, message: str) -> None:
    """Send one sd_notify datagram; a failure is ignored (the unit's probe is then silent)."""
    address = "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


def watch(port: int, path: str, notify_socket: str, server: int, pidfd: int = -1) -> int:
    """Poll until ``GET path`` answers 2xx, then send READY=1; 0 also when the server ended."""
    with contextlib.suppress(OSError):
        os.close(0)
    last = ""
    port_open = False
    while True:
        if not _alive(server, pidfd):
            return 0
        if not port_open:
            port_open = _connects(port)
            status = None
        if port_open:
            status, detail = _get(port, path)
            if status is not None and 200 <= status < 300:
                notify(notify_socket, f"READY=1\nSTATUS=serving: GET {path} {status}")
                return 0
            if status is None:
                port_open = False  # closed again (a restart inside the server)
        if port_open:
            text = f"warming up: GET {path} {detail}"
        else:
            text = f"loading: port {port} not open yet"
        if text != last:
            notify(notify_socket, f"STATUS={text}")
            last = text
        _sleep(HTTP_POLL_S if port_open else TCP_POLL_S, pidfd)


def _alive(pid: int, pidfd: int) -> bool:
    if pidfd >= 0:
        ready, _, _ = select.select([pidfd], [], [], 0)
        return not ready
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.getpgid(0) == os.getpgid(pid)


def _sleep(seconds: float, pidfd: int) -> None:
    if pidfd >= 0:
        select.select([pidfd], [], [], seconds)  # wakes at once when the server exits
    else:
        time.sleep(seconds)


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _get(port: int, path: str) -> tuple[int | None, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"User-Agent": "vastinit-probe", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status, f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__
    finally:
        conn.close()
