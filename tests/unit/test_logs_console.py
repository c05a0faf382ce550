"""The console sink: prefixes, JSON lines, a bounded queue that drops whole lines, fd hygiene."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from vastinit.logs.console import ConsoleSink

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
FLOOD_PY = REPO / "tests" / "programs" / "flood.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PipeReader:
    """Reads a pipe to EOF in a thread (the test's stand-in for a log collector)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PipeReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.data += chunk

    def join(self, timeout: float = 10) -> bytes:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipe never reached EOF"
        return bytes(self.data)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def read_now(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def block(start: int, count: int, width: int = 100) -> bytes:
    return b"".join(b"%08d" % i + b"." * (width - 9) + b"\n" for i in range(start, start + count))


async def test_lines_get_padded_unit_prefixes(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, color=False)
    console.register("a")
    console.register("sglang-router")
    console.write_lines("a", "stdout", b"one\ntwo\n", 1.0)
    console.write_event(console.event_prefix() + "started")
    console.close()
    assert read_now(r) == (b"a             | one\na             | two\nvastinit      | started\n")


async def test_color_prefixes_differ_per_unit_and_reset(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, color=True)
    console.write_lines("web", "stdout", b"x\n", 1.0)
    console.write_lines("db", "stderr", b"y\n", 1.0)
    console.close()
    web, db = read_now(r).splitlines()
    assert re.fullmatch(rb"\x1b\[[0-9;]+mweb +\|\x1b\[0m x", web)
    assert re.fullmatch(rb"\x1b\[[0-9;]+mdb +\|\x1b\[0m y", db)
    assert web[:5] != db[:5]


async def test_color_is_off_by_default_on_a_pipe(pipe: tuple[int, int]) -> None:
    _, w = pipe
    assert ConsoleSink(w).color is False


async def test_json_format_writes_one_object_per_line(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, fmt="json")
    text = 'plain\nquote " and \\ backslash\n\x1b[31mred\x1b[0m\tété\n'.encode()
    console.write_lines("web", "stderr", text, 1700000000.25)
    console.write_lines("web", "stdout", b"\xff not utf-8\n", 1700000001.0)
    console.close()
    records = [json.loads(line) for line in read_now(r).splitlines()]
    assert [r["line"] for r in records] == [
        "plain",
        'quote " and \\ backslash',
        "\x1b[31mred\x1b[0m\tété",
        "\ufffd not utf-8",
    ]
    assert records[0] == {"ts": 1700000000.25, "unit": "web", "stream": "stderr", "line": "plain"}
    assert records[3]["stream"] == "stdout"


async def test_a_pipe_stdout_stays_blocking_for_everyone_else(pipe: tuple[int, int]) -> None:
    r, w = pipe
    before = fcntl.fcntl(w, fcntl.F_GETFL)
    console = ConsoleSink(w, color=False)
    assert fcntl.fcntl(w, fcntl.F_GETFL) == before  # a shell or fd 2 sharing it is unaffected
    console.write_lines("u", "stdout", b"x\n", 1.0)
    console.close()
    assert read_now(r) == b"u        | x\n"


async def test_a_socket_stdout_is_nonblocking_until_close() -> None:
    a, b = socket.socketpair()
    with a, b:
        before = fcntl.fcntl(a.fileno(), fcntl.F_GETFL)
        console = ConsoleSink(a.fileno(), color=False)
        assert fcntl.fcntl(a.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        console.write_lines("u", "stdout", b"x\n", 1.0)
        console.close()
        assert fcntl.fcntl(a.fileno(), fcntl.F_GETFL) == before
        assert b.recv(100) == b"u        | x\n"


async def test_full_queue_drops_whole_lines_then_reports_the_count(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, color=False, max_queue=256 << 10)
    total = 0
    for start in range(0, 40_000, 1000):  # 4 MB into a 1 MiB pipe and a 256 KiB queue
        console.write_lines("u", "stdout", block(start, 1000), time.time())
        total += 1000
    assert console.dropped > 0
    dropped = console.dropped
    reader = PipeReader(r).start()
    await console.drain(10)
    console.close()
    os.close(w)
    lines = reader.join().split(b"\n")
    assert lines.pop() == b""
    assert lines[-1] == f"vastinit | dropped {dropped} lines (stdout was blocked)".encode()
    kept = lines[:-1]
    assert all(re.fullmatch(rb"u        \| \d{8}\.{91}", ln) for ln in kept), "a spliced line"
    numbers = [int(ln[11:19]) for ln in kept]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert len(kept) + dropped == total


async def test_partial_writes_resume_exactly_where_they_stopped(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, color=False)
    reader_started = False
    sent = 0
    for start in range(0, 3000, 100):  # 30 x 1 MB of 10 KB lines: far more than the pipe holds
        console.write_lines("u", "stdout", block(start, 100, width=10_000), time.time())
        sent += 100
        if not reader_started:
            reader = PipeReader(r).start()
            reader_started = True
        await anyio.sleep(0.005)
    await console.drain(20)
    console.close()
    os.close(w)
    lines = reader.join().split(b"\n")[:-1]
    kept = [ln for ln in lines if not ln.startswith(b"vastinit")]
    assert all(re.fullmatch(rb"u        \| \d{8}\.{9991}", ln) for ln in kept), "a spliced line"
    assert len(kept) + console.dropped == sent


async def test_events_and_unit_lines_share_one_queue_in_order(pipe: tuple[int, int]) -> None:
    r, w = pipe
    console = ConsoleSink(w, color=False)
    console.write_lines("u", "stdout", b"first\n", 1.0)
    console.write_event("vastinit | between")
    console.write_lines("u", "stdout", b"last\n", 1.0)
    console.close()
    assert read_now(r).splitlines() == [
        b"u        | first",
        b"vastinit | between",
        b"u        | last",
    ]


async def test_broken_stdout_counts_drops_and_never_raises(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)  # nobody will ever read: writes fail with EPIPE
    console = ConsoleSink(w)
    console.write_lines("u", "stdout", b"a\nb\n", 1.0)
    console.write_event("vastinit | c")
    await console.drain(1)
    console.close()
    assert console.dropped == 3


def test_unknown_format_is_refused(pipe: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="'text' or 'json'"):
        ConsoleSink(pipe[1], fmt="xml")


# -- fd 1 stalled, in a child process ------------------------------------------------------

_CHILD = r"""
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux

async def main(flood, count, log_dir, report):
    console = ConsoleSink(1, max_queue=1 << 20)
    mux = LogMux(console, Path(log_dir))
    lag = 0.0
    async def ticker():
        nonlocal lag
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - t - 0.01)
    tick = asyncio.ensure_future(ticker())
    r, w = os.pipe2(os.O_CLOEXEC)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, flood, str(count)], stdout=w)
    os.close(w)
    pump = mux.unit_log("flood", "flood.log", 1 << 30, 1).attach(r, "stdout")
    await pump.wait_eof()
    took = time.monotonic() - start
    proc.wait()
    tick.cancel()
    tmp = Path(report + ".tmp")
    tmp.write_text(json.dumps({"took": took, "lag": lag, "dropped": console.dropped}))
    tmp.rename(report)
    await console.drain(30)
    console.close()

asyncio.run(main(*sys.argv[1:2], int(sys.argv[2]), *sys.argv[3:]))
"""


def test_stalled_stdout_slows_no_unit_and_drops_whole_lines(tmp_path: Path) -> None:
    count = 50_000  # 5 MB: more than the 1 MiB pipe and the 1 MiB queue
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-c", _CHILD, str(FLOOD_PY), str(count), str(tmp_path), str(report)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        deadline = time.monotonic() + 60
        while not report.exists():  # stdout is not read until the flood is over
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the flood did not get through a stalled stdout"
            time.sleep(0.02)
        out = proc.stdout.read()
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["lag"] < 1.0, f"the event loop stalled for {result['lag']:.2f} s"
    assert result["took"] < 30
    assert result["dropped"] > 0
    lines = out.split(b"\n")
    assert lines.pop() == b""
    assert (
        lines[-1] == f"vastinit | dropped {result['dropped']} lines (stdout was blocked)".encode()
    )
    assert all(re.fullmatch(rb"flood    \| \d{10} x{88}", ln) for ln in lines[:-1])
    assert len(lines) - 1 + result["dropped"] == count
    assert (tmp_path / "flood.log").stat().st_size == count * 100
