"""In-memory history per unit, bounded in bytes, and bounded queues for followers (``logs -f``)."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable

import anyio

from vastinit.logs.line import Chunk, LogLine


def _fit(chunk: Chunk, limit: int) -> Chunk:
    """The chunk cut to its last whole lines that fit in ``limit`` bytes (maybe none)."""
    block = chunk.block
    if len(block) <= limit:
        return chunk
    start = block.find(b"\n", len(block) - limit - 1) + 1
    rest = block[start:]
    return Chunk(chunk.seq, chunk.ts, chunk.unit, chunk.stream, rest)


class LogRing:
    """The last ``max_bytes`` bytes of one unit's lines, stored as chunks, oldest evicted first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[Chunk] = deque()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of line text held now (never more than ``max_bytes``)."""
        return self._bytes

    def append(self, chunk: Chunk) -> None:
        """Add a chunk, evicting the oldest chunks until the ring fits its bound."""
        if self.max_bytes <= 0:
            return
        chunk = _fit(chunk, self.max_bytes)
        if not chunk.block:
            return
        self._chunks.append(chunk)
        self._bytes += len(chunk.block)
        while self._bytes > self.max_bytes:
            self._bytes -= len(self._chunks.popleft().block)

    def last(self, n: int) -> list[Chunk]:
        """The fewest newest chunks holding at least ``n`` lines (all if fewer), oldest first."""
        out: list[Chunk] = []
        count = 0
        for chunk in reversed(self._chunks):
            if count >= n:
                break
            out.append(chunk)
            count += chunk.nlines
        out.reverse()
        return out


def merge_tail(chunks: list[Chunk], n: int) -> list[LogLine]:
    """The last ``n`` lines of ``chunks`` (from any units), in the order they were read."""
    if n <= 0:
        return []
    chunks = sorted(chunks, key=lambda c: c.seq)
    picked: list[Chunk] = []
    count = 0
    for chunk in reversed(chunks):
        if count >= n:
            break
        picked.append(chunk)
        count += chunk.nlines
    lines: list[LogLine] = []
    for chunk in reversed(picked):
        lines.extend(chunk.lines())
    return lines[-n:]


BATCH_BYTES = 64 << 10
"""``next_batch`` hands out at most about this many bytes of line text at once."""


class FollowBudget:
    """Bytes queued for all followers together (shared by a LogMux's subscriptions)."""

    __slots__ = ("limit", "queued")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0


class LogSubscription:
    """An async iterator of the ``LogLine``s of some units (all when ``units`` is None).

    It is keyed by unit name, so it keeps following a unit across restarts.  It is bounded:
    past ``max_bytes`` of unread lines (or when the LogMux sheds from the follower with the
    most queued, to keep all followers within their shared ``budget``) the oldest are
    dropped and the follower gets one marker line (unit ``vastinit``) saying how many.
    Lines are cut out of the queued chunks only as they are read, at most ``BATCH_BYTES``
    per batch.  ``close()`` ends the iteration and frees the queue.
    """

    def __init__(
        self,
        units: frozenset[str] | None,
        *,
        max_bytes: int = 1 << 20,
        backlog: list[LogLine] | None = None,
        on_close: Callable[[LogSubscription], None] | None = None,
        budget: FollowBudget | None = None,
    ) -> None:
        self.units = units
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lines: deque[LogLine] = deque(backlog or ())
        self._chunks: deque[Chunk] = deque()
        self._bytes = 0
        self._cur: Chunk | None = None  # the chunk being read, from offset _pos
        self._pos = 0
        self._unreported = 0
        self._closed = False
        self._budget = budget if budget is not None else FollowBudget(1 << 62)
        # A wake-up channel of one slot: push fills it, a reader waiting on it wakes.
        self._wake_tx, self._wake_rx = anyio.create_memory_object_stream[None](1)
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (lines already queued can still be read)."""
        return self._closed

    @property
    def queued_bytes(self) -> int:
        """Bytes of line text queued and not yet read."""
        return self._bytes

    def wants(self, unit: str) -> bool:
        """Whether this follower follows ``unit``."""
        return self.units is None or unit in self.units

    def push(self, chunk: Chunk) -> None:
        """Queue a chunk for the follower; never blocks, drops the oldest when over the bound."""
        if self._closed:
            return
        self._chunks.append(chunk)
        self._bytes += len(chunk.block)
        self._budget.queued += len(chunk.block)
        while self._bytes > self.max_bytes and len(self._chunks) > 1:
            self.drop_oldest()
        self._notify()

    def drop_oldest(self) -> bool:
        """Drop the oldest queued chunk (counted, and reported at the gap); False if none."""
        if not self._chunks:
            return False
        old = self._chunks.popleft()
        self._bytes -= len(old.block)
        self._budget.queued -= len(old.block)
        self.dropped += old.nlines
        self._unreported += old.nlines
        return True

    def close(self) -> None:
        """Stop following: iteration ends once the lines already queued are read."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._on_close is not None:
            self._on_close(self)

    def discard(self) -> None:
        """Close and free everything queued (a follower that went away or was cut off)."""
        self.close()
        self._budget.queued -= self._bytes
        self._bytes = 0
        self._chunks.clear()
        self._lines.clear()
        self._cur = None
        self._wake_tx.close()
        self._wake_rx.close()

    def _notify(self) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._wake_tx.send_nowait(None)

    def _take(self) -> LogLine | None:
        if self._lines:
            return self._lines.popleft()
        if self._unreported:
            n, self._unreported = self._unreported, 0
            text = f"dropped {n} lines (follower too slow)".encode()
            return LogLine(time.time(), "vastinit", "stdout", text, skipped=n)
        cur = self._cur
        if cur is None:
            if not self._chunks:
                return None
            cur = self._cur = self._chunks.popleft()
            self._pos = 0
            self._bytes -= len(cur.block)
            self._budget.queued -= len(cur.block)
        block = cur.block
        end = block.find(b"\n", self._pos)
        line = LogLine(cur.ts, cur.unit, cur.stream, block[self._pos : end])
        self._pos = end + 1
        if self._pos >= len(block):
            self._cur = None
        return line

    async def _wait(self) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            await self._wake_rx.receive()

    async def next_batch(self) -> list[LogLine]:
        """The lines available now, up to about BATCH_BYTES (waiting for at least one);
        ``[]`` once closed and empty."""
        while True:
            batch: list[LogLine] = []
            size = 0
            while size < BATCH_BYTES and (line := self._take()) is not None:
                batch.append(line)
                size += len(line.text) + 64
            if batch or self._closed:
                return batch
            await self._wait()

    def __aiter__(self) -> LogSubscription:
        return self

    async def __anext__(self) -> LogLine:
        while True:
            line = self._take()
            if line is not None:
                return line
            if self._closed:
                raise StopAsyncIteration
            await self._wait()
