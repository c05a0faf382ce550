"""Line framing on bytes, one chunk at a time: ``\\r`` redraws, CRLF, long lines, partial lines.

The common case (no ``\\r``, no line near 64 KiB) costs a few C-speed scans per chunk and no
per-line Python work; the slow paths run only for the chunks that need them.
"""

from __future__ import annotations

MAX_LINE = 64 * 1024
"""Longer lines are cut into pieces of this many bytes, each delivered as a line."""

_WINDOW = MAX_LINE // 2


def _last_redraw(line: bytes) -> bytes:
    """What a terminal would show of one line: the text after its last ``\\r``."""
    body = line.rstrip(b"\r")
    cut = body.rfind(b"\r")
    return body[cut + 1 :] if cut >= 0 else body


def _may_have_long_line(block: bytes) -> bool:
    """False when no line in ``block`` can exceed MAX_LINE (checked with a few ``find`` calls).

    Every interval of 2*_WINDOW-1 bytes covers a whole aligned window, so if each aligned
    window holds a newline, no line reaches MAX_LINE bytes.
    """
    n = len(block)
    if n <= MAX_LINE:
        return False
    return any(block.find(b"\n", p, p + _WINDOW) < 0 for p in range(0, n, _WINDOW))


def _split_long(block: bytes) -> bytes:
    """Cut every line longer than MAX_LINE into MAX_LINE pieces (slow path, rare)."""
    out: list[bytes] = []
    for line in block[:-1].split(b"\n"):
        if len(line) > MAX_LINE:
            out.extend(line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE))
        else:
            out.append(line)
    out.append(b"")
    return b"\n".join(out)


def normalize(block: bytes) -> bytes:
    """Apply ``\\r`` redraws and the long-line split to complete lines (``block`` ends in \\n)."""
    if b"\r" in block:
        # CRLF is by far the most common \r: remove it at C speed before looking further.
        block = block.replace(b"\r\n", b"\n")
        if b"\r" in block:
            block = b"\n".join(
                [_last_redraw(line) if b"\r" in line else line for line in block.split(b"\n")]
            )
    if _may_have_long_line(block):
        block = _split_long(block)
    return block


class LineFramer:
    """Turns a byte stream into blocks of complete lines; keeps the trailing partial line."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> bytes:
        """The partial line held back until its newline (or EOF) arrives."""
        return self._pending

    def feed(self, chunk: bytes) -> bytes:
        """Consume ``chunk``; return the complete lines it finished, each ending in ``\\n``."""
        last = chunk.rfind(b"\n")
        if last < 0:
            data = self._pending + chunk if self._pending else chunk
            self._pending = b""
            return self._hold(data)
        if last + 1 == len(chunk):
            block, rest = (self._pending + chunk if self._pending else chunk), b""
        else:
            # One copy, not two (slice, then concatenation): this runs for every read that
            # ends mid-line, i.e. nearly every read of a block-buffered writer.
            block = b"".join((self._pending, memoryview(chunk)[: last + 1]))
            rest = chunk[last + 1 :]
        self._pending = b""
        out = normalize(block)
        if rest:
            out += self._hold(rest)
        return out

    def flush(self) -> bytes:
        """At EOF: the partial line (if any) as a complete line; the framer is then empty."""
        if not self._pending:
            return b""
        data, self._pending = self._pending + b"\n", b""
        return normalize(data)

    def _hold(self, data: bytes) -> bytes:
        """Keep ``data`` (no newline in it) as the pending line, bounded; return cut pieces."""
        if b"\r" in data:
            # A progress bar that never prints \n must not grow without bound: only the last
            # redraw matters.  Trailing \r are kept: they may be the first half of a CRLF.
            body = data.rstrip(b"\r")
            cut = body.rfind(b"\r")
            if cut >= 0:
                data = data[cut + 1 :]
        if len(data) <= MAX_LINE:
            self._pending = data
            return b""
        pieces = len(data) // MAX_LINE
        if len(data) == pieces * MAX_LINE:
            pieces -= 1  # keep the last full piece pending: its newline may come next
        head = pieces * MAX_LINE
        self._pending = data[head:]
        return b"".join(data[i : i + MAX_LINE] + b"\n" for i in range(0, head, MAX_LINE))
