"""A stalled or full log filesystem never blocks the event loop: counted drops, then recovery.

A FIFO that nobody reads stands in for a hung mount (NFS, FUSE): a write to it blocks once
its 64 KiB buffer is full, exactly as a write to a hung mount does.  Each test has a
watchdog thread that starts draining the FIFO after a deadline, so that code which blocks
the loop on the file (the old, synchronous FileSink) fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from vastinit.logs.console import ConsoleSink
from vastinit.logs.filesink import FileSink
from vastinit.logs.mux import LogMux

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
NOTICE = re.compile(rb"^vastinit: (\d+) lines lost here \((.*)\)$")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def numbered(start: int, count: int, width: int = 1000) -> bytes:
    """``count`` lines numbered from ``start``, each ``width`` bytes with its newline."""
    return b"".join(b"%08d " % i + b"x" * (width - 10) + b"\n" for i in range(start, start + count))


class Fifo:
    """A FIFO at ``path`` with a reader that does not read until ``drain()`` (or the watchdog)."""

    def __init__(self, path: Path, watchdog_s: float) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self.rescued = False  # the watchdog had to drain: something blocked on the file
        self._draining = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(watchdog_s,), daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Start reading everything written to the FIFO (the 'disk' recovers)."""
        self._draining.set()

    def close(self) -> bytes:
        if self.fd < 0:
            return bytes(self.data)
        self._stop.set()
        self._draining.set()
        self._thread.join(10)
        self._read_all()
        os.close(self.fd)
        self.fd = -1
        return bytes(self.data)

    def _read_all(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.data += chunk

    def _run(self, watchdog_s: float) -> None:
        if not self._draining.wait(watchdog_s):
            self.rescued = not self._stop.is_set()
        while not self._stop.is_set():
            self._read_all()
            time.sleep(0.002)


class Ticker:
    """Counts loop turns every 10 ms and records the longest gap between two of them."""

    def __init__(self) -> None:
        self.ticks = 0
        self.worst_gap = 0.0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            self.worst_gap = max(self.worst_gap, now - last)
            last = now
            self.ticks += 1


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    f = Fifo(tmp_path / "app.log", watchdog_s=3.0)
    yield f
    f.close()


async def test_a_stalled_log_file_drops_counted_lines_and_never_blocks_the_loop(
    fifo: Fifo,
) -> None:
    sink = FileSink(fifo.path, 1 << 30, 3, unit="app")
    ticker = Ticker()
    total = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        # 8 MiB into a file that takes 64 KiB: twice the sink's 4 MiB queue.
        worst_write = 0.0
        for start in range(0, 8192, 64):
            t0 = time.monotonic()
            sink.write(numbered(start, 64))
            worst_write = max(worst_write, time.monotonic() - t0)
            total += 64
            await anyio.sleep(0.001)
        stalled_lost = sink.lost_lines
        assert not fifo.rescued, "the loop blocked on the log file until the watchdog drained it"
        assert worst_write < 0.05
        assert ticker.worst_gap < 0.5
        assert stalled_lost > 0  # the queue filled up: the rest was dropped, and counted
        # The disk recovers: what was queued goes out, then the notice, then new lines.
        fifo.drain()
        with anyio.fail_after(5):
            while sink.queued_bytes:
                await anyio.sleep(0.01)
        sink.write(numbered(total, 100))
        total += 100
        tg.cancel_scope.cancel()
    sink.close()
    data = fifo.close()
    assert sink.lost_lines == stalled_lost
    lines = data.splitlines()
    notices = [i for i, line in enumerate(lines) if line.startswith(b"vastinit:")]
    assert len(notices) == 1, lines[:3]
    match = NOTICE.match(lines[notices[0]])
    assert match is not None
    assert int(match[1]) == stalled_lost and b"stalled" in match[2]
    # Every line is there, in order, except the ones counted, which are missing at the notice.
    numbers = [int(line[:8]) for line in lines if not line.startswith(b"vastinit:")]
    assert numbers == sorted(numbers)
    assert len(numbers) + stalled_lost == total
    before, after = numbers[: notices[0]], numbers[notices[0] :]
    assert before == list(range(len(before)))
    assert after[0] - before[-1] - 1 == stalled_lost
    assert after[-1] == total - 1


async def test_shutdown_with_a_stalled_log_file_gives_up_after_the_timeout(tmp_path: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    console = ConsoleSink(w, color=False)
    fifo = Fifo(tmp_path / "u.log", watchdog_s=6.0)
    try:
        mux = LogMux(console, tmp_path)
        ulog = mux.unit_log("u", "u.log", 1 << 30, 1)
        other = mux.unit_log("other", "other.log", 1 << 30, 1)
        pr, pw = os.pipe2(os.O_CLOEXEC)
        pump = ulog.attach(pr, "stdout")
        opr, opw = os.pipe2(os.O_CLOEXEC)
        other_pump = other.attach(opr, "stdout")
        ticker = Ticker()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            for start in range(0, 1024, 64):  # 1 MiB: 64 KiB fit the FIFO, the rest waits
                os.write(pw, numbered(start, 64))
                await anyio.sleep(0.002)
            os.close(pw)
            # Another unit, meanwhile: its file is not held up by the stalled one.
            os.write(opw, numbered(0, 100))
            os.close(opw)
            with anyio.fail_after(5):
                await pump.wait_eof()
                await other_pump.wait_eof()
                other_log = tmp_path / "other.log"
                while not other_log.exists() or other_log.stat().st_size < 100_000:
                    await anyio.sleep(0.01)
            assert (tmp_path / "other.log").read_bytes() == numbered(0, 100)
            t0 = time.monotonic()
            await mux.aclose()  # waits up to 2 s for the file, then counts the rest as lost
            took = time.monotonic() - t0
            tg.cancel_scope.cancel()
        assert not fifo.rescued, "the loop blocked on the log file until the watchdog drained it"
        assert 1.5 < took < 3.0
        assert ticker.worst_gap < 0.5
        assert ulog.file is not None
        assert 0 < ulog.file.lost_lines < 1024
        assert len(mux.tail(["u"], 2000)) == 1024  # the ring and console were not held up
    finally:
        data = fifo.close()
        console.close()
        os.close(r)
        os.close(w)
    assert len(data.splitlines()) + ulog.file.lost_lines >= 1024


async def test_close_writes_what_is_queued_once_the_disk_takes_it(fifo: Fifo) -> None:
    sink = FileSink(fifo.path, 1 << 30, 3, unit="app")
    t0 = time.monotonic()
    for start in range(0, 512, 64):  # 512 KiB: more than the FIFO holds
        sink.write(numbered(start, 64))
    queued = time.monotonic() - t0
    threading.Timer(0.3, fifo.drain).start()  # the disk comes back while close() waits
    sink.close()
    data = fifo.close()
    assert not fifo.rescued
    assert queued < 0.5
    assert sink.lost_lines == 0 and sink.errors == 0
    assert data == numbered(0, 512)


ENOSPC_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vastinit.logs.filesink import FileSink

    d = Path(sys.argv[1])
    filler = d / "filler"
    filler.write_bytes(b"f" * (160 << 10))        # the disk: 256 KiB, 160 KiB taken
    sink = FileSink(d / "app.log", 1 << 30, 3, unit="app")
    line = lambda i: b"%08d " % i + b"x" * 90 + b"\\n"
    total = 0
    for chunk in range(40):                       # 40 x 100 lines of 100 bytes: 400 KB
        sink.write(b"".join(line(total + k) for k in range(100)))
        total += 100
        time.sleep(0.002)
    getattr(sink, "flush", lambda timeout: True)(5)  # (a synchronous sink has no queue)
    lost_full = sink.lost_lines
    filler.unlink()                               # space comes back
    for chunk in range(5):
        sink.write(b"".join(line(total + k) for k in range(100)))
        total += 100
    sink.close()
    print(total, lost_full, sink.lost_lines, sink.errors)
    """
)


def test_a_full_disk_loses_counted_lines_and_recovers_with_a_notice(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a scratch tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "enospc.py"
    script.write_text(ENOSPC_SCRIPT)
    copy = tmp_path / "app.log"
    shell = (
        f"mount -t tmpfs -o size=256k tmpfs {mnt} && "
        f"{sys.executable} {script} {mnt} && cp {mnt}/app.log {copy}"
    )
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell], capture_output=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    total, lost_full, lost, errors = map(int, proc.stdout.split()[-4:])
    assert lost_full > 0 and errors > 0
    assert lost == lost_full  # nothing lost once space came back
    lines = copy.read_bytes().splitlines()
    notices = [i for i, line in enumerate(lines) if line.startswith(b"vastinit:")]
    assert len(notices) == 1, [lines[i] for i in notices]
    match = NOTICE.match(lines[notices[0]])
    assert match is not None and int(match[1]) == lost
    assert b"No space left on device" in match[2]
    # A write cut short by the full disk may leave a piece of a (lost, counted) line.
    numbers = [int(line[:8]) for line in lines if len(line) == 99]
    assert len(numbers) + lost == total
    assert numbers == sorted(numbers)
    assert numbers[-1] == total - 1  # the lines after the recovery are all there


async def test_a_slow_but_moving_log_file_holds_the_unit_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A file that takes lines slower than a unit floods them (a busy host, a slow disk),
    but always takes some: the unit's pipe holds the backlog (backpressure), as with a busy
    stdout. Only a file that takes nothing for STALL_WARN_S loses lines."""
    path = tmp_path / "u.log"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    got = bytearray()
    stop = threading.Event()

    def slow_reader() -> None:  # about 12 MB/s: 64 KiB every 5 ms
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                got.extend(os.read(rfd, 1 << 16))
            time.sleep(0.005)

    lines = 16 * 1024  # 16 MiB: four times the sink's queue
    r, w = os.pipe2(os.O_CLOEXEC)
    console = ConsoleSink(w, color=False)
    console.close()  # stdout is not the subject here: its gate never holds
    reader = threading.Thread(target=slow_reader, daemon=True)
    reader.start()
    try:
        mux = LogMux(console, tmp_path)
        ulog = mux.unit_log("u", "u.log", 1 << 40, 1)
        pr, pw = os.pipe2(os.O_CLOEXEC)
        pump = ulog.attach(pr, "stdout")
        data = numbered(0, lines)

        def unit() -> None:  # a unit flooding its stdout as fast as the pipe takes it
            view = memoryview(data)
            while view:
                view = view[os.write(pw, view) :]
            os.close(pw)

        writer = threading.Thread(target=unit, daemon=True)
        writer.start()
        with anyio.fail_after(30):
            await pump.wait_eof()
            assert ulog.file is not None
            while ulog.file.queued_bytes:
                await anyio.sleep(0.01)
        writer.join(5)
        assert ulog.file.lost_lines == 0
        await mux.aclose()
        with anyio.fail_after(10):
            while len(got) < len(data):
                await anyio.sleep(0.01)
        assert bytes(got) == data
    finally:
        stop.set()
        reader.join(5)
        os.close(rfd)
        os.close(r)
        os.close(w)


def test_an_idle_writer_closes_its_file_and_a_later_line_reopens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vastinit.logs.filesink as filesink

    monkeypatch.setattr(filesink, "IDLE_EXIT_S", 0.05)
    sink = FileSink(tmp_path / "u.log", 1 << 20, 1, unit="u")
    sink.write(b"one\n")
    assert sink.flush(5)
    deadline = time.monotonic() + 5
    while not sink.idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.idle and sink._fd < 0, "an idle sink still holds its file open"
    sink.write(b"two\n")
    sink.close()
    assert (tmp_path / "u.log").read_bytes() == b"one\ntwo\n"


def test_a_writer_thread_that_cannot_start_leaves_the_lines_queued_for_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = threading.Thread.start
    refuse = {"left": 1}

    def start(self: threading.Thread) -> None:
        if refuse["left"]:
            refuse["left"] -= 1
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    sink = FileSink(tmp_path / "u.log", 1 << 20, 1, unit="u")
    sink.write(b"one\n")  # no thread: queued, no exception for the caller
    sink.write(b"two\n")  # this one starts the thread, which writes both
    sink.close()
    assert (tmp_path / "u.log").read_bytes() == b"one\ntwo\n"
    assert sink.lost_lines == 0
