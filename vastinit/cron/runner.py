"""Cron units in the running engine: the schedule of one activation of a ``type = "cron"`` unit.

``setup_runner`` plugs ``CronJob`` into every unit runner as its ``cron_hook``.  Once the
unit's dependencies hold, the activation arms the schedule (state ``scheduled``) and runs,
until a stop cancels it:

- the timer loop: ``CronTimer.wait_next`` in a loop, also while a run is going, so that a
  fire time during a run is decided by the overlap rule (logged as skipped) instead of being
  mistaken for a clock jump later;
- the run-now loop: ``ctl start`` of a unit whose schedule is armed asks for a run now
  (``UnitRunner.run_now``), under the same overlap rule;
- one task per run.

Every due run re-reads the environment and checks ``[condition]``: when it is false the run
is skipped and logged and the unit stays ``scheduled`` (the next due time checks again), so a
job can be switched on by creating a file or setting a variable in an env file.

A run is ``scheduled -> starting -> running -> scheduled``, through ``UnitRunner.run_once``
(the unit's log, its ``pid`` in status, ``ctl signal``, ``[stop]`` on a stop).  With
``overlap = "allow"`` a run that comes due while that one is going is spawned here as an
*overlapping* run: same command, environment and log, its own process group, no state of its
own (the state follows the first run; status shows that run's pid).  A stop or shutdown stops
every run, all at once, each group by the unit's ``[stop]`` rule, and ends in ``stopped``;
the schedule stays paused until the unit is started again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from vastinit.config import resolve_unit
from vastinit.config.values import format_duration
from vastinit.cron.expression import is_reboot
from vastinit.cron.scheduler import Clock, CronRuns, CronTimer, SystemClock, format_when
from vastinit.errors import SpawnError, VastinitError
from vastinit.model import Escaped, State
from vastinit.proc.group import group_alive
from vastinit.proc.members import Membership
from vastinit.proc.spawn import Child, spawn_os_error
from vastinit.proc.status import ExitStatus
from vastinit.supervisor.stopping import leftovers, stop_child
from vastinit.supervisor.unit import (
    UnitRunner,
    drain_output,
    environment_and_condition,
    spawn_logged,
)

S = State

# Run-now requests waiting for the unit's task; more than this at once are one too many.
_REQUEST_BUFFER = 8
# The exit code a shell gives a command it could not start.
_CANNOT_START = 127


def setup_runner(runner: UnitRunner, clock: Clock | None = None) -> None:
    """Give ``runner`` its ``cron_hook`` (used only if its unit is, or becomes, a cron unit)."""

    async def hook(r: UnitRunner) -> None:
        await CronJob(r, clock).activate()

    runner.cron_hook = hook


class CronJob:
    """One activation of a cron unit: its timer, its runs, and their stop (module docstring)."""

    def __init__(self, runner: UnitRunner, clock: Clock | None = None) -> None:
        schedule = runner.unit.schedule
        if schedule is None:  # config validation requires [schedule] for type = "cron"
            raise RuntimeError(f"cron unit {runner.unit.name} has no [schedule]")
        self.runner = runner
        self.schedule = schedule
        self.clock: Clock = SystemClock() if clock is None else clock
        self.runs = CronRuns(schedule.overlap)
        self.timer = CronTimer(schedule, self.clock, on_note=self._note, on_next=self._set_next_run)
        self._first_run_pending = schedule.run_on_start or is_reboot(schedule.cron)
        self._primary_busy = False  # a run is going through runner.run_once
        self._overlapping: dict[int, Child] = {}  # runs spawned here, by pid (overlap = "allow")
        self._tg: TaskGroup | None = None

    async def activate(self) -> None:
        """Arm the schedule and run the unit on it until cancelled (a stop); then stop every
        overlapping run (the runner stops the one it knows)."""
        runner = self.runner
        send: MemoryObjectSendStream[str]
        receive: MemoryObjectReceiveStream[str]
        send, receive = anyio.create_memory_object_stream[str](_REQUEST_BUFFER)
        self._set_next_run(self.timer.next_run_at())
        runner.sm.set(
            S.SCHEDULED,
            f"schedule armed ({self._describe()}); next run {self._next_text()}",
        )
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                runner.run_now_hook = lambda cause: self._request(send, cause)
                tg.start_soon(self._timer_loop)
                tg.start_soon(self._request_loop, receive)
        finally:
            runner.run_now_hook = None
            runner.next_run = None
            send.close()
            receive.close()
            if self._overlapping:
                with anyio.CancelScope(shield=True):
                    await self._stop_every_run()

    # ---- when runs are due ----------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            due = await self.timer.wait_next()
            if self._first_run_pending:
                self._first_run_pending = False
                cause = "@reboot: run at start" if is_reboot(self.schedule.cron) else "run on start"
            else:
                cause = f"scheduled run for {format_when(due)}"
            await self._due(due, cause)

    def _request(self, send: MemoryObjectSendStream[str], cause: str) -> None:
        """``run_now_hook``: queue a run-now request for the unit's own task."""
        try:
            send.send_nowait(cause)
        except anyio.WouldBlock:
            self.runner.log.warning(
                "run now: request dropped", reason=f"{_REQUEST_BUFFER} requests already queued"
            )
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the activation is ending: nothing to run in

    async def _request_loop(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async for cause in receive:
            await self._due(self.clock.wall(), f"{cause}: run now")

    async def _due(self, due: datetime, cause: str) -> None:
        """A run is due at ``due``: start it unless the condition or the overlap rule says no.

        Env files and condition paths are read off the loop (a slow or huge file, a hung
        mount must not stall it); from
        ``admit`` to ``start_soon`` nothing awaits, so two due runs never both pass ``admit``.
        """
        runner = self.runner
        if runner.held:
            return  # shutting down: the schedule may not begin a run any more
        try:
            env, problem = await anyio.to_thread.run_sync(
                environment_and_condition,
                runner.unit,
                runner.ctx.base_env,
                abandon_on_cancel=True,
            )
        except (ValueError, VastinitError) as exc:
            # A bad env file or an expansion too large: this run cannot start, the schedule
            # goes on (the next run reads the files again, perhaps fixed by then).
            runner.record_exit(ExitStatus(code=_CANNOT_START), duration=0.0)
            runner.log.error(
                "cron run could not start",
                due=format_when(due),
                error=str(exc),
                next_run=self._next_text(),
            )
            return
        if runner.held:
            return
        if problem is not None:
            runner.log.info(
                "cron run skipped: condition is false",
                due=format_when(due),
                reason=problem,
                next_run=self._next_text(),
            )
            return
        refusal = self.runs.admit(due)
        if refusal is not None:
            runner.log.warning("cron run skipped", reason=refusal, skipped=self.runs.skipped)
            return
        token = self.runs.started(self.clock.wall(), self.clock.monotonic())
        runner.ctx.publish_event(
            "cron", runner.unit.name, phase="started", run=token, cause=cause, due=due.timestamp()
        )
        assert self._tg is not None
        self._tg.start_soon(self._run, token, env, cause)

    # ---- one run ------------------------------------------------------------------------

    async def _run(self, token: int, env: Mapping[str, str], cause: str) -> None:
        runner = self.runner
        primary = not self._primary_busy
        try:
            if primary:
                self._primary_busy = True
                status = await runner.run_once(env, cause)
            else:
                status = await self._run_overlapping(env, cause)
        except SpawnError as exc:
            self.runs.finished(token, self.clock.monotonic(), _CANNOT_START)
            runner.record_exit(ExitStatus(code=_CANNOT_START), duration=0.0)
            runner.log.error("cron run could not start", error=str(exc))
            self._publish_end(token, ExitStatus(code=_CANNOT_START), 0.0, str(exc))
            if primary:
                self._primary_busy = False
                # A run can fail before it left `scheduled` (its command did not expand):
                # then it stays there; the error is logged above.
                if runner.sm.state is not S.SCHEDULED:
                    runner.sm.set(
                        S.SCHEDULED, f"run could not start: {exc}; next run {self._next_text()}"
                    )
            return
        record = self.runs.finished(token, self.clock.monotonic(), status.shell_code)
        took = format_duration(record.duration)
        self._publish_end(token, status, record.duration, None)
        if not status.success:
            runner.log.warning("cron run failed", exit=str(status), took=took)
        if primary:
            self._primary_busy = False  # run_once kept its exit, start time and duration
            others = self.runs.running
            still = f"; {others} overlapping run(s) still going" if others else ""
            runner.sm.set(
                S.SCHEDULED, f"run {status} after {took}{still}; next run {self._next_text()}"
            )
        else:
            runner.record_exit(status, duration=record.duration)
            runner.log.info("overlapping run ended", exit=str(status), took=took)

    def _publish_end(
        self, token: int, status: ExitStatus, duration: float, error: str | None
    ) -> None:
        """The ``cron`` event of a run that ended (or could not start: ``error``)."""
        self.runner.ctx.publish_event(
            "cron",
            self.runner.unit.name,
            phase="ended",
            run=token,
            exit={"code": status.code, "signal": status.signal, "text": str(status)},
            duration_s=round(duration, 6),
            error=error,
        )

    async def _run_overlapping(self, env: Mapping[str, str], cause: str) -> ExitStatus:
        """One run beside the one ``run_once`` supervises: spawned, logged and reaped here; a
        stop that interrupts it leaves it in ``_overlapping`` for ``_stop_every_run``."""
        runner = self.runner
        try:
            unit = resolve_unit(runner.unit, env)
        except (ValueError, VastinitError) as exc:
            raise SpawnError(str(exc)) from exc
        ulog = runner.ctx.mux.unit_log(unit.name, unit.log_file, unit.log.max_size, unit.log.keep)
        keep = unit.stop.leftovers is Escaped.KEEP
        members: Membership | None = None
        if keep:  # what it leaves running is tracked (released), as for the main run
            try:
                members = Membership(unit.name, runner.ctx.cgroups)
            except OSError as exc:
                raise spawn_os_error("cannot create the unit's cgroup", exc) from exc
        child, pumps = spawn_logged(
            unit, env, ulog, runner.ctx.reaper, members=members, cgroups=runner.ctx.cgroups
        )
        self._overlapping[child.pid] = child
        runner.log.info(
            "overlapping run started", pid=child.pid, cause=cause, running=self.runs.running
        )
        status = await child.wait()
        if not keep and group_alive(child.pgid):
            how = await stop_child(child, runner.unit.stop, runner.ctx.reaper)
            runner.log.info("leftover processes of an overlapping run stopped", by=how)
        del self._overlapping[child.pid]
        if members is not None:
            alive = await anyio.to_thread.run_sync(members.pids)
            if alive:
                runner.released.append(members)
                runner.log.info("leftover processes released", pids=sorted(alive))
            else:
                await anyio.to_thread.run_sync(members.release)
        await drain_output(pumps)
        return status

    async def _stop_every_run(self) -> None:
        """Stop the overlapping runs and the main one together, each by ``[stop]``, so a
        shutdown takes one stop timeout, not one per run; the runner then sees the main
        run's group gone and only records ``stopped``."""
        runner = self.runner
        main = runner.child
        if main is not None and not await leftovers(main, runner.unit.stop):
            main = None
        if main is not None and runner.state in (S.RUNNING, S.READY):
            runner.sm.set(S.STOPPING, runner.stop_cause)
        children = list(self._overlapping.values())
        runner.log.info(
            "stopping every run", runs=len(children) + (main is not None), cause=runner.stop_cause
        )

        async def stop_one(child: Child) -> None:
            how = await stop_child(child, runner.unit.stop, runner.ctx.reaper)
            status = await child.wait()
            runner.log.info("run stopped", pid=child.pid, by=how, exit=str(status))
            if child is main:
                runner.record_exit(status)

        async with anyio.create_task_group() as tg:
            for child in [*children, *([main] if main is not None else [])]:
                tg.start_soon(stop_one, child)
        self._overlapping.clear()

    # ---- status -------------------------------------------------------------------------

    def _set_next_run(self, fire: datetime | None) -> None:
        """Keep ``runner.next_run`` (epoch seconds on the real clock, for status) current."""
        if fire is None:
            self.runner.next_run = None
            return
        # The fire time is on the timer's clock (shifted in tests): convert by the distance.
        ahead = (fire - self.clock.wall()).total_seconds()
        self.runner.next_run = time.time() + ahead

    def _next_text(self) -> str:
        fire = self.timer.next_run_at()
        if fire is None:
            return "never (@reboot runs only at start; ctl start runs it again)"
        return f"at {format_when(fire)}"

    def _describe(self) -> str:
        s = self.schedule
        extra = ", run on start" if s.run_on_start else ""
        return f"cron {s.cron.strip()!r} {s.timezone}, overlap {s.overlap.value}{extra}"

    def _note(self, text: str) -> None:
        self.runner.log.warning("cron schedule", note=text)
