"""Stopping a start of a unit: the stop signal, the timeout, SIGKILL, and nothing left.

"Nothing left" is the process group and, with ``[stop] escaped = "stop"`` (the default),
every member of the start wherever it went (proc/members.py): a ``setsid`` child, a
double-forked daemon, a ``nohup`` job. With ``escaped = "keep"``, members outside the group
are left running (released: listed in status, stopped at vastinit's shutdown).
"""

from __future__ import annotations

import os
import signal

import anyio

from vastinit.config.values import format_duration
from vastinit.model import Escaped, StopMode, StopPolicy
from vastinit.proc.group import group_alive, kill_group, signal_group, signal_pid
from vastinit.proc.members import Membership
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import Child
from vastinit.proc.status import signal_name

# Members outside the group die without waking us when they are not our children (yet): how
# often their membership is re-read while a stop waits.
_RESCAN_S = 0.1
# A group member that is not our child (yet) dies without waking us: the group's re-check.
_FALLBACK_POLL = 0.05


def _tracked(child: Child, policy: StopPolicy) -> Membership | None:
    return child.members if policy.escaped is Escaped.STOP else None


async def _members_outside(members: Membership, pgid: int | None, main: int | None) -> set[int]:
    """Live members outside the group ``pgid`` (the group is signalled as a whole);
    ``main``: the start's main process while it lives."""
    pids = await members.live(main)
    return {pid for pid in pids if pgid is None or _pgid(pid) != pgid}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


async def leftovers(child: Child, policy: StopPolicy) -> bool:
    """Whether anything of this start that a stop must end is alive: the main process, its
    group, or (``escaped = "stop"``) a member that left the group."""
    if not child.exited or group_alive(child.pgid):
        return True
    members = _tracked(child, policy)
    return members is not None and bool(await members.live())


async def _wait_gone(
    pgid: int | None,
    members: Membership | None,
    reaper: Reaper,
    timeout: float | None,
    sig: int,
    child: Child | None = None,
) -> bool:
    """Wait until the group ``pgid`` is empty and no member of ``members`` lives; members
    seen outside the group on the way get ``sig`` (when not 0). False if ``timeout``
    passed first.

    The members are read (a pass over /proc) once at the start, so escapees get the signal
    with the group, then again only once the group is empty, and every ``_RESCAN_S`` while
    members remain: a stop with nothing escaped costs two reads, however long it takes."""
    signalled: set[int] = set()

    async def outside() -> set[int]:
        if members is None:
            return set()
        main = child.pid if child is not None and not child.exited else None
        found = await _members_outside(members, pgid, main)
        for pid in found - signalled:
            if sig:
                _signal_member(pid, sig)
            signalled.add(pid)
        return found

    with anyio.move_on_after(timeout):
        await outside()
        while True:
            if pgid is not None and group_alive(pgid):
                with anyio.move_on_after(_FALLBACK_POLL):
                    await reaper.wait_any_reaped()
                continue
            if not await outside():
                return True
            with anyio.move_on_after(_RESCAN_S):
                await reaper.wait_any_reaped()
    return False


def _signal_member(pid: int, sig: int) -> None:
    signal_pid(pid, sig)
    if sig not in (signal.SIGKILL, signal.SIGCONT):
        signal_pid(pid, signal.SIGCONT)  # a stopped member can't act on it until continued


async def _kill_all(
    pgid: int | None, members: Membership | None, reaper: Reaper, child: Child | None = None
) -> None:
    """SIGKILL the group and every member, and wait until they are gone."""
    while True:
        if pgid is not None:
            signal_group(pgid, signal.SIGKILL)
        if members is not None:
            await anyio.to_thread.run_sync(members.kill_all)
        if await _wait_gone(pgid, members, reaper, 5.0, signal.SIGKILL, child):
            return
        # Something survived SIGKILL for 5 s (a process stuck in the kernel, D state):
        # keep trying rather than pretend it is gone.


async def stop_child(
    child: Child, policy: StopPolicy, reaper: Reaper, *, escaped: bool = True
) -> str:
    """Stop ``child``: its group and (``escaped`` and ``policy.escaped`` = stop) its members
    outside the group; returns how it ended, for the log. Over only when nothing of it is
    left."""
    sig = policy.signal
    members = _tracked(child, policy) if escaped else None
    if policy.mode is StopMode.MAIN and not child.exited:
        # main mode: the program tears down its own tree on this signal (SGLang does); what
        # is still there at the timeout is killed.
        signal_pid(child.pid, sig)
        gone = await _wait_gone(child.pgid, members, reaper, policy.timeout, 0, child)
    else:
        signal_group(child.pgid, sig)
        # A stopped (SIGSTOPped) member can't act on the signal until continued.
        if sig not in (signal.SIGKILL, signal.SIGCONT):
            signal_group(child.pgid, signal.SIGCONT)
        gone = await _wait_gone(child.pgid, members, reaper, policy.timeout, sig, child)
    if gone:
        return f"{signal_name(sig)}"
    await _kill_all(child.pgid, members, reaper, child)
    return f"SIGKILL after {signal_name(sig)} timed out ({format_duration(policy.timeout)})"


async def stop_members(members: Membership, policy: StopPolicy, reaper: Reaper) -> str:
    """Stop the members a finished start left running (its main process and group are
    gone): the stop signal to each, the timeout, SIGKILL."""
    sig = policy.signal
    if await _wait_gone(None, members, reaper, policy.timeout, sig):
        return f"{signal_name(sig)}"
    await _kill_all(None, members, reaper)
    return f"SIGKILL after {signal_name(sig)} timed out ({format_duration(policy.timeout)})"


async def kill_child(child: Child, policy: StopPolicy, reaper: Reaper) -> None:
    """SIGKILL the group and (by ``policy.escaped``) every member; wait until gone."""
    members = _tracked(child, policy)
    if members is None:
        await kill_group(child.pgid, reaper)
    else:
        await _kill_all(child.pgid, members, reaper, child)
