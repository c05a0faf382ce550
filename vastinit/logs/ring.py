"""In-memory history per unit, bounded in bytes, and bounded queues for followers (``logs -f``)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

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


class LogSubscription:
    """An async iterator of the ``LogLine``s of some units (all when ``units`` is None).

    It is keyed by unit name, so it keeps following a unit across restarts.  It is bounded:
    past ``max_bytes`` of unread lines the oldest are dropped and the follower gets one
    marker line (unit ``vastinit``) saying how many.  ``close()`` ends the iteration.
    """

    def __init__(
        self,
        units: frozenset[str] | None,
        *,
        max_bytes: int = 1 << 20,
        backlog: list[LogLine] | None = None,
        on_close: Callable[[LogSubscription], None] | None = None,
    ) -> None:
        self.units = units
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lines: deque[LogLine] = deque(backlog or ())
        self._chunks: deque[Chunk] = deque()
        self._bytes = 0
        self._unreported = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (lines already queued can still be read)."""
        return self._closed

    def wants(self, unit: str) -> bool:
        """Whether this follower follows ``unit``."""
        return self.units is None or unit in self.units

    def push(self, chunk: Chunk) -> None:
        """Queue a chunk for the follower; never blocks, drops the oldest when over the bound."""
        if self._closed:
            return
        self._chunks.append(chunk)
        self._bytes += len(chunk.block)
        while self._bytes > self.max_bytes and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self._bytes -= len(old.block)
            self.dropped += old.nlines
            self._unreported += old.nlines
        self._ready.set()

    def close(self) -> None:
        """Stop following: iteration ends once the lines already queued are read."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        if self._on_close is not None:
            self._on_close(self)

    def _take(self) -> LogLine | None:
        if self._lines:
            return self._lines.popleft()
        if self._unreported:
            n, self._unreported = self._unreported, 0
            text = f"dropped {n} lines (follower too slow)".encode()
            return LogLine(time.time(), "vastinit", "stdout", text)
        if self._chunks:
            chunk = self._chunks.popleft()
            self._bytes -= len(chunk.block)
            self._lines.extend(chunk.lines())
            return self._lines.popleft()
        return None

    async def next_batch(self) -> list[LogLine]:
        """Every line available now (waiting for at least one); ``[]`` once closed and empty."""
        while True:
            batch: list[LogLine] = []
            while (line := self._take()) is not None:
                batch.append(line)
            if batch or self._closed:
                return batch
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> LogSubscription:
        return self

    async def __anext__(self) -> LogLine:
        while True:
            line = self._take()
            if line is not None:
                return line
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
