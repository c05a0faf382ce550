"""A unit's log file: appends framed chunks, rotates by size, and never raises on I/O errors."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

import structlog

_log = structlog.get_logger("vastinit.logs")

WARN_INTERVAL = 30.0
"""At most one warning per sink in this many seconds, however many writes fail."""

REOPEN_INTERVAL = 1.0
"""After a failed open, try again at most this often (not once per chunk)."""


class FileSink:
    """Appends blocks of complete lines to ``path``, rotating past ``max_size`` (keep ``keep``).

    Rotation renames NAME.log -> NAME.log.1 -> ... -> NAME.log.K (NAME.log.1 is the newest).
    A failed open, write or rename is counted in ``errors``, logged at most once per
    WARN_INTERVAL, and retried on later chunks; lines that could not be written are counted
    in ``lost_lines``.  Only regular files are rotated (a device such as /dev/null is not).
    """

    def __init__(
        self,
        path: Path,
        max_size: int,
        keep: int,
        *,
        unit: str = "",
        reopen_interval: float = REOPEN_INTERVAL,
    ) -> None:
        self.path = path
        self.max_size = max(1, max_size)
        self.keep = max(0, keep)
        self.unit = unit
        self.errors = 0
        self.lost_lines = 0
        self._fd = -1
        self._size = 0
        self._regular = False
        self._next_open = 0.0
        self._reopen_interval = reopen_interval
        self._last_warning = -WARN_INTERVAL

    def write(self, block: bytes) -> None:
        """Append ``block`` (whole lines), rotating at line boundaries when the file is full."""
        if self._fd < 0 and not self._open():
            self.lost_lines += block.count(b"\n")
            return
        while block:
            room = self.max_size - self._size
            if not self._regular or len(block) <= room:
                if self._write_all(block) and self._regular and self._size >= self.max_size:
                    self._rotate()
                return
            # Fill the file up to max_size with whole lines, then rotate and go on.
            cut = block.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = block.find(b"\n") + 1  # one line longer than max_size: alone in a file
            if cut > 0:
                if not self._write_all(block[:cut]):
                    self.lost_lines += block.count(b"\n", cut)
                    return
                block = block[cut:]
            if not self._rotate():
                # Could not rotate: the file grows past max_size rather than lose lines.
                if self._fd < 0:
                    self.lost_lines += block.count(b"\n")
                else:
                    self._write_all(block)
                return

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        self._drop_fd()

    def _open(self) -> bool:
        now = time.monotonic()
        if now < self._next_open:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._next_open = now + self._reopen_interval
            self._failed("open", exc)
            return False
        st = os.fstat(fd)
        self._fd, self._size, self._regular = fd, st.st_size, stat.S_ISREG(st.st_mode)
        return True

    def _write_all(self, data: bytes) -> bool:
        """Write all of ``data``; on error count the unwritten lines as lost and return False."""
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(self._fd, view[done:])
            except InterruptedError:
                continue
            except OSError as exc:
                self.lost_lines += data.count(b"\n", done)
                self._size += done
                self._failed("write", exc)
                if exc.errno in (errno.EBADF, errno.EIO):
                    # The descriptor itself is bad: reopen on a later chunk.
                    self._drop_fd()
                return False
        self._size += done
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

    def _failed(self, what: str, exc: OSError) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            _log.warning(
                "log file error",
                unit=self.unit,
                op=what,
                path=str(self.path),
                error=exc.strerror or str(exc),
                errors=self.errors,
                lost_lines=self.lost_lines,
            )
