"""Reading a unit file or an env file without ever blocking or reading without bound.

A path in a unit directory or in ``env_files`` is user input: it may be a FIFO nobody
writes, a terminal, a symlink to ``/proc/kmsg`` or a 100 MB file. ``read_bounded``
refuses everything that is not an ordinary regular file before opening it, opens with
``O_NONBLOCK`` (so a file swapped in between the check and the open still cannot block),
checks again on the open descriptor, and never reads more than ``limit + 1`` bytes.
Synchronous and free of shared state: safe to call from worker threads.
"""

from __future__ import annotations

import os
import stat

MIB = 1024 * 1024

# Kernel interface files (/proc/kmsg, /sys/kernel/tracing/trace_pipe...) look like regular
# files but block, or consume what they return, when read: never config.
_KERNEL_DIRS = ("/proc", "/sys")


class FileRefused(Exception):
    """The path is not something vastinit reads as a config file; ``str`` says why."""


def format_size(size: int) -> str:
    """``1 MiB``, ``128 KiB`` or ``N bytes``: how the limits are written in messages."""
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``).

    Raises FileRefused when it is not a regular file, lives in /proc or /sys, or is larger
    than ``limit`` (``what`` names it in the message: "unit file", "env file"); OSError when
    it cannot be read (missing, permission, ...). Never blocks on a FIFO or a device.
    """
    _refuse_unless_regular(os.stat(path), what)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        _refuse_unless_regular(info, what)  # replaced between the stat and the open
        if info.st_size > limit:
            raise FileRefused(_too_large(what, info.st_size, limit))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(_too_large(what, size, limit, grew=True))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refuse_unless_regular(info: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"not a regular file ({_kind(info.st_mode)}); a {what} must be one")
    for directory in _KERNEL_DIRS:
        try:
            kernel = os.stat(directory)
        except OSError:
            continue
        if info.st_dev == kernel.st_dev:
            raise FileRefused(
                f"not a regular file (a kernel interface file under {directory}); "
                f"a {what} must be an ordinary file"
            )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _too_large(what: str, size: int, limit: int, *, grew: bool = False) -> str:
    amount = f"more than {limit} bytes" if grew else f"{size} bytes"
    return f"{what} is {amount}; the limit is {format_size(limit)}"
