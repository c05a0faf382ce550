"""PID 1's stdout: one shared, non-blocking, bounded sink for every unit and for vastinit itself.

Only whole lines enter the queue, and a partial write resumes exactly where it stopped, so
lines never interleave mid-line.  While stdout is merely busy, ``gate`` (a FlowGate) holds
the pipe readers once the queue passes half of ``max_queue`` and lets them go when it is
down to a quarter, so nothing is lost.  When stdout stalls (a terminal on hold, a log
collector that stopped reading: no progress for flow.STALL_S) the gate lets the readers
run, the queue fills to ``max_queue`` bytes and further lines are dropped and counted; at
the gap, once lines fit again, one line says how many were lost.  Nothing here ever blocks
the event loop: writes are non-blocking (on a private reopened copy of fd 1 where possible,
so the terminal or pipe stays blocking for everyone else) and driven by ``loop.add_writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import select
import stat
import time
from collections import deque

from vastinit.logs.flow import FlowGate
from vastinit.logs.line import count_lines

_PALETTE = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
"""ANSI colours given to units in turn, like docker compose does."""

_EVENT_COLOR = "1"  # vastinit's own lines: bold, distinct from every unit
_IOV_MAX = 64  # buffers per writev: plenty to empty an 8 MiB queue in a few calls
_CLOSE_FLUSH_S = 1.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
SELF = "vastinit"


class ConsoleSink:
    """Writes ``NAME | line`` (or JSON lines) to ``fd`` through a bounded non-blocking queue.

    ``fmt`` is ``"text"`` or ``"json"``; ``color`` defaults to "fd is a tty and NO_COLOR is
    unset".  ``dropped`` counts the lines lost to a full queue or a broken stdout.  Readers
    that feed it should consult ``gate`` before each read (see flow.FlowGate); keep
    ``max_queue`` above twice such a read (pump.READ_SIZE, prefixed or as JSON), or the
    read that crosses the high-water mark may itself overflow the queue.
    """

    def __init__(
        self,
        fd: int = 1,
        *,
        fmt: str = "text",
        color: bool | None = None,
        max_queue: int = 8 << 20,
    ) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
        self.fd = fd
        self.fmt = fmt
        if color is None:
            color = os.isatty(fd) and not os.environ.get("NO_COLOR")
        self.color = color and fmt == "text"
        self.max_queue = max_queue
        # Hold readers at half the bound and release them at a quarter: the hysteresis keeps
        # them from waking per write, and the free half absorbs the read in flight (up to
        # pump.READ_SIZE, more once prefixed) and vastinit's own events without a drop.
        self.gate = FlowGate(max_queue // 2, max_queue // 4)
        self.dropped = 0
        self._unreported = 0  # drops not yet announced by a "dropped N lines" line
        self._full = False  # lines were dropped and stdout has not taken a byte since
        self._queue: deque[bytes | bytearray] = deque()
        self._head = 0  # bytes of _queue[0] already written
        self._queued = 0  # unwritten bytes in the queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False
        self._pollable = True
        self._broken = False
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self._colors: dict[str, str] = {SELF: _EVENT_COLOR}
        self._width = len(SELF)
        self._prefixes: dict[str, bytes] = {}
        self._orig_flags: int | None = None
        self._wfd = fd  # the descriptor written to: fd itself or our own reopened copy
        self._own_wfd = False
        self._setup_fd()

    def _setup_fd(self) -> None:
        """Make our writes to ``fd`` non-blocking without changing it for anyone else."""
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            self._broken = True  # no usable stdout: every line counts as dropped
            self.gate.close()
            return
        # epoll refuses regular files; writes to them never return EAGAIN anyway.
        self._pollable = not stat.S_ISREG(mode)
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            # O_NONBLOCK belongs to the open file description, which fd 1 shares with
            # whoever handed it to us (the shell's terminal, fd 2, a `tee`): reopen the
            # pipe or terminal for ourselves so that only our own writes stop blocking.
            with contextlib.suppress(OSError):
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                self._wfd = os.open(f"/proc/self/fd/{self.fd}", flags)
                self._own_wfd = True
        if not self._own_wfd and self._pollable:
            try:  # a socket, or no /proc: switch fd itself, and switch it back in close()
                old = fcntl.fcntl(self.fd, fcntl.F_GETFL)
                fcntl.fcntl(self.fd, fcntl.F_SETFL, old | os.O_NONBLOCK)
                self._orig_flags = old
            except OSError:
                self._broken = True
                self.gate.close()
                return
        if stat.S_ISFIFO(mode):
            # A deeper pipe rides out a reader that is scheduled late (a busy host).
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._wfd, _F_SETPIPE_SZ, PIPE_SIZE)

    # -- prefixes ---------------------------------------------------------------------------

    def register(self, unit: str) -> None:
        """Make ``unit`` known so that every prefix is padded to the longest name."""
        if unit in self._colors:
            return
        self._colors[unit] = _PALETTE[(len(self._colors) - 1) % len(_PALETTE)]
        if len(unit) > self._width:
            self._width = len(unit)
            self._prefixes.clear()

    def prefix(self, unit: str) -> bytes:
        """The text-format prefix of ``unit``'s lines: padded name, `` | ``, colour if on."""
        p = self._prefixes.get(unit)
        if p is None:
            self.register(unit)
            name = unit.ljust(self._width)
            color = self._colors[unit]
            text = f"\x1b[{color}m{name} |\x1b[0m " if self.color else f"{name} | "
            p = self._prefixes[unit] = text.encode()
        return p

    def event_prefix(self) -> str:
        """What vastinit's own text-format event lines start with (empty in JSON format)."""
        return "" if self.fmt == "json" else self.prefix(SELF).decode()

    # -- input ------------------------------------------------------------------------------

    def write_lines(self, unit: str, stream: str, block: bytes, ts: float) -> None:
        """Queue a block of ``unit``'s complete lines (each ending in ``\\n``)."""
        if self._broken or self._closed:
            self._drop(count_lines(block))
            return
        if self._full or self._queued >= self.max_queue:
            self._overflow(count_lines(block))
            return
        if self.fmt == "json":
            self._enqueue(_json_lines(unit, stream, block, ts))
            return
        p = self.prefix(unit)
        # The prefixed text is longer still: cut before transforming what cannot fit.
        fits = self._fit(block)
        if not fits:
            return
        # Two passes over the data: the C-speed replace, then one copy after the first prefix
        # (the prefix that replace appends after the last newline is cut off in place).
        out = bytearray(p)
        out += fits.replace(b"\n", b"\n" + p)
        del out[-len(p) :]
        self._enqueue(out)

    def write_event(self, line: str) -> None:
        """Queue one of vastinit's own log lines as-is, plus a newline."""
        if self._broken or self._closed:
            self._drop(1)
            return
        self._enqueue(line.encode("utf-8", "replace") + b"\n")

    # -- output -----------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Return once everything queued is written, or after ``timeout`` seconds."""
        if self._queue and not self._armed:
            self._flush()
        if not self._queue or self._broken:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def close(self) -> None:
        """Stop the writer, flush what is queued (blocking up to ~1 s), restore fd flags."""
        if self._closed:
            return
        self._closed = True
        self.gate.close()
        self._disarm()
        deadline = time.monotonic() + _CLOSE_FLUSH_S
        poller = select.poll()
        with contextlib.suppress(OSError, ValueError):
            poller.register(self._wfd, select.POLLOUT)
        while not self._broken:
            if not self._queue:
                if not self._announce():
                    break
                continue
            state = self._write_once()
            left = deadline - time.monotonic()
            if state == "error" or left <= 0:
                break
            if state == "blocked":
                poller.poll(max(1, int(left * 1000)))
        self._drop_queue()
        if self._own_wfd:
            os.close(self._wfd)
        elif self._orig_flags is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._orig_flags)
        self._wake()

    # -- internals --------------------------------------------------------------------------

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._unreported += n

    def _overflow(self, n: int) -> None:
        """Drop ``n`` lines for want of room, and every line after them until stdout moves."""
        # Sticky, so that one gap is one gap: a short line must not slip into the space a
        # longer dropped one left, which would cut the gap in two, each with its notice.
        self._full = True
        self._drop(n)

    def _fit(self, data: bytes | bytearray) -> bytes | bytearray:
        """The whole lines of ``data`` that fit in the queue; the rest is dropped and counted."""
        avail = self.max_queue - self._queued
        if len(data) <= avail:
            return data
        cut = data.rfind(b"\n", 0, max(avail, 0)) + 1
        self._overflow(count_lines(data[cut:]))
        return data[:cut]

    def _enqueue(self, data: bytes | bytearray) -> None:
        """Queue whole lines; what does not fit in the bound is dropped (whole lines)."""
        if self._full:
            self._overflow(count_lines(data))
            return
        if self._unreported:
            # Lines fit again after some were dropped: say so at the gap, not later.
            self._announce()
        data = self._fit(data)
        if not data:
            return
        self._queue.append(data)
        self._queued += len(data)
        self.gate.grew(self._queued)
        if not self._armed:
            self._flush()

    def _flush(self) -> None:
        """Write until the queue is empty or fd 1 would block; then wait for writability."""
        while True:
            while self._queue:
                state = self._write_once()
                if state == "blocked":
                    self._arm()
                    return
                if state == "error":
                    # Announce nothing now: the announcement would fail the same way.
                    self._disarm()
                    self._wake()
                    return
            if not self._announce():
                break
        self._disarm()
        self._wake()

    def _announce(self) -> bool:
        """Queue the "dropped N lines" line if drops are unreported; True if one was queued."""
        if not self._unreported or self._broken:
            return False
        n, self._unreported = self._unreported, 0
        text = f"dropped {n} lines (stdout was blocked)"
        if self.fmt == "json":
            record = {"ts": round(time.time(), 3), "unit": SELF, "level": "warning"}
            line = json.dumps({**record, "event": text, "dropped": n})
        else:
            line = self.event_prefix() + text
        data = line.encode() + b"\n"
        self._queue.append(data)
        self._queued += len(data)
        self.gate.grew(self._queued)
        return True

    def _write_once(self) -> str:
        """One writev of the queue's head: "progress", "blocked" or "error"."""
        bufs: list[bytes | bytearray | memoryview] = []
        for i, buf in enumerate(self._queue):
            if i == _IOV_MAX:
                break
            bufs.append(memoryview(buf)[self._head :] if i == 0 and self._head else buf)
        want = sum(len(b) for b in bufs)
        try:
            n = os.writev(self._wfd, bufs)
        except (BlockingIOError, InterruptedError):
            return "blocked"
        except OSError as exc:
            # EPIPE: nobody will ever read stdout again; anything else may be transient.
            if exc.errno == errno.EPIPE:
                self._broken = True
                self.gate.close()
            self._drop_queue()
            return "error"
        if n:
            self._advance(n)
            self._full = False
            self.gate.shrank(self._queued)
        # A short write to a pipe or tty means it is full: wait for writability.
        return "blocked" if n < want and self._pollable else "progress"

    def _advance(self, n: int) -> None:
        self._queued -= n
        queue = self._queue
        while n:
            rest = len(queue[0]) - self._head
            if n < rest:
                self._head += n
                return
            n -= rest
            queue.popleft()
            self._head = 0

    def _drop_queue(self) -> None:
        lost = sum(buf.count(b"\n") for buf in self._queue)
        if self._queue and self._head:
            lost -= self._queue[0].count(b"\n", 0, self._head)
        self._drop(lost)
        self._queue.clear()
        self._head = self._queued = 0
        self._full = False
        self.gate.shrank(0)

    def _arm(self) -> None:
        if self._armed or not self._pollable:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (yet): the next write or close() flushes
        try:
            loop.add_writer(self._wfd, self._flush)
        except (OSError, ValueError):
            self._pollable = False  # not pollable: retried on the next write instead
            self.gate.close()  # ... so held readers would bring no next write: never hold
            return
        self._loop, self._armed = loop, True

    def _disarm(self) -> None:
        if self._armed and self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_writer(self._wfd)
            self._armed = False

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()


_JSON_SAFE = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\') + b"\n"
"""Bytes a JSON string holds as-is: printable ASCII but quote and backslash (and newline,
which separates lines here)."""


def _json_lines(unit: str, stream: str, block: bytes, ts: float) -> bytes:
    """Render a block as one JSON object per line, with per-block (C-speed) work only."""
    head = f'{{"ts":{ts:.3f},"unit":{json.dumps(unit)},"stream":"{stream}","line":'
    if not block.translate(None, _JSON_SAFE):
        # Nothing to escape (the usual case): splice the JSON around the raw bytes.
        h = head.encode() + b'"'
        return h + block[:-1].replace(b"\n", b'"}\n' + h) + b'"}\n'
    # Escape every line in one C call over the list; in its output a quote is always
    # escaped inside a string, so '","' can only be the separator between two lines.
    lines = block[:-1].decode("utf-8", "replace").split("\n")
    body = json.dumps(lines, ensure_ascii=False, separators=(",", ":"))[1:-1]
    return (head + body.replace('","', f'"}}\n{head}"') + "}\n").encode()
