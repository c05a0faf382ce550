"""What event clients cost vastinit during a log flood.

One ``vastinit run`` with a unit writing ``RATE`` lines/s of 100 bytes
(tests/programs/paced_flood.py) and a steady unit restarted every ``RESTART_S`` (so state
events flow). vastinit's CPU time (utime + stime from /proc) is measured over ``WINDOW``
seconds in each setup, one after the other: no client; 20 clients following state events;
one client of ``/v1/events?logs=flood`` reading at full rate; one ``/v1/logs?follow=1``
follower (today's ``ctl logs -f``) for comparison. The state clients check that their seq
numbers are consecutive and identical (no event lost or reordered).

Run alone: ``.venv/bin/python -m benchmarks.event_clients [WINDOW [RATE [RESTART_S]]]``
(``RESTART_S``: seconds between restarts of the steady unit). The no-client and 20-client
windows alternate ``PAIRS`` times and the medians are compared, so a drift of the machine's
load does not land on one side.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vastinit.control.client import Client, CtlError, _chunks, _read_head

WINDOW = 5.0
RATE = 10000
RESTART_S = 0.5
CLIENTS = 20
PAIRS = 3
FLOOD = Path(__file__).resolve().parents[1] / "tests" / "programs" / "paced_flood.py"


class Reader:
    """A streaming GET read in a thread: counts lines, keeps state events' seq numbers."""

    def __init__(self, path: Path, target: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: vastinit\r\n\r\n".encode())
        self.reader = self.sock.makefile("rb")
        status, _ = _read_head(self.reader)
        assert status == 200, status
        self.lines = 0
        self.seqs: list[int] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        pending = b""
        try:
            for data in _chunks(self.reader):
                pending += data
                *lines, pending = pending.split(b"\n")
                self.lines += len(lines)
                for line in lines:
                    if line.startswith(b'{"seq"'):
                        self.seqs.append(json.loads(line)["seq"])
        except (CtlError, OSError, ValueError):
            pass

    def close(self) -> None:
        self.sock.close()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window(pid: int, seconds: float) -> float:
    before = _cpu(pid)
    time.sleep(seconds)  # a measurement window, not a wait for a condition
    return _cpu(pid) - before


def main(window: float = WINDOW, rate: int = RATE, restart_s: float = RESTART_S) -> int:
    with tempfile.TemporaryDirectory(prefix="vastinit-evclients-") as tmp:
        units = Path(tmp) / "units"
        units.mkdir()
        (units / "flood.toml").write_text(f'command = ["{sys.executable}", "{FLOOD}", "{rate}"]\n')
        (units / "steady.toml").write_text('command = ["sleep", "600"]\n')
        sock = Path(tmp) / "vastinit.sock"
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
                str(sock),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        try:
            client = Client(str(sock))
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.get("/v1/ready?wait=1&timeout=10")["ready"]:
                        break
                except CtlError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

            def restarts() -> None:
                while not stop.is_set():
                    client.post("/v1/restart", {"units": ["steady"], "wait": False})
                    stop.wait(restart_s)

            threading.Thread(target=restarts, daemon=True).start()
            time.sleep(1.0)  # let the flood settle
            results: dict[str, float] = {}
            bare: list[float] = []
            with_clients: list[float] = []
            states: list[Reader] = []
            for pair in range(PAIRS):
                bare.append(_window(proc.pid, window))
                states = [Reader(sock, "/v1/events?type=state") for _ in range(CLIENTS)]
                with_clients.append(_window(proc.pid, window))
                if pair < PAIRS - 1:  # the last pair's clients are checked below
                    for r in states:
                        r.close()
            results["no client"] = sorted(bare)[len(bare) // 2]
            results[f"{CLIENTS} state-event clients"] = sorted(with_clients)[len(with_clients) // 2]
            print(f"windows without clients {bare}, with {CLIENTS} clients {with_clients}")
            for r in states:
                r.close()
            logs = Reader(sock, "/v1/events?type=state&logs=flood")
            results["1 event client with logs=flood"] = _window(proc.pid, window)
            log_lines = logs.lines
            logs.close()
            follow = Reader(sock, "/v1/logs?follow=1&n=0&unit=flood")
            results["1 /v1/logs?follow=1 follower"] = _window(proc.pid, window)
            follow_lines = follow.lines
            follow.close()
            dropped = client.get("/v1/version")["events"]["dropped"]
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    base = results["no client"]
    print(
        f"flood {rate} lines/s, a restart every {restart_s:g} s; vastinit CPU-s per "
        f"{window:g} s window (median of {PAIRS}):"
    )
    for name, cpu in results.items():
        print(f"  {name:34s} {cpu:6.2f}  ({(cpu / base - 1) * 100:+.0f} % vs no client)")
    first = states[0].seqs
    same = all(r.seqs[: len(first)] == first[: len(r.seqs)] for r in states)
    gapless = all(b == a + 1 for r in states for a, b in zip(r.seqs, r.seqs[1:], strict=False))
    print(
        f"state clients: {len(first)} events each, identical: {same}, consecutive: {gapless}; "
        f"log lines read: events {log_lines}, follow {follow_lines}; clients dropped {dropped}"
    )
    return 0 if same and gapless and dropped == 0 else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(
        main(
            float(args[0]) if args else WINDOW,
            int(args[1]) if len(args) > 1 else RATE,
            float(args[2]) if len(args) > 2 else RESTART_S,
        )
    )
