"""PID-1 duties: signal intake, shutdown, the exit code.

Signal handlers do no work: each one puts its signal on a queue and one task decides.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import structlog

from vastinit.proc.status import signal_name
from vastinit.supervisor.manager import Manager

log = structlog.get_logger("vastinit")

# SIGTERM: the container runtime's stop (docker stop, kubelet) -> orderly shutdown.
# SIGINT: Ctrl-C in a terminal run -> the same orderly shutdown.
# SIGQUIT: some runtimes and users send it to ask for an exit -> the same.
# SIGHUP: the classic "re-read your config" -> reload unit files.
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNALS = (signal.SIGHUP,)


class SignalQueue:
    """Installs the handlers at once (before any unit starts, so no SIGTERM is lost to the
    default action) and queues each signal for ``serve_signals``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        for sig in (*SHUTDOWN_SIGNALS, *RELOAD_SIGNALS):
            self._loop.add_signal_handler(sig, self.queue.put_nowait, int(sig))
        # Job-control signals from a terminal must not stop PID 1 itself.
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_IGN)

    def close(self) -> None:
        for sig in (*SHUTDOWN_SIGNALS, *RELOAD_SIGNALS):
            self._loop.remove_signal_handler(sig)


async def serve_signals(
    manager: Manager,
    reload: Callable[[], Coroutine[Any, Any, object]] | None,
    signals: SignalQueue,
) -> int:
    """Handle queued signals until a shutdown completes; returns vastinit's exit status."""
    cause = await _next_shutdown_cause(manager, signals.queue, reload)
    await manager.shutdown(cause)
    return manager.exit_code


async def _next_shutdown_cause(
    manager: Manager,
    queue: asyncio.Queue[int],
    reload: Callable[[], Coroutine[Any, Any, object]] | None,
) -> str:
    async def essential() -> None:
        await manager.shutdown_requested.wait()
        await queue.put(-1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(essential)
        while True:
            sig = await queue.get()
            if sig == -1:
                tg.cancel_scope.cancel()
                return "an essential unit failed"
            if sig in RELOAD_SIGNALS:
                if reload is None:
                    log.warning("SIGHUP ignored: reload is not available")
                else:
                    tg.start_soon(reload)
                continue
            tg.cancel_scope.cancel()
            return f"{signal_name(sig)} received"
    raise AssertionError("unreachable")


def is_pid1() -> bool:
    return os.getpid() == 1
