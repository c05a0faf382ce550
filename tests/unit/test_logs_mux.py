"""LogMux with real pipes: pumps, EOF, files, the byte-bounded ring, tails, followers, watchers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from vastinit.logs.console import ConsoleSink
from vastinit.logs.line import LogLine
from vastinit.logs.mux import LogMux, UnitLog

pytestmark = pytest.mark.anyio
FLOOD_PY = Path(__file__).resolve().parents[2] / "tests" / "programs" / "flood.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def console() -> Iterator[tuple[ConsoleSink, int]]:
    """A console on a pipe (read it with ``drain_pipe``)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    sink = ConsoleSink(w, color=False)
    yield sink, r
    sink.close()
    os.close(r)
    os.close(w)


def drain_pipe(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.005)


def texts(lines: list[LogLine]) -> list[bytes]:
    return [ln.text for ln in lines]


def last_text(ulog: UnitLog) -> bytes | None:
    tail = ulog.tail(1)
    return tail[0].text if tail else None


async def wait_last(ulog: UnitLog, text: bytes) -> None:
    """Wait until ``text`` is the newest line in ``ulog``'s ring."""
    await wait_for(lambda: last_text(ulog) == text, f"{text!r} in the ring")


async def test_every_line_reaches_file_console_and_ring(
    console: tuple[ConsoleSink, int], tmp_path: Path
) -> None:
    sink, r = console
    mux = LogMux(sink, tmp_path)
    ulog = mux.unit_log("web", "web.log", 1 << 20, 3)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    out, err = ulog.attach(out_r, "stdout"), ulog.attach(err_r, "stderr")
    os.write(out_w, b"hello\nwor")
    os.write(err_w, b"oops\n")
    os.write(out_w, b"ld\nno newline")
    os.close(out_w)
    os.close(err_w)
    with anyio.fail_after(5):
        await out.wait_eof()
        await err.wait_eof()
    assert out.at_eof and err.at_eof and not ulog.pumps
    await mux.aclose()  # the file is written by a thread: closing waits for it
    lines = mux.tail(["web"], 10)
    assert sorted(texts(lines)) == [b"hello", b"no newline", b"oops", b"world"]
    assert {ln.stream for ln in lines if ln.text == b"oops"} == {"stderr"}
    assert sorted((tmp_path / "web.log").read_bytes().splitlines()) == sorted(texts(lines))
    assert sorted(drain_pipe(r).splitlines()) == sorted(b"web      | " + t for t in texts(lines))
    with pytest.raises(OSError):
        os.fstat(out_r)  # the pump closed the fd it owned


async def test_a_line_shows_within_milliseconds(console: tuple[ConsoleSink, int]) -> None:
    mux = LogMux(console[0], None)
    ulog = mux.unit_log("u", None, 0, 0)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    for i in range(5):  # each line after the pipe went quiet, and right after one another
        start = time.monotonic()
        os.write(w, b"line %d\n" % i)
        await wait_last(ulog, b"line %d" % i)
        assert time.monotonic() - start < 0.5
    os.close(w)
    await pump.wait_eof()


async def test_lines_written_one_by_one_are_read_in_batches(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None)
    ulog = mux.unit_log("trickle", None, 0, 0)
    batches: list[int] = []
    ulog.add_watcher(lambda lines: batches.append(len(lines)))
    r, w = os.pipe2(os.O_CLOEXEC)
    # 1,000 lines, one write each, ~0.2 ms apart: slower than the reader, so a reader that
    # wakes for every write would read them one at a time.
    argv = [sys.executable, str(FLOOD_PY), "1000", "--line-per-write", "--pause", "0.0002"]
    proc = subprocess.Popen(argv, stdout=w)
    os.close(w)
    try:
        with anyio.fail_after(30):
            await ulog.attach(r, "stdout").wait_eof()
    finally:
        proc.kill()
        proc.wait()
    assert sum(batches) == 1000
    assert len(batches) < 250, f"{len(batches)} reads for 1,000 lines: reads are not coalesced"


async def test_tail_merges_units_in_the_order_lines_arrived(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None)
    pipes = {}
    for name in ("a", "b"):
        r, w = os.pipe2(os.O_CLOEXEC)
        mux.unit_log(name, None, 0, 0).attach(r, "stdout")
        pipes[name] = w
    for i, name in enumerate(["a", "b", "a", "b", "b", "a"]):
        os.write(pipes[name], b"%s%d\n" % (name.encode(), i))
        await wait_last(mux.unit_log(name, None, 0, 0), b"%s%d" % (name.encode(), i))
    assert texts(mux.tail(None, 100)) == [b"a0", b"b1", b"a2", b"b3", b"b4", b"a5"]
    assert texts(mux.tail(None, 2)) == [b"b4", b"a5"]
    assert texts(mux.tail(["a"], 2)) == [b"a2", b"a5"]
    assert texts(mux.tail(["nobody"], 5)) == []
    assert mux.tail(None, 0) == []
    for w in pipes.values():
        os.close(w)
    await mux.aclose()


async def test_ring_is_bounded_in_bytes_and_keeps_the_newest(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None, ring_bytes=1000)
    ulog = mux.unit_log("u", None, 0, 0)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    for start in range(0, 100, 10):
        os.write(w, b"".join(b"%09d\n" % i for i in range(start, start + 10)))
        await wait_last(ulog, b"%09d" % (start + 9))
    os.close(w)
    await pump.wait_eof()
    kept = texts(ulog.tail(1000))
    assert 0 < len(kept) <= 100  # 10-byte lines in a 1000-byte ring
    assert kept == [b"%09d" % i for i in range(100 - len(kept), 100)]


async def test_one_chunk_bigger_than_the_ring_keeps_its_last_lines(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None, ring_bytes=1000)
    ulog = mux.unit_log("u", None, 0, 0)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    os.write(w, b"".join(b"%09d\n" % i for i in range(5000)))
    os.close(w)
    await pump.wait_eof()
    assert texts(ulog.tail(1000)) == [b"%09d" % i for i in range(4900, 5000)]


async def test_follower_gets_backlog_then_live_lines_across_a_restart(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None)
    ulog = mux.unit_log("svc", None, 0, 0)
    other = mux.unit_log("other", None, 0, 0)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    os.write(w, b"old1\nold2\n")
    await wait_for(lambda: len(ulog.tail(5)) == 2, "the first lines")
    sub = mux.subscribe(["svc"], backlog=1)
    os.write(w, b"new1\n")
    os.close(w)
    await pump.wait_eof()
    # The unit restarts: a new pipe, the same name.  The follower keeps following.
    r, w = os.pipe2(os.O_CLOEXEC)
    ulog = mux.unit_log("svc", None, 0, 0)
    pump = ulog.attach(r, "stdout")
    ro, wo = os.pipe2(os.O_CLOEXEC)
    other.attach(ro, "stdout")
    os.write(wo, b"not followed\n")
    os.write(w, b"after restart\n")
    got: list[bytes] = []
    with anyio.fail_after(5):
        async for line in sub:
            got.append(line.text)
            if line.text == b"after restart":
                break
    assert got == [b"old2", b"new1", b"after restart"]
    sub.close()
    os.close(w)
    os.close(wo)
    await mux.aclose()


async def test_slow_follower_loses_its_oldest_lines_and_is_told(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None, follower_bytes=1000)
    ulog = mux.unit_log("u", None, 0, 0)
    sub = mux.subscribe(None)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    for start in range(0, 1000, 100):  # 10 chunks of 100 lines of 10 bytes, none read yet
        os.write(w, b"".join(b"%09d\n" % i for i in range(start, start + 100)))
        await wait_last(ulog, b"%09d" % (start + 99))
    os.close(w)
    await pump.wait_eof()
    with anyio.fail_after(5):
        batch = await sub.next_batch()
    marker, rest = batch[0], batch[1:]
    assert marker.unit == "vastinit"
    assert marker.text == b"dropped %d lines (follower too slow)" % (1000 - len(rest))
    assert texts(rest) == [b"%09d" % i for i in range(1000 - len(rest), 1000)]
    assert sub.dropped == 1000 - len(rest) > 0
    await mux.aclose()
    assert await sub.next_batch() == []


async def test_aclose_ends_followers_and_flushes_partial_lines(
    console: tuple[ConsoleSink, int], tmp_path: Path
) -> None:
    mux = LogMux(console[0], tmp_path)
    ulog = mux.unit_log("u", "u.log", 1 << 20, 1)
    sub = mux.subscribe(["u"])
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    os.write(w, b"complete\nhalf a line")
    await mux.aclose()  # the writer is still open: close() reads what is there, then stops
    assert pump.at_eof
    with anyio.fail_after(5):
        got = [line.text async for line in sub]
    assert got == [b"complete", b"half a line"]
    assert (tmp_path / "u.log").read_bytes() == b"complete\nhalf a line\n"
    os.close(w)


async def test_watchers_see_each_batch_until_they_unsubscribe(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None)
    ulog = mux.unit_log("u", None, 0, 0)
    seen: list[bytes] = []
    unsubscribe = ulog.add_watcher(seen.extend)

    def broken(lines: list[bytes]) -> None:
        raise RuntimeError("a broken watcher harms nobody else")

    ulog.add_watcher(broken)
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    os.write(w, b"server starting\nThe server is fired up and ready to roll\n")
    await wait_for(lambda: len(seen) == 2, "the watcher")
    unsubscribe()
    os.write(w, b"later\n")
    os.close(w)
    await pump.wait_eof()
    assert seen == [b"server starting", b"The server is fired up and ready to roll"]


async def test_file_can_be_moved_or_switched_off(
    console: tuple[ConsoleSink, int], tmp_path: Path
) -> None:
    mux = LogMux(console[0], tmp_path)

    async def run(file: str | None, text: bytes) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        pump = mux.unit_log("u", file, 1 << 20, 1).attach(r, "stdout")
        os.write(w, text)
        os.close(w)
        await pump.wait_eof()

    await run("first.log", b"one\n")
    await run("second.log", b"two\n")
    await run(None, b"three\n")
    await run("second.log", b"four\n")
    await mux.aclose()  # waits for the files, the replaced ones too
    assert (tmp_path / "first.log").read_bytes() == b"one\n"
    assert (tmp_path / "second.log").read_bytes() == b"two\nfour\n"
    assert texts(mux.tail(["u"], 10)) == [b"one", b"two", b"three", b"four"]


async def test_busy_stdout_holds_the_pipe_instead_of_dropping_lines(tmp_path: Path) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    # Held at 2 MiB, so the read in flight (up to 1 MiB, pump.READ_SIZE) fits under 4 MiB.
    sink = ConsoleSink(w, color=False, max_queue=4 << 20)
    got = bytearray()

    def slow_reader() -> None:
        # A live consumer, slower than the writer: ~13 MB/s against flood.py's 100+ MB/s.
        while chunk := os.read(r, 64 << 10):
            got.extend(chunk)
            time.sleep(0.005)

    reader = threading.Thread(target=slow_reader, daemon=True)
    reader.start()
    mux = LogMux(sink, tmp_path)
    ulog = mux.unit_log("u", "u.log", 1 << 30, 1)
    count = 100_000  # 10 MB: far more than the 1 MiB stdout pipe plus the 4 MiB queue
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    proc = subprocess.Popen([sys.executable, str(FLOOD_PY), str(count)], stdout=out_w)
    os.close(out_w)
    held: list[bool] = []
    ulog.add_watcher(lambda _: held.append(sink.gate.holding))
    try:
        with anyio.fail_after(30):
            await ulog.attach(out_r, "stdout").wait_eof()
            await sink.drain(30)
    finally:
        proc.kill()
        proc.wait()
        sink.close()
        os.close(w)
        reader.join(10)
        os.close(r)
    assert not reader.is_alive()
    assert sink.dropped == 0, f"{sink.dropped} lines dropped while stdout was moving"
    assert any(held), "the reader was never held back: the test did not load stdout"
    want = b"".join(b"u        | %010d " % i + b"x" * 88 + b"\n" for i in range(count))
    assert bytes(got) == want
    assert (tmp_path / "u.log").stat().st_size == count * 100


async def test_all_followers_together_stay_within_their_shared_budget(
    console: tuple[ConsoleSink, int],
) -> None:
    # Each follower may queue 1000 bytes, all together 1500: the one furthest behind sheds.
    mux = LogMux(console[0], None, follower_bytes=1000, followers_bytes=1500)
    ulog = mux.unit_log("u", None, 0, 0)
    subs = [mux.subscribe(None) for _ in range(3)]
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    for start in range(0, 300, 10):  # 30 chunks of 10 lines of 10 bytes
        os.write(w, b"".join(b"%09d\n" % i for i in range(start, start + 10)))
        await wait_last(ulog, b"%09d" % (start + 9))
        assert sum(s.queued_bytes for s in subs) <= 1500
        if start == 100:
            await subs[0].next_batch()  # one follower reads a little: it is behind the least
    os.close(w)
    await pump.wait_eof()
    assert all(s.dropped > 0 for s in subs)
    batches = [await s.next_batch() for s in subs]
    for batch in batches:
        assert batch[0].unit == "vastinit" and b"follower too slow" in batch[0].text
        assert texts(batch[1:])[-1] == b"%09d" % 299  # each keeps its newest lines
    await mux.aclose()


async def test_a_follower_batch_is_bounded_however_much_is_queued(
    console: tuple[ConsoleSink, int],
) -> None:
    mux = LogMux(console[0], None, follower_bytes=4 << 20)
    ulog = mux.unit_log("u", None, 0, 0)
    sub = mux.subscribe(["u"])
    r, w = os.pipe2(os.O_CLOEXEC)
    pump = ulog.attach(r, "stdout")
    os.write(w, b"".join(b"%099d\n" % i for i in range(8000)))  # 800 KB in one go
    os.close(w)
    await pump.wait_eof()
    got: list[bytes] = []
    while len(got) < 8000:
        batch = await sub.next_batch()
        assert sum(len(line.text) for line in batch) <= 80 << 10
        got.extend(texts(batch))
    assert got == [b"%099d" % i for i in range(8000)]
    await mux.aclose()
