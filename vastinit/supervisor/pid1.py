"""PID-1 duties: signal intake, shutdown, the exit code.

Signal handlers do no work: each one puts its signal on a queue and one task decides.
Every signal whose default action would end vastinit is handled here, whether or not it
is PID 1 (under ``docker run --init`` or tini it is not, and they forward what they get).
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
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# SIGHUP: the classic "re-read your config" -> reload unit files.
RELOAD_SIGNALS = (signal.SIGHUP,)
# SIGUSR1, SIGUSR2: no meaning in vastinit (yet); tini and `docker kill -s` forward them to
# us, and their default action would kill vastinit and orphan every unit -> logged, ignored.
USER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Every other signal whose default action is to terminate, that vastinit does not use:
# ignored with one log line each time one arrives, so a stray `kill -ALRM 1` is harmless.
IGNORED_SIGNALS: tuple[int, ...] = (
    signal.SIGALRM,  # a timer nobody in vastinit sets (we use the event loop's timers)
    signal.SIGVTALRM,  # a virtual-time timer: likewise unused
    signal.SIGPROF,  # a profiling timer: only a profiler sets it
    signal.SIGIO,  # async-I/O readiness (= SIGPOLL): we never ask for it (no O_ASYNC)
    signal.SIGPWR,  # a UPS/power-failure notice meant for a host's init, not a container's
    signal.SIGSTKFLT,  # coprocessor stack fault: unused on any current machine
    signal.SIGXCPU,  # CPU-time limit soft warning: a write-off would be worse than going on
    signal.SIGXFSZ,  # file-size limit: ignored, the write fails with EFBIG and is counted
    signal.SIGSYS,  # a bad system call (seccomp): ignored, the call fails with ENOSYS
    # The realtime signals (default: terminate); none has a meaning for vastinit.
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
# SIGTTIN, SIGTTOU, SIGTSTP: job-control signals from a terminal must not stop PID 1.
JOB_CONTROL_SIGNALS = (signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP)
# Not handled on purpose: SIGKILL/SIGSTOP (can't be), SIGCHLD (the reaper's), SIGPIPE
# (Python ignores it: writes get EPIPE), SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT/SIGTRAP (a
# fault in the interpreter itself: ignoring those would loop on the faulting instruction).

# Every signal SignalQueue handles. ``hold_signals`` blocks them from the moment vastinit
# binds its socket until SignalQueue has installed its handlers: one that lands in between
# is delivered then, instead of killing vastinit by the default action.
HANDLED_SIGNALS: tuple[int, ...] = (
    *SHUTDOWN_SIGNALS,
    *RELOAD_SIGNALS,
    *USER_SIGNALS,
    *IGNORED_SIGNALS,
)

_SHUTDOWN_MARK = -1  # queued when an essential unit failed


def hold_signals() -> None:
    """Block HANDLED_SIGNALS in this (the main) thread until SignalQueue lets them through.

    Call it before the first thing that must not be interrupted by a default action (the
    socket bind) and before any thread starts: threads inherit the mask they start with.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


class SignalQueue:
    """Installs the handlers at once (before any unit starts, so no SIGTERM is lost to the
    default action) and queues each signal for ``serve_signals``.

    The queue is bounded and never drops what matters: a signal already waiting in it is
    not queued twice (one reload covers every SIGHUP that came before it), so at most one
    entry per distinct signal is ever queued."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queued: set[int] = set()
        self._send, self._receive = anyio.create_memory_object_stream[int](16)
        self._installed: list[int] = []
        queued: tuple[int, ...] = (*SHUTDOWN_SIGNALS, *RELOAD_SIGNALS)
        ignored: tuple[int, ...] = (*USER_SIGNALS, *IGNORED_SIGNALS)
        for sig in queued:
            self._install(sig, self.put)
        for sig in ignored:
            self._install(sig, _log_ignored)
        for sig in JOB_CONTROL_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        # Handlers in place: what hold_signals kept back (if anything) is delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def _install(self, sig: int, callback: Callable[[int], None]) -> None:
        try:
            self._loop.add_signal_handler(sig, callback, int(sig))
        except (ValueError, RuntimeError, OSError):  # pragma: no cover - a libc without it
            return
        self._installed.append(sig)

    def put(self, sig: int) -> None:
        """Queue ``sig`` (or the essential-failure mark) unless it is already queued."""
        if sig in self._queued:
            return
        try:
            self._send.send_nowait(sig)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # cannot happen: one entry per distinct signal, and 16 places
        self._queued.add(sig)

    async def get(self) -> int:
        sig = await self._receive.receive()
        self._queued.discard(sig)
        return sig

    def close(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed.clear()
        self._send.close()
        self._receive.close()


def _log_ignored(sig: int) -> None:
    if sig in USER_SIGNALS:
        log.info("signal ignored: it has no meaning for vastinit", signal=signal_name(sig))
    else:
        log.warning("signal ignored", signal=signal_name(sig))


async def serve_signals(
    manager: Manager,
    reload: Callable[[], Coroutine[Any, Any, object]] | None,
    signals: SignalQueue,
) -> int:
    """Handle queued signals until a shutdown completes; returns vastinit's exit status."""
    cause = await _next_shutdown_cause(manager, signals, reload)
    await manager.shutdown(cause)
    return manager.exit_code


async def _next_shutdown_cause(
    manager: Manager,
    signals: SignalQueue,
    reload: Callable[[], Coroutine[Any, Any, object]] | None,
) -> str:
    async def essential() -> None:
        await manager.shutdown_requested.wait()
        signals.put(_SHUTDOWN_MARK)

    async with anyio.create_task_group() as tg:
        tg.start_soon(essential)
        while True:
            sig = await signals.get()
            if sig == _SHUTDOWN_MARK:
                tg.cancel_scope.cancel()
                return "an essential unit failed"
            if sig in RELOAD_SIGNALS:
                if reload is None:
                    log.warning("SIGHUP ignored: reload is not available")
                else:
                    tg.start_soon(_fenced_reload, reload)
                continue
            tg.cancel_scope.cancel()
            return f"{signal_name(sig)} received"
    raise AssertionError("unreachable")


async def _fenced_reload(reload: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """A reload that raises (a bug) is logged, never the end of vastinit."""
    try:
        await reload()
    except Exception:
        log.exception("reload refused; old configuration kept")


def is_pid1() -> bool:
    return os.getpid() == 1
