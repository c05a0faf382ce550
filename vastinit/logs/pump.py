"""Reads one pipe on the event loop in large, coalesced chunks and hands out framed lines.

A line-buffered child writes one line per write(2); waking for each would cost a syscall per
line.  So after a small read the pump stops watching the fd for COALESCE_S and lets the pipe
fill (its buffer is raised to PIPE_SIZE), which bounds the extra latency of a line to a few
milliseconds while cutting wake-ups by orders of magnitude under load.

With a ``gate`` (the console's FlowGate), the pump does not read while the gate holds: it
stops watching the fd and is called back when stdout has caught up (or stalled), so a busy
stdout slows the unit down to its pace, through the pipe, instead of losing lines.  The
unit's log file has a gate of its own (``file_gate``), for a writer thread that falls
behind a flood on a busy host: the same hold, the same release when it stalls for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

import structlog

from vastinit.logs.flow import FlowGate
from vastinit.logs.framing import LineFramer

_log = structlog.get_logger("vastinit.logs")

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
BIG_READ = 64 << 10
"""A read at least this big means the writer is ahead of us: read again at once."""
COALESCE_S = 0.005
"""After a smaller read, wait this long before reading again (a line shows within ~10 ms)."""
CLOSE_READS = 16
"""``close()`` reads at most this many chunks still in the pipe before giving up on them."""

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Pump:
    """Owns a pipe's read end: reads it until EOF, calling ``deliver(stream, block)``.

    ``block`` is complete lines, each ending in ``\\n``.  At EOF the partial last line is
    delivered as a line, the fd is closed and ``wait_eof()`` returns.  While ``gate`` holds,
    the pipe is not read (its writer blocks once the pipe is full).
    """

    def __init__(
        self,
        fd: int,
        stream: str,
        deliver: Callable[[str, bytes], None],
        *,
        on_eof: Callable[[Pump], None] | None = None,
        gate: FlowGate | None = None,
        file_gate: Callable[[], FlowGate | None] | None = None,
    ) -> None:
        self.fd = fd
        self.stream = stream
        self._deliver = deliver
        self._on_eof = on_eof
        self._gate = gate
        self._file_gate = file_gate  # the unit's current log file's gate (a reload may swap it)
        self._held_by: FlowGate | None = None  # the gate we wait on, if any
        self._framer = LineFramer()
        self._loop = asyncio.get_running_loop()
        self._eof = asyncio.Event()
        self._watching = False
        self._timer: asyncio.Handle | None = None  # the pending re-read, if any
        self._done = False
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            # A deeper pipe holds the backlog while we coalesce; refused above the
            # system's pipe-max-size or the user's quota, which is fine.
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        self._watch()

    @property
    def at_eof(self) -> bool:
        """True once the pipe hit EOF (or ``close()`` ran) and the fd is closed."""
        return self._done

    async def wait_eof(self) -> None:
        """Return once the pipe hit EOF (or ``close()`` ran) and its last line was delivered."""
        await self._eof.wait()

    def close(self) -> None:
        """Stop now: deliver what the pipe already holds (bounded), the partial line, close."""
        if self._done:
            return
        for _ in range(CLOSE_READS):
            data = self._read_some()
            if not data:
                break
            self._emit(self._framer.feed(data))
        self._finish()

    def _watch(self) -> None:
        if not self._watching:
            self._loop.add_reader(self.fd, self._read)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self.fd)
            self._watching = False

    def _read_some(self) -> bytes | None:
        """One read: the data, ``b""`` at EOF, None when the pipe is empty for now."""
        try:
            return os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""  # EIO from a pty whose other side closed, EBADF...: the end.

    def _holding_gate(self) -> FlowGate | None:
        if self._gate is not None and self._gate.holding:
            return self._gate
        gate = self._file_gate() if self._file_gate is not None else None
        return gate if gate is not None and gate.holding else None

    def _resume(self) -> None:
        """The gate opened: read on the next loop turn (never inside the console's write)."""
        if not self._done and self._timer is None:
            self._timer = self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._timer = None
        if self._done:
            return
        held = self._holding_gate()
        if held is not None:
            # stdout or the log file is behind: leave the backlog in the pipe until the gate
            # calls us back.
            self._unwatch()
            self._held_by = held
            held.wait(self._resume)
            return
        data = self._read_some()
        if data is None:
            self._watch()  # drained: sleep until the writer writes again
            return
        if not data:
            self._finish()
            return
        self._emit(self._framer.feed(data))
        if len(data) >= BIG_READ:
            if not self._watching:
                self._timer = self._loop.call_soon(self._read)  # more is waiting: next turn
        else:
            self._unwatch()
            self._timer = self._loop.call_later(COALESCE_S, self._read)

    def _emit(self, block: bytes) -> None:
        if not block:
            return
        try:
            self._deliver(self.stream, block)
        except Exception:
            # A sink bug must not stop the pump: the unit would block on a full pipe.
            _log.exception("log delivery failed", fd=self.fd, stream=self.stream)

    def _finish(self) -> None:
        self._done = True
        self._unwatch()
        if self._held_by is not None:
            self._held_by.cancel(self._resume)
            self._held_by = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._emit(self._framer.flush())
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self._eof.set()
        if self._on_eof is not None:
            self._on_eof(self)
