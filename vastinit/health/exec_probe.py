"""Exec probe: passes when a command exits 0 within the timeout.

The command is spawned like a unit (own session, /dev/null stdin) and waited for through
the one reaper (ARCHITECTURE.md rule 1); its output is kept only for the error message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

import anyio

from vastinit.config.values import format_duration
from vastinit.errors import SpawnError
from vastinit.health.result import Outcome, failed, passed
from vastinit.proc.group import group_alive, kill_group
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import Child, spawn

_KEEP = 4096  # bytes of the probe's output kept for the error message


class _OutputTail:
    """Reads a pipe on the loop, keeping only its last few KiB."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._buf = b""
        os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)

    def _read(self) -> bool:
        """Read what is there now; False at end of file or when nothing is waiting."""
        if self._fd is None:
            return False
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            return False
        self._buf = (self._buf + data)[-_KEEP:]
        return True

    def close(self) -> str:
        """Take what is still in the pipe, stop reading; the last non-empty output line."""
        while self._read():
            pass
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        lines = [ln.strip() for ln in self._buf.decode("utf-8", "replace").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), "")
        return last[:200]


async def probe_exec(
    argv: Sequence[str],
    *,
    timeout: float,
    reaper: Reaper,
    env: Mapping[str, str],
    cwd: str | None = None,
    user: str | None = None,
    group: str | None = None,
) -> Outcome:
    """Run ``argv``; passes on exit 0. Past ``timeout`` its whole group is killed (fails).

    Processes the command leaves behind in its group are killed too: a probe must not
    accumulate processes every interval.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        child = spawn(
            argv, reaper=reaper, env=env, cwd=cwd, user=user, group=group, stdout=w, stderr=w
        )
    except SpawnError as exc:
        os.close(r)
        return failed(str(exc))
    finally:
        os.close(w)
    tail = _OutputTail(r)
    timed_out = False
    try:
        with anyio.move_on_after(timeout):
            await child.wait()
        timed_out = not child.exited
    finally:
        # Also on cancellation (the unit stopped mid-probe): never leave the probe running.
        with anyio.CancelScope(shield=True):
            await _reap(child, reaper)
        output = tail.close()
    if timed_out:
        return failed(f"timed out after {format_duration(timeout)}, killed")
    status = await child.wait()
    if status.success:
        return passed("exit 0")
    return failed(f"{status}: {output}" if output else str(status))


async def _reap(child: Child, reaper: Reaper) -> None:
    if not child.exited or group_alive(child.pgid):
        await kill_group(child.pgid, reaper)
    await child.wait()
