"""Faults of PID 1's stdout: closed (every write fails with EPIPE), and blocked.

The issue asks for "stdout blocked for a minute"; CI blocks it for BLOCK_S = 20 s (set
VASTINIT_FAULTS_BLOCK_S=60 for the full minute): vastinit's console gives up waiting after
logs.flow.STALL_S (1 s), so 20 s covers the same path, with 19 s of drops to count.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import StatusProbe, counter_unit, numbers, read
from tests.harness import wait_until, write_unit

pytestmark = [pytest.mark.faults]

BLOCK_S = float(os.environ.get("VASTINIT_FAULTS_BLOCK_S", "20"))

Raw = Callable[..., subprocess.Popen[bytes]]


def _wait_socket(proc: subprocess.Popen[bytes], sock: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, f"vastinit exited with {proc.returncode}"
        return sock.exists()

    wait_until(up, 15, f"the control socket {sock}")


def _sigterm(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    return proc.wait(30)


@pytest.mark.timeout(60)
def test_stdout_closed_epipe(units_dir: Path, tmp_path: Path, raw_vastinit: Raw) -> None:
    """The reader of PID 1's stdout goes away (a log collector that died): every console
    write fails with EPIPE. vastinit carries on: the files get every line, status answers."""
    stop = tmp_path / "stop"
    write_unit(units_dir, "writer", counter_unit(stop, rate=1000))
    r, w = os.pipe()
    proc = raw_vastinit(stdout=w)
    os.close(w)
    sock = tmp_path / "vastinit.sock"
    _wait_socket(proc, sock)
    with os.fdopen(r, "rb") as reader:
        reader.read1(1 << 16)  # it was being read ...
    # ... and now nobody holds the read end: EPIPE on every write.
    with StatusProbe(sock, tmp_path) as probe:
        log = tmp_path / "logs" / "writer.log"
        start = len(numbers(read(log)))
        wait_until(
            lambda: len(numbers(read(log))) > start + 3000,
            20,
            "3,000 more lines in writer.log after stdout closed",
        )
        assert proc.poll() is None, f"vastinit exited ({proc.returncode}) once stdout closed"
        stop.touch()
        wait_until(lambda: b"done " in read(log), 10, "writer's 'done N' line in its file")
    probe.assert_responsive()
    data = read(log)
    total = int(data.rsplit(b"done ", 1)[1].split()[0])
    assert numbers(data) == list(range(total)), "writer.log lost lines: only stdout is broken"
    assert _sigterm(proc) == 0
    err = (tmp_path / "stderr").read_bytes()
    assert len(err) < 20_000, f"{len(err)} bytes on stderr: an error per failed write?"


@pytest.mark.timeout(BLOCK_S + 60)
def test_stdout_blocked_drops_are_counted_and_status_answers(
    units_dir: Path, tmp_path: Path, raw_vastinit: Raw
) -> None:
    """Nobody reads PID 1's stdout for BLOCK_S (a terminal on hold, a stuck `docker logs`):
    units keep running, their files get every line, status answers; once stdout is read
    again, one line says how many were dropped, and that count is what is missing."""
    stop = tmp_path / "stop"
    # 4,000 lines/s: ~0.6 MB/s of JSON, so the console's 8 MiB queue overflows in the window.
    write_unit(units_dir, "writer", counter_unit(stop, rate=4000))
    proc = raw_vastinit(stdout=subprocess.PIPE)
    assert proc.stdout is not None
    sock = tmp_path / "vastinit.sock"
    _wait_socket(proc, sock)
    out = bytearray()
    unblocked = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        unblocked.wait()
        while chunk := proc.stdout.read1(1 << 20):
            out.extend(chunk)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    log = tmp_path / "logs" / "writer.log"
    with StatusProbe(sock, tmp_path) as probe:
        deadline = time.monotonic() + BLOCK_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"vastinit exited ({proc.returncode}) on a blocked stdout"
            time.sleep(0.2)
        in_file_during = len(numbers(read(log)))
        unblocked.set()
        stop.touch()
        wait_until(lambda: b"done " in read(log), 15, "writer's 'done N' line in its file")
        wait_until(
            lambda: b'"line": "done ' in out or b'"line":"done ' in out, 15, "done on stdout"
        )
    probe.assert_responsive()
    # Units were not held back for the whole window (the console stops waiting after 1 s).
    assert in_file_during > 4000 * (BLOCK_S - 5), f"only {in_file_during} lines in the window"
    data = read(log)
    total = int(data.rsplit(b"done ", 1)[1].split()[0])
    assert numbers(data) == list(range(total)), "writer.log lost lines: only stdout was blocked"
    records: list[dict[str, Any]] = []
    for raw in bytes(out).splitlines():
        try:
            records.append(json.loads(raw))
        except ValueError:
            continue
    seen = [
        int(r["line"][1:7])
        for r in records
        if r.get("unit") == "writer" and str(r.get("line", "")).startswith("L")
    ]
    assert seen == sorted(set(seen)), "console lines out of order or repeated"
    missing = total - len(seen)
    dropped = sum(int(r.get("dropped", 0)) for r in records if "line" not in r)
    assert missing > 0, "nothing dropped: stdout was not blocked long enough to overflow"
    # The notices count every dropped line: the writer's, and vastinit's own few events.
    assert missing <= dropped <= missing + 50, (missing, dropped)
    assert _sigterm(proc) == 0
    drainer.join(10)
