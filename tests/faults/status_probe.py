"""Samples ``GET /v1/status`` on a vastinit control socket, one request at a time, forever.

Run as a script by tests/faults/common.py (``StatusProbe``): a process of its own, so the
test's threads (the harness parsing vastinit's event stream) cannot delay it. Each request
is timed from connect to the last byte of the reply -- the request itself, not Python's
start-up -- and written to OUT as one JSON line ``{"t": WALL, "ms": MS, "ok": BOOL, "error":
TEXT}``. A request that takes longer than TIMEOUT seconds is recorded as an error. The
first request is a warm-up, recorded with ``"warmup": true`` and not judged: vastinit's
first status reply after its start pays one-off costs (lazy imports, aiohttp's first
request), 70-240 ms on the CI machine, which are not what a fault does to it.

    python status_probe.py SOCKET OUT [INTERVAL_S] [TIMEOUT_S]
"""

from __future__ import annotations

import json
import socket
import sys
import time

REQUEST = b"GET /v1/status HTTP/1.1\r\nHost: vastinit\r\nConnection: close\r\n\r\n"


def once(path: str, timeout: float) -> tuple[float, str]:
    """One request: (milliseconds, "" or why it failed)."""
    start = time.perf_counter()
    error = ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(REQUEST)
            data = bytearray()
            while chunk := sock.recv(65536):
                data += chunk
        head = bytes(data[:16])
        if not head.startswith(b"HTTP/1.1 200"):
            error = f"reply {head!r}"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return (time.perf_counter() - start) * 1000, error


def main() -> None:
    path, out = sys.argv[1], sys.argv[2]
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    warmup = True
    with open(out, "a", buffering=1) as f:
        while True:
            ms, error = once(path, timeout)
            sample = {"t": time.time(), "ms": round(ms, 3), "ok": not error, "error": error}
            if warmup:
                sample["warmup"] = True
                warmup = False
            f.write(json.dumps(sample) + "\n")
            time.sleep(interval)


if __name__ == "__main__":
    main()
