"""Process groups: signal one, tell whether it is empty, wait until it is."""

from __future__ import annotations

import os
import signal

import anyio

from vastinit.proc.reaper import Reaper

# Members of a group are normally our descendants, so each exit reaches us as SIGCHLD and
# wakes the waiter at once. This poll only covers members we can't see die (a process that
# is not our descendant, or a subreaper that could not be set); it is not the normal path.
_FALLBACK_POLL = 0.05


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else (a member switched user)
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_pid(pid: int, sig: int) -> bool:
    """Send ``sig`` to one process; False if it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


async def wait_group_empty(pgid: int, reaper: Reaper, timeout: float | None) -> bool:
    """Wait until group ``pgid`` is empty; False if ``timeout`` seconds passed first."""
    with anyio.move_on_after(timeout):
        while group_alive(pgid):
            with anyio.move_on_after(_FALLBACK_POLL):
                await reaper.wait_any_reaped()
        return True
    return not group_alive(pgid)


async def kill_group(pgid: int, reaper: Reaper) -> None:
    """SIGKILL the whole group and wait until it is empty."""
    signal_group(pgid, signal.SIGKILL)
    while not await wait_group_empty(pgid, reaper, 5.0):
        # Something survived SIGKILL for 5 s (a process stuck in the kernel, D state):
        # keep trying rather than pretend the group is gone.
        signal_group(pgid, signal.SIGKILL)
