"""Stopping a process group: the stop signal, the timeout, SIGKILL, and an empty group."""

from __future__ import annotations

import signal

from vastinit.config.values import format_duration
from vastinit.model import StopMode, StopPolicy
from vastinit.proc.group import kill_group, signal_group, signal_pid, wait_group_empty
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import Child
from vastinit.proc.status import signal_name


async def stop_child(child: Child, policy: StopPolicy, reaper: Reaper) -> str:
    """Stop ``child`` and its whole group by ``policy``; returns how it ended, for the log.

    The stop is over only when the group is empty, not when the main process exits.
    """
    sig = policy.signal
    if policy.mode is StopMode.MAIN and not child.exited:
        # main mode: the program tears down its own tree on this signal (SGLang does).
        signal_pid(child.pid, sig)
    else:
        signal_group(child.pgid, sig)
        # A stopped (SIGSTOPped) member can't act on the signal until continued.
        if sig not in (signal.SIGKILL, signal.SIGCONT):
            signal_group(child.pgid, signal.SIGCONT)
    if await wait_group_empty(child.pgid, reaper, policy.timeout):
        return f"{signal_name(sig)}"
    await kill_group(child.pgid, reaper)
    return f"SIGKILL after {signal_name(sig)} timed out ({format_duration(policy.timeout)})"
