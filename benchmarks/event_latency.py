"""State change to event client: how long a ``state`` event takes to reach a client of
``GET /v1/events``.

One ``vastinit run`` with one unit (``sleep``, ready when spawned) and one client following
its state events; the unit is restarted ``RESTARTS`` times (``POST /v1/restart``, waiting
for ready). For every state event the latency is the client's clock when the event's line
was parsed minus the event's ``ts`` (vastinit's clock when it published it: the same
machine, the same clock). Prints the median and the 95th percentile over every event, and
over the ``ready`` events alone.

Run alone: ``.venv/bin/python -m benchmarks.event_latency [RESTARTS]``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vastinit.control.client import Client, CtlError, _chunks, _read_head

RESTARTS = 100


def _follow(path: Path, out: list[tuple[float, dict[str, object]]]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall(b"GET /v1/events?type=state&unit=web HTTP/1.1\r\nHost: vastinit\r\n\r\n")
    reader = sock.makefile("rb")
    status, _ = _read_head(reader)
    if status != 200:
        raise SystemExit(f"GET /v1/events answered {status}")

    def run() -> None:
        pending = b""
        try:
            for data in _chunks(reader):
                pending += data
                *lines, pending = pending.split(b"\n")
                now = time.time()
                out.extend((now, json.loads(line)) for line in lines if line)
        except (CtlError, OSError):
            pass

    threading.Thread(target=run, daemon=True).start()
    return sock


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(restarts: int = RESTARTS) -> int:
    with tempfile.TemporaryDirectory(prefix="vastinit-events-") as tmp:
        units = Path(tmp) / "units"
        units.mkdir()
        (units / "web.toml").write_text('command = ["sleep", "600"]\n')
        sock_path = Path(tmp) / "vastinit.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vastinit",
                "run",
                "--units",
                str(units),
                "--log-dir",
                str(Path(tmp) / "logs"),
                "--socket",
                str(sock_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "VASTINIT_LOG_FORMAT": "json"},
        )
        try:
            client = Client(str(sock_path))
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.get("/v1/ready?unit=web&wait=1&timeout=10")["ready"]:
                        break
                except CtlError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            got: list[tuple[float, dict[str, object]]] = []
            follower = _follow(sock_path, got)
            for _ in range(restarts):
                reply = client.post("/v1/restart", {"units": ["web"], "timeout": 10})
                if not reply["ok"]:
                    raise SystemExit(f"restart failed: {reply}")
            deadline = time.monotonic() + 10
            while sum(e["new"] == "ready" for _, e in got) < restarts:
                if time.monotonic() > deadline:
                    raise SystemExit("the last ready events never came")
                time.sleep(0.01)
            follower.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    every = [(now - float(e["ts"])) * 1000 for now, e in got]  # type: ignore[arg-type]
    ready = [(now - float(e["ts"])) * 1000 for now, e in got if e["new"] == "ready"]  # type: ignore[arg-type]
    seqs = [int(e["seq"]) for _, e in got]  # type: ignore[call-overload]
    in_order = all(b == a + 1 for a, b in itertools.pairwise(seqs))
    print(f"{restarts} restarts, {len(every)} state events, consecutive seq: {in_order}")
    print(
        f"state change -> client: median {statistics.median(every):.2f} ms, "
        f"p95 {_pct(every, 0.95):.2f} ms, max {max(every):.2f} ms"
    )
    print(
        f"ready events alone:     median {statistics.median(ready):.2f} ms, "
        f"p95 {_pct(ready, 0.95):.2f} ms"
    )
    return 0 if in_order else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else RESTARTS))
