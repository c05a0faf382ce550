"""The one reaper: the only place in vastinit that calls ``waitpid``.

On SIGCHLD it loops ``waitpid(-1, WNOHANG)``, hands each managed pid's status to whoever
watches it and drops orphans (re-parented to us as PID 1 or child subreaper). Nothing
else may wait for children: asyncio's child watchers would race this loop and steal
statuses, so managed children are spawned with ``subprocess.Popen`` (see ``spawn``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal

import structlog

log = structlog.get_logger("vastinit.reaper")

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphans of our descendants re-parent to us (as they would to PID 1)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Reaper:
    """Collects every child's exit status and wakes whoever waits for a pid or a group."""

    def __init__(self) -> None:
        self._watchers: dict[int, asyncio.Future[int]] = {}
        self._reaped = asyncio.Event()  # replaced after each batch; see wait_any_reaped
        self.orphans_reaped = 0
        self.generation = 0  # counts batches of reaped children (a process scan's freshness)
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Start reaping on SIGCHLD (must run inside the event loop)."""
        self._loop = asyncio.get_running_loop()
        # add_signal_handler only records the signal (the C handler writes to the loop's
        # wakeup fd); the callback below runs later on the loop, so it may do real work.
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # children that exited before we installed the handler

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future for ``pid``'s raw wait status; register right after spawning, before
        any ``await``, so the reaper cannot see the exit first."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watchers[pid] = future
        return future

    def reap(self) -> None:
        """Reap every child that has exited; never blocks."""
        reaped_any = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no children at all
            except InterruptedError:
                continue
            if pid == 0:
                break  # children remain, none exited
            reaped_any = True
            future = self._watchers.pop(pid, None)
            if future is None:
                self.orphans_reaped += 1  # an orphan re-parented to us: just drop it
            elif not future.done():
                future.set_result(status)
        if reaped_any:
            self.generation += 1
            event, self._reaped = self._reaped, asyncio.Event()
            event.set()

    async def wait_any_reaped(self) -> None:
        """Return after the next batch of reaped children (used to notice empty groups)."""
        await self._reaped.wait()
