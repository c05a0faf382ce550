"""Followers that never read: memory stays bounded, `ctl status` stays fast, they are cut off.

A real ``vastinit run`` with a unit writing ~10,000 lines/s and 30 raw clients that send
``GET /v1/logs?follow=1`` and never read a byte.  Before the bounds, each such follower
held several MB (its whole queue expanded into lines, JSON and transport copies), never
bounded in total, and never went away.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from pathlib import Path

from tests.harness import PROGRAMS, Vastinit, wait_until, write_unit

CLIENTS = 30
FLOOD = PROGRAMS / "paced_flood.py"  # RATE lines/s of 100 bytes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def follower(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(path))
    sock.sendall(b"GET /v1/logs?follow=1&n=0&unit=flood HTTP/1.1\r\nHost: vastinit\r\n\r\n")
    return sock


def cut_off(sock: socket.socket) -> bool:
    """True once the server has closed the connection; reads nothing (that would be reading)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return any(ev & (select.POLLHUP | select.POLLRDHUP) for _, ev in poller.poll(0))


def test_followers_that_never_read_are_bounded_and_cut_off(tmp_path: Path) -> None:
    units = tmp_path / "units"
    write_unit(units, "flood", f'command = ["{sys.executable}", "{FLOOD}", "10000"]\n')
    vi = Vastinit(units, tmp_path, control=True)
    socks: list[socket.socket] = []
    try:
        vi.wait_control()
        vi.wait_state("flood", "running")
        time.sleep(1.0)
        base = rss_mb(vi.pid)
        start = time.monotonic()
        socks = [follower(vi.socket) for _ in range(CLIENTS)]
        peak, worst_status = base, 0.0
        open_socks = list(socks)
        cut_at: list[float] = []
        while open_socks and time.monotonic() - start < 40:
            t0 = time.monotonic()
            status = vi.ctl("status", timeout=30)
            worst_status = max(worst_status, time.monotonic() - t0)
            assert status.returncode == 0, status.stderr
            peak = max(peak, rss_mb(vi.pid))
            for s in list(open_socks):
                if cut_off(s):
                    open_socks.remove(s)
                    cut_at.append(time.monotonic() - start)
            time.sleep(0.5)
        after = rss_mb(vi.pid)
        print(
            f"\n{CLIENTS} followers not reading: RSS {base:.1f} MB before, peak {peak:.1f} MB, "
            f"{after:.1f} MB after the cut-off; worst `ctl status` {worst_status:.2f} s; "
            f"cut off after {min(cut_at, default=0):.1f}-{max(cut_at, default=0):.1f} s"
        )
        assert not open_socks, f"{len(open_socks)} followers were never cut off"
        assert max(cut_at) < 25  # 10 s without progress, plus filling up and checks
        assert worst_status < 1.0
        assert peak - base < 100  # 64 MiB for all queues together, plus small change
        assert any(e.get("event") == "log follower cut off" for e in vi.events)
        # Nothing stays with them: the follower queues are freed.
        wait_until(lambda: rss_mb(vi.pid) - base < 60, 10, "the memory to go back")
    finally:
        for s in socks:
            s.close()
        vi.terminate()
    assert os.path.exists(vi.log_dir / "flood.log")
