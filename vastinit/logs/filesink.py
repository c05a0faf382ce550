"""A unit's log file, written by a thread of its own so that a stalled disk never stalls PID 1.

The event loop only appends each framed chunk to a queue bounded in bytes (``QUEUE_BYTES``):
no system call, no file I/O.  The sink's writer thread takes everything queued at once and
appends it with ``writev``, opening, rotating and reopening the file as needed.  A hung
filesystem (NFS, FUSE) blocks only that thread: once its queue is full the sink drops new
lines, counting them; a full disk (ENOSPC) loses the lines of each failed write, also
counted.  When writes succeed again the first thing written is one notice line saying how
many lines were lost at that point of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from vastinit.logs.flow import FlowGate
from vastinit.logs.line import count_lines

_log = structlog.get_logger("vastinit.logs")

WARN_INTERVAL = 30.0
"""At most one warning per sink in this many seconds, however many writes fail."""

REOPEN_INTERVAL = 1.0
"""After a failed open, try again at most this often (not once per chunk)."""

QUEUE_BYTES = 4 << 20
"""Bytes of lines queued for one file (the batch being written included); past it, drops."""

STALL_WARN_S = 1.0
"""A write or open of the file taking this long is reported as a stall (a hung mount), even
before the queue fills and lines are dropped."""

CLOSE_TIMEOUT = 2.0
"""How long closing waits for the queue to reach the file; the rest is counted as lost."""

IDLE_EXIT_S = 30.0
"""A writer thread with nothing to write for this long ends (the next line starts one)."""

FILE_MODE = 0o640
"""Mode of the log files vastinit creates (rotated files keep it: a rename keeps the mode)."""

DIR_MODE = 0o750
"""Mode of the log directories vastinit creates."""

_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def resolve_group(name: str) -> int:
    """The gid of group ``name`` (a name or a number); ValueError naming it if unknown."""
    name = name.strip()
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {name!r} (not in the group database)") from None


def prepare_log_dir(path: Path, group: int | None = None) -> None:
    """Create the log directory ``path`` (mode DIR_MODE, group ``group``) if it is missing.

    A directory that exists is left as it is (it may be shared, or set up on purpose).
    Raises OSError.
    """
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return  # someone else just made it: theirs
    os.chmod(path, DIR_MODE)  # the umask does not decide this
    if group is not None and os.stat(path).st_gid != group:
        os.chown(path, -1, group)


class _Gap:
    """A place in the queue where lines were dropped because the queue was full."""

    __slots__ = ("lines",)

    def __init__(self, lines: int) -> None:
        self.lines = lines


class FileSink:
    """Appends blocks of complete lines to ``path``, rotating past ``max_size`` (keep ``keep``).

    ``write`` only queues (it never blocks); a writer thread does the file I/O.  Rotation
    renames NAME.log -> NAME.log.1 -> ... -> NAME.log.K (NAME.log.1 is the newest).  A failed
    open, write or rename is counted in ``errors``, logged at most once per WARN_INTERVAL and
    retried on later chunks; lines that could not be written (a failed write, a full queue,
    left over at close) are counted in ``lost_lines``, and a notice line saying how many is
    written into the file where they are missing.  Only regular files are rotated (a device
    such as /dev/null is not).  New files get FILE_MODE and group ``group`` (None: the
    creating process's group).
    """

    def __init__(
        self,
        path: Path,
        max_size: int,
        keep: int,
        *,
        unit: str = "",
        reopen_interval: float = REOPEN_INTERVAL,
        group: int | None = None,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.path = path
        self.max_size = max(1, max_size)
        self.keep = max(0, keep)
        self.unit = unit
        self.group = group
        self.queue_bytes = queue_bytes
        self.errors = 0
        self._dropped = 0  # lines dropped at a full queue (the loop's side)
        self._failed_lines = 0  # lines lost to failed opens and writes (the thread's side)
        self._close_lost = 0  # lines still queued when closing gave up
        self._fd = -1
        self._size = 0
        self._regular = False
        self._next_open = 0.0
        self._reopen_interval = reopen_interval
        self._last_warning = -WARN_INTERVAL
        self._last_drop_warning = -WARN_INTERVAL
        self._last_stall_warning = -WARN_INTERVAL
        # Backpressure before drops: over half the queue, the unit's pumps stop reading (its
        # pipe holds the backlog) while the writer makes progress; only a writer that made
        # none for STALL_WARN_S releases them, and then a full queue drops, counted.
        self.gate = FlowGate(queue_bytes // 2, queue_bytes // 4, stall_s=STALL_WARN_S)
        self._stall_warned = False  # the batch being written was reported as stalled
        # Shared with the writer thread, under _lock:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits for work here
        self._done = threading.Condition(self._lock)  # flush/close wait for the writer here
        self._queue: deque[bytes | _Gap] = deque()
        self._queued = 0  # bytes queued plus the batch being written
        self._inflight: list[bytes | _Gap] = []  # the batch being written
        self._busy_since = 0.0  # monotonic time the writer took the batch (0: not writing)
        self._waiting = False  # the writer is waiting on _wake
        self._thread: threading.Thread | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # The writer thread's own state:
        self._unreported = 0  # lines lost that no notice in the file mentions yet
        self._reasons: set[str] = set()
        self._midline = False  # a failed write left the file ending in part of a line

    @property
    def lost_lines(self) -> int:
        """Lines that did not reach the file: failed writes, a full queue, left over at close."""
        return self._dropped + self._failed_lines + self._close_lost

    @property
    def dropped_lines(self) -> int:
        """Of ``lost_lines``, those dropped because the queue was full (a stalled disk)."""
        return self._dropped

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the file now (the batch being written included)."""
        return self._queued

    def write(self, block: bytes) -> None:
        """Queue ``block`` (whole lines) for the file; never blocks; drops when full."""
        with self._lock:
            if self._queued and self._queued + len(block) > self.queue_bytes:
                n = count_lines(block)
                self._dropped += n
                tail = self._queue[-1] if self._queue else None
                if isinstance(tail, _Gap):
                    tail.lines += n
                else:
                    self._queue.append(_Gap(n))
                dropping = True
            else:
                self._queue.append(block)
                self._queued += len(block)
                dropping = False
                if self._waiting:
                    self._wake.notify()
            if self._thread is None:
                self._start()
            busy_since = self._busy_since
            level = self._queued
        if not dropping:
            self.gate.grew(level)
        if dropping:
            self._warn_dropping()
        elif busy_since and time.monotonic() - busy_since >= STALL_WARN_S:
            self._warn_stalled(busy_since)

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait (blocking) until everything queued is in the file; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queued or self._queue:
                left = deadline - time.monotonic()
                if left <= 0 or not self._done.wait(left):
                    return False
        return True

    def close_nowait(self) -> None:
        """Close the file once the writer has written what is queued (a later write reopens)."""
        with self._lock:
            self._closing = True
            if self._waiting:
                self._wake.notify()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is queued (waiting up to ``timeout``; the rest is lost) and close the file."""
        self.close_nowait()
        self._wait_closed(timeout)

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """``close`` without blocking the event loop (it checks back every 2 ms)."""
        import anyio

        self.close_nowait()
        with anyio.move_on_after(timeout):
            while not self.idle:
                await anyio.sleep(0.002)
        self.abandon()

    @property
    def idle(self) -> bool:
        """True when nothing is queued and no writer thread runs (the file is closed)."""
        return self._thread is None and not self._queue

    def _wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._done.wait(left):
                    break
        self.abandon()

    def abandon(self) -> None:
        """Give up on what is still queued or being written: count it as lost (and say so).

        For closing when the disk does not take the lines in time; a no-op when idle.
        """
        self.gate.close()  # never hold a reader for a file given up on
        with self._lock:
            if self._thread is None:
                return
            # A gap's lines were counted when they were dropped.
            left = [b for b in (*self._inflight, *self._queue) if not isinstance(b, _Gap)]
            if not left:
                return
            self._close_lost += sum(count_lines(b) for b in left)
            self._queued -= sum(len(b) for b in self._queue if not isinstance(b, _Gap))
            self._queue.clear()
            self._inflight = []
            self._done.notify_all()
        _log.warning(
            "log file not flushed at close",
            unit=self.unit,
            path=str(self.path),
            lost_lines=self.lost_lines,
        )

    # ---- the writer thread ---------------------------------------------------------------

    def _start(self) -> None:
        """Start the writer thread (with _lock held)."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._run, name=f"vastinit-log-{self.unit or self.path.name}", daemon=True
        )
        self._thread = thread
        try:
            thread.start()
        except RuntimeError:
            # No thread to be had now (a pids limit): the lines stay queued, the next write
            # tries again; a queue that fills meanwhile drops, counted.
            self._thread = None

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as exc:
            # A bug in the writer: give the queue up (counted as lost) rather than leave a
            # dead thread that every later write would wait for.
            error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                left = [b for b in (*self._inflight, *self._queue) if not isinstance(b, _Gap)]
                self._close_lost += sum(count_lines(b) for b in left)
                self._queue.clear()
                self._inflight = []
                self._queued = 0
                self._busy_since = 0.0
                self._thread = None
                self._done.notify_all()
            self._drop_fd()
            self._report(lambda: _log.error("log file writer failed", unit=self.unit, error=error))

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._waiting = True
                    woken = self._wake.wait(IDLE_EXIT_S)
                    self._waiting = False
                    if not woken and not self._queue and self._fd >= 0:
                        # Idle: close the file (outside the lock: a close may be slow on a
                        # network mount), then wait once more before the thread ends.
                        self._lock.release()
                        try:
                            self._drop_fd()
                        finally:
                            self._lock.acquire()
                        continue
                    if not woken and not self._queue:
                        self._thread = None  # idle: the next write starts a new thread
                        self._done.notify_all()
                        return
                items = self._inflight = list(self._queue)
                self._queue.clear()
                self._busy_since = time.monotonic() if items else 0.0
            if items:
                nbytes = self._write_items(items)
                with self._lock:
                    self._inflight = []
                    self._queued -= nbytes
                    self._busy_since = 0.0
                    stalled, self._stall_warned = self._stall_warned, False
                    if not self._queued and not self._queue:
                        self._done.notify_all()
                self._progress()
                if stalled:
                    self._report(
                        lambda: _log.warning(
                            "log file moving again", unit=self.unit, path=str(self.path)
                        )
                    )
                continue
            # Closing and nothing left: close the file, then end unless more came meanwhile.
            self._drop_fd()
            with self._lock:
                if self._queue:
                    continue
                self._closing = False
                self._thread = None
                self._done.notify_all()
                return

    def _write_items(self, items: list[bytes | _Gap]) -> int:
        """Write ``items`` in order, noting gaps; returns the bytes of lines taken."""
        total = 0
        blocks: list[bytes] = []
        for item in items:
            if isinstance(item, _Gap):
                self._write_blocks(blocks)
                blocks = []
                self._unreported += item.lines
                self._reasons.add("log file stalled, queue full")
            else:
                blocks.append(item)
                total += len(item)
        self._write_blocks(blocks)
        return total

    def _write_blocks(self, blocks: list[bytes]) -> None:
        if not blocks:
            return
        if self._fd < 0 and not self._open():
            self._lose(sum(count_lines(b) for b in blocks))
            return
        if self._unreported and not self._write_notice():
            self._lose(sum(count_lines(b) for b in blocks))
            return
        room = self.max_size - self._size
        if not self._regular or sum(len(b) for b in blocks) <= room:
            if self._write_all(blocks) and self._regular and self._size >= self.max_size:
                self._rotate()
            return
        for block in blocks:
            self._write_block(block)

    def _write_block(self, block: bytes) -> None:
        """Append ``block``, rotating at line boundaries when the file is full."""
        if self._fd < 0 and not self._open():
            self._lose(count_lines(block))
            return
        while block:
            room = self.max_size - self._size
            if not self._regular or len(block) <= room:
                if self._write_all([block]) and self._regular and self._size >= self.max_size:
                    self._rotate()
                return
            # Fill the file up to max_size with whole lines, then rotate and go on.
            cut = block.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = block.find(b"\n") + 1  # one line longer than max_size: alone in a file
            if cut > 0:
                if not self._write_all([block[:cut]]):
                    self._lose(count_lines(block[cut:]))
                    return
                block = block[cut:]
            if not self._rotate():
                # Could not rotate: the file grows past max_size rather than lose lines.
                if self._fd < 0:
                    self._lose(count_lines(block))
                else:
                    self._write_all([block])
                return

    def _write_notice(self) -> bool:
        """Write the line that marks lost lines; True if it (and so the file) works again."""
        n = self._unreported
        reasons = ", ".join(sorted(self._reasons)) or "write failed"
        notice = f"vastinit: {n} lines lost here ({reasons})\n".encode()
        if self._midline:
            notice = b"\n" + notice  # after a line cut short by the failed write
        ok = self._write_all([notice], count_lost=False)
        if ok:
            self._unreported = 0
            self._reasons.clear()
            self._report(
                lambda: _log.warning(
                    "log file writable again",
                    unit=self.unit,
                    path=str(self.path),
                    lost_here=n,
                    lost_lines=self.lost_lines,
                )
            )
        return ok

    def _lose(self, n: int) -> None:
        self._failed_lines += n
        self._unreported += n

    def _open(self) -> bool:
        now = time.monotonic()
        if now < self._next_open:
            self._reasons.add("log file could not be opened")
            return False
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                fd = os.open(self.path, flags | os.O_CREAT, FILE_MODE)
                new = False
            else:
                new = True
            st = os.fstat(fd)
        except OSError as exc:
            self._next_open = now + self._reopen_interval
            self._reasons.add(exc.strerror or str(exc))
            self._failed("open", exc)
            return False
        if new:
            # Our file: its mode is ours to set, whatever the umask; the group may read it.
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE)
                if self.group is not None and st.st_gid != self.group:
                    os.fchown(fd, -1, self.group)
        self._fd, self._size, self._regular = fd, st.st_size, stat.S_ISREG(st.st_mode)
        return True

    def _write_all(self, blocks: list[bytes], *, count_lost: bool = True) -> bool:
        """Write all of ``blocks``; on error count the unwritten lines as lost, return False."""
        views = [memoryview(b) for b in blocks]
        i = 0
        partial = False  # views[i] was written in part: the file ends mid-line
        wrote = False
        while i < len(views):
            try:
                n = os.writev(self._fd, views[i : i + _IOV_MAX])
            except InterruptedError:
                continue
            except OSError as exc:
                if wrote:  # else the file ends where it did before this call
                    self._midline = partial
                if count_lost:
                    self._lose(sum(count_lines(bytes(v)) for v in views[i:]))
                self._reasons.add(exc.strerror or str(exc))
                self._failed("write", exc)
                if exc.errno in (errno.EBADF, errno.EIO):
                    # The descriptor itself is bad: reopen on a later chunk.
                    self._drop_fd()
                return False
            self._size += n
            wrote = wrote or n > 0
            while n:
                if n >= len(views[i]):
                    n -= len(views[i])
                    i += 1
                    partial = False
                else:
                    views[i] = views[i][n:]
                    n = 0
                    partial = True
        self._midline = False
        return True

    def _rotate(self) -> bool:
        """Shift NAME.log.i to NAME.log.i+1 (dropping the oldest) and start an empty file."""
        self._drop_fd()
        ok = True
        try:
            if self.keep == 0:
                self.path.unlink(missing_ok=True)
            else:
                for i in range(self.keep - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{i}")
                    if older.exists():
                        older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        except OSError as exc:
            ok = False
            self._failed("rotate", exc)
        return self._open() and ok

    def _drop_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._midline = False

    def _progress(self) -> None:
        """From the writer thread: the file took a batch; tell the gate, on the loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to release
                loop.call_soon_threadsafe(self._shrank)

    def _shrank(self) -> None:
        self.gate.shrank(self._queued)

    def _report(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (a log call) on the event loop, or here when there is none."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: say it here
                loop.call_soon_threadsafe(fn)
                return
        fn()

    def _failed(self, what: str, exc: OSError) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            error = exc.strerror or str(exc)
            self._report(
                lambda: _log.warning(
                    "log file error",
                    unit=self.unit,
                    op=what,
                    path=str(self.path),
                    error=error,
                    errors=self.errors,
                    lost_lines=self.lost_lines,
                )
            )

    def _warn_stalled(self, since: float) -> None:
        """On the loop: one write or open has taken STALL_WARN_S; at most once an interval."""
        now = time.monotonic()
        if now - self._last_stall_warning >= WARN_INTERVAL:
            self._last_stall_warning = now
            with self._lock:
                self._stall_warned = True
            _log.warning(
                "log file stalled: a write has not returned",
                unit=self.unit,
                path=str(self.path),
                seconds=round(now - since, 1),
                queued_bytes=self._queued,
                lost_lines=self.lost_lines,
            )

    def _warn_dropping(self) -> None:
        """On the loop: the queue is full (the disk takes nothing); at most once an interval."""
        now = time.monotonic()
        if now - self._last_drop_warning >= WARN_INTERVAL:
            self._last_drop_warning = now
            _log.warning(
                "log file stalled, dropping lines",
                unit=self.unit,
                path=str(self.path),
                queued_bytes=self._queued,
                lost_lines=self.lost_lines,
            )
