"""The unit of exchange between the log sinks: one line, and one framed chunk of lines."""

from __future__ import annotations

from dataclasses import dataclass


def count_lines(block: bytes | bytearray) -> int:
    """The number of ``\\n`` in ``block``, at memchr speed.

    ``bytes.count`` of one byte scans byte by byte in CPython 3.11 (~0.5 ms per MiB, half of
    vastinit's CPU in the log flood benchmark); ``replace`` finds each newline with memchr,
    ~3.5x faster even with the copy it makes.
    """
    return len(block) - len(block.replace(b"\n", b""))


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a unit wrote (no newline), stamped with the time its chunk was read."""

    ts: float
    unit: str
    stream: str  # "stdout" | "stderr"
    text: bytes
    # > 0 on the marker a follower gets where it lost lines for being too slow: how many.
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """Complete lines read from one pipe in one go: ``block`` is lines each ending in ``\\n``.

    Sinks store and pass chunks whole so that per-line work happens only when a reader asks
    for lines (``ctl logs``), never on the hot path.  ``seq`` orders chunks across units.
    """

    seq: int
    ts: float
    unit: str
    stream: str
    block: bytes

    @property
    def nlines(self) -> int:
        """How many lines ``block`` holds; counted when asked, as the hot path never asks."""
        return count_lines(self.block)

    def lines(self) -> list[LogLine]:
        """The chunk's lines as ``LogLine`` objects, in order."""
        return [
            LogLine(self.ts, self.unit, self.stream, text) for text in self.block[:-1].split(b"\n")
        ]
