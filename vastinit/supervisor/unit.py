"""One unit's lifecycle: dependencies, conditions, spawn, readiness, exit, restart, stop.

Each unit has exactly one task (``UnitRunner.main``) that owns its state machine. Commands
from the manager (start/stop/restart) only set intent and cancel the current activation;
the unit's own task then carries them out, so two moves never race on one unit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from vastinit.config import expand, resolve_unit, start_environment
from vastinit.config.values import format_duration
from vastinit.errors import ProgramNotFound, SpawnError
from vastinit.logs.mux import LogMux, UnitLog
from vastinit.logs.pump import Pump
from vastinit.model import State, Unit, UnitType
from vastinit.proc.group import group_alive
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import Child, spawn
from vastinit.proc.status import ExitStatus
from vastinit.supervisor.policy import (
    AfterExit,
    DependencyView,
    SkipKind,
    Verdict,
    after_exit,
    backoff_delay,
    dependency_verdict,
    run_was_healthy,
)
from vastinit.supervisor.states import StateMachine, Transition
from vastinit.supervisor.stopping import stop_child

S = State

# How long a finished run waits for its output pipes to drain before moving on.
_OUTPUT_GRACE = 1.0


PrestartHook = Callable[["UnitRunner", Unit, dict[str, str], UnitLog], None]


class RunnerContext(Protocol):
    """What a unit runner needs from the manager, and nothing more."""

    @property
    def reaper(self) -> Reaper: ...
    @property
    def mux(self) -> LogMux: ...
    @property
    def base_env(self) -> Mapping[str, str]: ...

    def dependency_view(self, name: str) -> DependencyView: ...
    async def changed(self) -> None: ...
    def on_transition(self, transition: Transition) -> None: ...
    def notify(self) -> None: ...
    def essential_failed(self, unit: str, code: int) -> None: ...


@dataclass(frozen=True)
class UnitStatus:
    """A snapshot of one unit for status output (``ctl status``, the portal)."""

    name: str
    state: State
    cause: str
    since: float
    enabled: bool
    pid: int | None
    ready: bool
    started_at: float | None
    ready_at: float | None
    restarts: int
    last_exit: str | None
    last_exit_code: int | None
    last_exit_at: float | None
    next_run: float | None
    probe_error: str | None
    status_text: str | None
    last_run_duration: float | None = None  # seconds the last finished run took


def env_digest(env: Mapping[str, str]) -> str:
    """A digest of ``env`` that changes whenever any variable does (reload compares them)."""
    h = hashlib.sha256()
    for key in sorted(env):
        h.update(f"{key}\0{env[key]}\0".encode(errors="surrogateescape"))
    return h.hexdigest()


def condition_problem(unit: Unit, env: Mapping[str, str]) -> str | None:
    """Why the unit's ``[condition]`` is false in ``env`` now, or None when it holds."""
    cond = unit.condition
    for var in cond.env:
        if not env.get(var):
            return f"{var} is not set"
    for path in cond.path_exists:
        real = expand(path, env)
        if not os.path.exists(real):
            return f"{real} does not exist"
    for path in cond.path_missing:
        real = expand(path, env)
        if os.path.exists(real):
            return f"{real} exists"
    return None


def spawn_logged(
    unit: Unit, env: Mapping[str, str], ulog: UnitLog, reaper: Reaper
) -> tuple[Child, tuple[Pump, Pump]]:
    """Spawn a resolved unit's command with its stdout and stderr piped into ``ulog``.

    Raises SpawnError (ProgramNotFound when the program is not installed)."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        child = spawn(
            unit.command,
            reaper=reaper,
            env=env,
            cwd=unit.working_dir,
            user=unit.user,
            group=unit.group,
            stdout=out_w,
            stderr=err_w,
        )
    except SpawnError:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return child, (ulog.attach(out_r, "stdout"), ulog.attach(err_r, "stderr"))


async def drain_output(pumps: tuple[Pump, ...]) -> None:
    """Wait (briefly) until a finished run's pipes reach EOF.

    Once its group is gone the pipes close at once, so the last (partial) line is logged
    before the exit is. A process that escaped the group (setsid) may still hold them: its
    output keeps flowing, but the unit does not wait for it."""
    with anyio.move_on_after(_OUTPUT_GRACE):
        for pump in pumps:
            await pump.wait_eof()


class UnitRunner:
    """Runs one unit for the life of the supervisor (or until the unit is removed)."""

    def __init__(self, unit: Unit, ctx: RunnerContext) -> None:
        self.unit = unit
        self.ctx = ctx
        self.sm = StateMachine(unit.name, ctx.on_transition)
        self.log = structlog.get_logger("vastinit").bind(unit=unit.name)
        self.child: Child | None = None
        self.restart_times: deque[float] = deque(maxlen=max(unit.restart.limit, 1) + 1)
        self.restarts = 0
        self.consecutive_failures = 0
        self.last_exit: ExitStatus | None = None
        self.last_exit_at: float | None = None
        self.last_run_duration: float | None = None
        self._last_start_mono: float | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.skip_kind: SkipKind | None = None
        self.next_run: float | None = None
        self.probe_error: str | None = None
        self.status_text: str | None = None
        self.active = False  # an activation (or its stop) is in progress
        self.held = False  # shutdown began: no new activation or cron run
        self._pending_start: str | None = None  # cause of a requested start
        self._stop_cause = "stop requested"
        self._wake = asyncio.Event()
        self._scope: anyio.CancelScope | None = None
        self.run_failure: str | None = None  # why the current run was failed by a probe
        # env_digest() of the environment of the last start: reload restarts the unit when
        # its env_files now say something else.
        self.start_env_digest: str | None = None
        # Hooks the health and scheduling layers plug into (see vastinit.app):
        # prestart_hook(runner, unit, env, ulog): just before spawn, may add to env and
        #   watch the unit's output from its first line;
        # readiness_hook(runner, unit, child): runs while the process lives; calls
        #   mark_ready / mark_not_ready / fail_run;
        # cron_hook(runner): runs a cron unit's schedule for the whole activation;
        # run_now_hook(cause): set by it while the schedule is armed (see run_now).
        self.prestart_hook: PrestartHook | None = None
        self.readiness_hook: Callable[[UnitRunner, Unit, Child], Awaitable[None]] | None = None
        self.cron_hook: Callable[[UnitRunner], Awaitable[None]] | None = None
        self.run_now_hook: Callable[[str], None] | None = None

    # ---- commands (called by the manager; they only record intent) -------------------

    @property
    def state(self) -> State:
        return self.sm.state

    def start(self, cause: str) -> None:
        """Begin an activation unless one is already under way; a cron unit whose schedule
        is armed is asked for a run now instead (``run_now``)."""
        if self.held:
            return
        if self.active and self._scope is not None and not self._scope.cancel_called:
            self.run_now(cause)
            return
        self._pending_start = cause
        self._wake.set()

    def stop(self, cause: str) -> None:
        """End the current activation: stop the process group, then state ``stopped``."""
        self._pending_start = None
        self._stop_cause = cause
        if self._scope is not None:
            self._scope.cancel()

    def restart(self, cause: str) -> None:
        """Stop (if running) and start again once the old group is gone."""
        self.stop(cause)
        if self.held:
            return
        self._pending_start = cause
        self._wake.set()

    def run_now(self, cause: str) -> bool:
        """Ask a cron unit with an armed schedule for a run now (its overlap rule applies);
        False when no schedule is armed to ask."""
        if self.run_now_hook is None:
            return False
        self.run_now_hook(cause)
        return True

    @property
    def stop_cause(self) -> str:
        """Why the current (or last) stop was requested."""
        return self._stop_cause

    def replace_spec(self, unit: Unit) -> None:
        """Take a new spec (reload; the unit is stopped): with a fresh crash-loop budget,
        whose limit may have changed too."""
        self.unit = unit
        self.restart_times = deque(maxlen=max(unit.restart.limit, 1) + 1)
        self.consecutive_failures = 0

    def hold(self) -> None:
        """Drop any pending start and refuse new ones (shutdown: nothing new begins)."""
        self._pending_start = None
        self.held = True

    @property
    def start_pending(self) -> bool:
        """A start was requested and the unit's task has not begun it yet."""
        return self._pending_start is not None

    @property
    def idle(self) -> bool:
        """No activation, no stop in progress, no start pending."""
        return not self.active and self._pending_start is None

    # ---- the unit's task ------------------------------------------------------------

    async def main(self) -> None:
        """The unit's only task: carry out start requests until cancelled."""
        while True:
            while self._pending_start is None:
                await self._wake.wait()
                self._wake.clear()
            cause, self._pending_start = self._pending_start, None
            self.active = True
            self.ctx.notify()
            try:
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    await self._activate(cause)
                self._scope = None
                if scope.cancel_called:
                    with anyio.CancelScope(shield=True):
                        await self._stop_now(self._stop_cause)
            finally:
                self._scope = None
                self.active = False
                self.ctx.notify()

    async def _activate(self, cause: str) -> None:
        self.sm.set(S.WAITING, cause)
        self.skip_kind = None
        never = await self._wait_dependencies()
        if never is not None:
            self._skip(SkipKind.DEPENDENCY, never)
            return
        if self.unit.type is UnitType.CRON:
            if self.cron_hook is None:
                raise RuntimeError("cron units need the scheduler (vastinit.cron.runner)")
            await self.cron_hook(self)
            return
        self.consecutive_failures = 0
        while True:
            env = start_environment(self.unit, self.ctx.base_env)
            problem = condition_problem(self.unit, env)
            if problem is not None:
                self._skip(SkipKind.CONDITION, problem)
                return
            try:
                status = await self.run_once(env, "dependencies met")
            except ProgramNotFound as exc:
                # Not installed here (an optional part of the stack): nothing to run.
                self._skip(SkipKind.CONDITION, str(exc))
                return
            except SpawnError as exc:
                self._fail(f"cannot start: {exc}", 127)
                return
            decision = after_exit(
                self.unit.restart,
                status,
                self.restart_times,
                time.monotonic(),
                failed_run=self.run_failure,
            )
            if decision.action is AfterExit.EXITED:
                self.sm.set(S.EXITED, decision.reason)
                return
            if decision.action is AfterExit.FAILED:
                self._fail(decision.reason, status.shell_code)
                return
            await self._backoff(status)

    async def _backoff(self, status: ExitStatus) -> None:
        child_ran = time.monotonic() - (self._last_start_mono or time.monotonic())
        if run_was_healthy(self.unit.restart, child_ran):
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        delay = backoff_delay(self.unit.restart, self.consecutive_failures)
        self.restart_times.append(time.monotonic())
        self.restarts += 1
        what = f"{self.run_failure} ({status})" if self.run_failure else str(status)
        self.sm.set(S.BACKOFF, f"{what}; restarting in {format_duration(delay)}")
        if delay > 0:
            await anyio.sleep(delay)

    async def run_once(self, env: Mapping[str, str], cause: str) -> ExitStatus:
        """Spawn the unit once and supervise it until its main process exits and its group
        is empty; returns how the main process ended. Raises SpawnError."""
        unit = resolve_unit(self.unit, env)
        spawn_env = dict(env)
        self.start_env_digest = env_digest(env)
        self.sm.set(S.STARTING, cause)
        self.run_failure = None
        ulog = self.ctx.mux.unit_log(unit.name, unit.log_file, unit.log.max_size, unit.log.keep)
        if self.prestart_hook is not None:
            self.prestart_hook(self, unit, spawn_env, ulog)
        child, pumps = spawn_logged(unit, spawn_env, ulog, self.ctx.reaper)
        self.child = child
        self.started_at, self.ready_at = time.time(), None
        self._last_start_mono = time.monotonic()
        self.probe_error = self.status_text = None
        self.sm.set(S.RUNNING, f"pid {child.pid}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._readiness, unit, child)
            status = await child.wait()
            tg.cancel_scope.cancel()
        self.record_exit(status)
        if group_alive(child.pgid):
            if self.sm.state is not S.STOPPING:
                self.sm.set(
                    S.STOPPING, f"main process {status}; stopping what is left of its group"
                )
            how = await stop_child(child, self.unit.stop, self.ctx.reaper)
            self.log.info("leftover processes stopped", by=how)
        await drain_output(pumps)
        self.child = None
        return status

    async def _readiness(self, unit: Unit, child: Child) -> None:
        if unit.type is not UnitType.SERVICE:
            return  # a oneshot or cron run is done when it exits; it is never "ready"
        if unit.readiness is None:
            self.mark_ready("started; no readiness probe")
            if unit.liveness is None:
                return
        if self.readiness_hook is None:
            raise RuntimeError("readiness and liveness probes need vastinit.health")
        await self.readiness_hook(self, unit, child)

    def mark_ready(self, cause: str) -> None:
        """RUNNING -> READY (called by readiness probes); the first time, logs time to ready."""
        if self.sm.state is S.RUNNING:
            if self.ready_at is None:
                self.ready_at = time.time()
                took = self.ready_at - (self.started_at or self.ready_at)
                cause = f"{cause}; ready {format_duration(took)} after start"
            self.sm.set(S.READY, cause)

    async def fail_run(self, reason: str) -> None:
        """Stop the current process as a *failed* run (start timeout, liveness failures):
        the restart policy then decides, and the run counts toward the crash-loop limit."""
        child = self.child
        if child is None or child.exited:
            return
        self.run_failure = reason
        if self.sm.state in (S.RUNNING, S.READY):
            self.sm.set(S.STOPPING, reason)
        with anyio.CancelScope(shield=True):
            await stop_child(child, self.unit.stop, self.ctx.reaper)

    def mark_not_ready(self, cause: str) -> None:
        """READY -> RUNNING: a readiness probe failed after ready (no restart)."""
        if self.sm.state is S.READY:
            self.sm.set(S.RUNNING, cause)

    def record_exit(self, status: ExitStatus, duration: float | None = None) -> None:
        """Keep how the last run ended, when, and how long it took (default: since the
        latest spawn)."""
        if duration is None and self._last_start_mono is not None:
            duration = time.monotonic() - self._last_start_mono
        self.last_exit, self.last_exit_at = status, time.time()
        self.last_run_duration = duration

    async def _wait_dependencies(self) -> str | None:
        """Wait until every dependency holds; the reason if one never can, else None."""
        while True:
            waiting = False
            for name, want in self.unit.depends_on.items():
                view = self.ctx.dependency_view(name)
                verdict = dependency_verdict(view, want)
                if verdict is Verdict.NEVER:
                    return _never_reason(name, view, want.value)
                waiting = waiting or verdict is Verdict.WAIT
            if not waiting:
                return None
            await self.ctx.changed()

    def _skip(self, kind: SkipKind, reason: str) -> None:
        self.skip_kind = kind
        self.sm.set(S.SKIPPED, reason)

    def _fail(self, reason: str, code: int) -> None:
        self.sm.set(S.FAILED, reason)
        if self.unit.restart.essential:
            self.ctx.essential_failed(self.unit.name, code)

    async def _stop_now(self, cause: str) -> None:
        """Carry out a stop: signal, timeout, SIGKILL, empty group; then ``stopped``."""
        child = self.child
        if child is not None and (not child.exited or group_alive(child.pgid)):
            if self.sm.state is not S.STOPPING:
                self.sm.set(S.STOPPING, cause)
            how = await stop_child(child, self.unit.stop, self.ctx.reaper)
            status = await child.wait()
            self.record_exit(status)
            self.child = None
            self.sm.set(S.STOPPED, f"{cause} ({how}; {status})")
            return
        self.child = None
        if self.sm.state in (S.WAITING, S.STARTING, S.BACKOFF, S.SCHEDULED, S.STOPPING):
            self.sm.set(S.STOPPED, cause)
        elif self.sm.state in (S.RUNNING, S.READY):
            self.sm.set(S.STOPPING, cause)  # the process exited as we were told to stop it
            self.sm.set(S.STOPPED, cause)

    def snapshot(self) -> UnitStatus:
        """The unit's status now."""
        last = self.last_exit
        return UnitStatus(
            name=self.unit.name,
            state=self.sm.state,
            cause=self.sm.cause,
            since=self.sm.since,
            enabled=self.unit.enabled,
            pid=self.child.pid if self.child is not None and not self.child.exited else None,
            ready=self.sm.state is S.READY,
            started_at=self.started_at,
            ready_at=self.ready_at,
            restarts=self.restarts,
            last_exit=str(last) if last is not None else None,
            last_exit_code=last.shell_code if last is not None else None,
            last_exit_at=self.last_exit_at,
            next_run=self.next_run,
            probe_error=self.probe_error,
            status_text=self.status_text,
            last_run_duration=self.last_run_duration,
        )


def _never_reason(name: str, view: DependencyView, want: str) -> str:
    if not view.exists:
        return f"dependency {name} does not exist"
    if not view.enabled:
        return f"dependency {name} is disabled"
    return f"dependency {name} can never be {want}: it is {view.state} ({view.cause})"
