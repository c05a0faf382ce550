"""The supervisor side of the control protocol: a thin adapter over Manager, LogMux and reload.

It implements ``vastinit.control.protocol.Commands`` and returns plain data. Waiting verbs
wait on the manager's state changes (``Manager.wait_for``), never by polling.
"""

from __future__ import annotations

import dataclasses
import os
import signal as _signal
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import tomli_w

from vastinit.control.protocol import (
    ActionResult,
    CommandRefused,
    LogEntry,
    ReadyEntry,
    ReloadResult,
    ShowResult,
    SignalResult,
    TransientResult,
)
from vastinit.logs.line import LogLine
from vastinit.logs.ring import LogSubscription
from vastinit.model import State, UnitType
from vastinit.proc.status import signal_name
from vastinit.supervisor.event_logs import ALL_LOGS, FOLLOW_BYTES, MAX_LOG_RATE, LogPump
from vastinit.supervisor.events import EVENT_TYPES, EventSubscriber
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.reload import Reloader, ReloadFailed, ReloadShuttingDown
from vastinit.supervisor.states import FINE
from vastinit.supervisor.transient import add_transient, remove_transient
from vastinit.supervisor.unit import UnitRunner, UnitStatus

log = structlog.get_logger("vastinit")

S = State

# States a start/restart wait ends in, by unit type: the goal first, then the dead ends.
_START_GOAL: Mapping[UnitType, State] = {
    UnitType.SERVICE: S.READY,
    UnitType.ONESHOT: S.EXITED,
    UnitType.CRON: S.SCHEDULED,
}
_DEAD_ENDS = frozenset({S.FAILED, S.SKIPPED, S.STOPPED, S.INACTIVE})
# A cron unit is "ready" once its schedule is armed, including while a run is under way.
_CRON_READY = frozenset({S.SCHEDULED, S.STARTING, S.RUNNING, S.READY, S.STOPPING})


def start_outcome(kind: UnitType, state: State) -> str | None:
    """The state a start wait ended in, or None while the start is still under way."""
    if state is _START_GOAL[kind] or state in _DEAD_ENDS:
        return state.value
    return None


def unit_ready(kind: UnitType, state: State) -> bool:
    """A named unit counts as ready: a service when ready, a oneshot once it succeeded, a
    cron unit while its schedule is armed."""
    if kind is UnitType.CRON:
        return state in _CRON_READY
    return state is _START_GOAL[kind]


def ready_dead_end(kind: UnitType, state: State) -> bool:
    """The unit cannot become ready without someone starting it again."""
    return state in (S.FAILED, S.SKIPPED) and not unit_ready(kind, state)


_STATUS_FIELDS = tuple(f.name for f in dataclasses.fields(UnitStatus))


def _entry(line: LogLine) -> LogEntry:
    return {
        "ts": line.ts,
        "unit": line.unit,
        "stream": line.stream,
        "text": line.text.decode(errors="replace"),
    }


def _plain(value: object) -> object:
    """A raw TOML value (read-only mappings, tuples) as the dicts and lists tomli-w writes."""
    if isinstance(value, Mapping):
        return _plain_table(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _plain_table(table: Mapping[Any, object]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in table.items()}


class _Follow:
    """A LogSubscription whose lines come out as wire entries."""

    def __init__(self, sub: LogSubscription) -> None:
        self._sub = sub

    async def next_batch(self) -> list[LogEntry]:
        return [_entry(line) for line in await self._sub.next_batch()]

    def close(self) -> None:
        # The server closes a feed when its client is gone (or cut off): nobody will read
        # what is queued, so free it and give its bytes back to the followers' shared budget.
        self._sub.discard()

    @property
    def dropped(self) -> int:
        """Lines this follower lost for being too slow (the control server reads it)."""
        return self._sub.dropped


class _EventFeed:
    """An EventSubscriber (and, when log lines were asked for, the LogPump that feeds them
    into it) as the control server's ``EventFeed``."""

    def __init__(self, sub: EventSubscriber, logs: LogPump | None) -> None:
        self._sub = sub
        self._logs = logs

    async def next_batch(self) -> list[bytes]:
        return await self._sub.next_batch()

    async def pump(self) -> None:
        if self._logs is not None:
            await self._logs.run()

    async def wait_gone(self) -> None:
        await self._sub.gone.wait()

    @property
    def dropped_reason(self) -> str | None:
        return self._sub.dropped_reason

    def close(self) -> None:
        self._sub.close()
        if self._logs is not None:
            self._logs.close()


class SupervisorCommands:
    """``Commands`` for one running supervisor."""

    def __init__(self, manager: Manager, reloader: Reloader) -> None:
        self.manager = manager
        self.reloader = reloader

    # ---- helpers ----------------------------------------------------------------------

    def _runners(self, names: Sequence[str]) -> list[UnitRunner]:
        """The runners of ``names`` (all, sorted, if empty); every name checked before use."""
        if not names:
            return [self.manager.runners[n] for n in sorted(self.manager.runners)]
        return [self.manager.runner(n) for n in dict.fromkeys(names)]

    def _refuse_when_shutting_down(self) -> None:
        if self.manager.shutting_down:
            raise CommandRefused("vastinit is shutting down", code="shutting_down", status=503)

    @staticmethod
    def _result(runner: UnitRunner, outcome: str, ok: bool) -> ActionResult:
        return ActionResult(runner.unit.name, outcome, ok, runner.state.value, runner.sm.cause)

    # ---- status and show --------------------------------------------------------------

    async def scan_processes(self) -> None:
        await self.manager.scan_processes()

    def status(self, names: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for runner in self._runners(names):
            snap = runner.snapshot()
            # Shallow (dataclasses.asdict deep-copies every field: ~20 us a unit, which
            # a status call of many units feels); only the escaped processes nest.
            item = {name: getattr(snap, name) for name in _STATUS_FIELDS}
            item["escaped"] = tuple(dataclasses.asdict(e) for e in snap.escaped)
            item["state"] = snap.state.value
            item["type"] = runner.unit.type.value
            item["description"] = runner.unit.description
            item["fine"] = snap.state in FINE
            item["transient"] = runner.unit.transient
            item["group"] = runner.unit.process_group or runner.unit.name
            item["autostart"] = runner.unit.autostart
            out.append(item)
        return out

    def show(self, name: str) -> ShowResult:
        unit = self.manager.runner(name).unit
        text = tomli_w.dumps(_plain_table(unit.raw))
        return ShowResult(name, unit.source, text)

    # ---- start / stop / restart ------------------------------------------------------

    async def start(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        runners = self._runners(names)
        self._refuse_when_shutting_down()
        for runner in runners:
            runner.start("start requested (ctl)")
        return await self._settle(runners, wait, timeout)

    async def restart(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        runners = self._runners(names)
        self._refuse_when_shutting_down()
        for runner in runners:
            runner.restart("restart requested (ctl)")
        return await self._settle(runners, wait, timeout)

    async def _settle(
        self, runners: list[UnitRunner], wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        """Wait until every runner's new activation reached its goal or a dead end."""
        if not wait:
            return [self._result(r, "requested", True) for r in runners]

        def outcome(r: UnitRunner) -> str | None:
            # While the start is pending the state is still the old one (say ``ready``
            # before a restart): only what comes after the pickup counts.
            return None if r.start_pending else start_outcome(r.unit.type, r.state)

        await self.manager.wait_for(lambda: all(outcome(r) is not None for r in runners), timeout)
        results = []
        for r in runners:
            got = outcome(r)
            if got is None:
                results.append(self._result(r, "timeout", False))
            else:
                results.append(self._result(r, got, got == _START_GOAL[r.unit.type].value))
        return results

    async def stop(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        runners = self._runners(names)
        for runner in runners:
            runner.stop("stop requested (ctl)")
        if not wait:
            return [self._result(r, "requested", True) for r in runners]
        await self.manager.wait_for(lambda: all(r.idle for r in runners), timeout)
        return [
            self._result(r, r.state.value, True) if r.idle else self._result(r, "timeout", False)
            for r in runners
        ]

    # ---- ready --------------------------------------------------------------------------

    async def ready(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ReadyEntry]:
        runners = self._runners(names)
        if names:

            def is_ready(r: UnitRunner) -> bool:
                return unit_ready(r.unit.type, r.state)

            def hopeless(r: UnitRunner) -> bool:
                return ready_dead_end(r.unit.type, r.state)

        else:
            # "Every unit": the system is up when every unit is fine, skipped ones included.
            def is_ready(r: UnitRunner) -> bool:
                return r.state in FINE

            def hopeless(r: UnitRunner) -> bool:
                return r.state is S.FAILED

        def settled() -> bool:
            if self.manager.shutting_down:
                return True
            if all(is_ready(r) for r in runners):
                return True
            return any(hopeless(r) and not r.start_pending for r in runners)

        if wait:
            await self.manager.wait_for(settled, timeout)
        return [ReadyEntry(r.unit.name, is_ready(r), r.state.value, r.sm.cause) for r in runners]

    # ---- signal, reload, logs, shutdown ------------------------------------------------

    def signal(self, name: str, signum: int) -> SignalResult:
        runner = self.manager.runner(name)
        child = runner.child
        if child is None or child.exited:
            raise CommandRefused(
                f"unit {name} has no running process (it is {runner.state})",
                code="not_running",
                status=409,
            )
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            raise CommandRefused(
                f"unit {name}'s process {child.pid} has just exited",
                code="not_running",
                status=409,
            ) from None
        log.info("signal sent (ctl)", unit=name, pid=child.pid, signal=signal_name(signum))
        return SignalResult(name, child.pid, signal_name(signum))

    async def reload(self, *, dry_run: bool) -> ReloadResult:
        if not dry_run:
            self._refuse_when_shutting_down()
        try:
            plan = await self.reloader.reload(dry_run=dry_run)
        except ReloadFailed as exc:
            raise CommandRefused(str(exc), code="reload_failed", status=500) from exc
        except ReloadShuttingDown as exc:
            raise CommandRefused(str(exc), code="shutting_down", status=503) from exc
        return ReloadResult(
            dry_run,
            plan.added,
            plan.removed,
            plan.changed,
            plan.unchanged,
            env_restart=dict(plan.env_restart),
            restart_to_apply=plan.notes,
            groups={
                name: plan.units[name].process_group or name
                for name in [*plan.added, *plan.changed]
                if name in plan.units
            },
        )

    def _check_log_names(self, names: Sequence[str]) -> None:
        known = set(self.manager.mux.units())
        for name in names:
            if name not in known:
                self.manager.runner(name)  # raises UnknownUnitError naming close matches

    def logs_tail(self, names: Sequence[str], n: int) -> list[LogEntry]:
        self._check_log_names(names)
        return [_entry(line) for line in self.manager.mux.tail(list(names) or None, n)]

    def logs_follow(self, names: Sequence[str], backlog: int) -> _Follow:
        self._check_log_names(names)
        return _Follow(self.manager.mux.subscribe(list(names) or None, backlog=backlog))

    # ---- the event stream -------------------------------------------------------------

    def events_subscribe(
        self,
        *,
        since: int | None,
        epoch: str | None,
        types: Sequence[str],
        units: Sequence[str],
        logs: Sequence[str],
        backlog: int = 0,
        log_rate: float | None = None,
    ) -> _EventFeed:
        unknown = sorted(set(types) - EVENT_TYPES)
        if unknown:
            raise CommandRefused(
                f"unknown event type {unknown[0]!r}; expected one of {sorted(EVENT_TYPES)}",
                code="bad_request",
                status=400,
            )
        for name in units:
            self.manager.runner(name)  # UnknownUnitError naming close matches
        every_unit = ALL_LOGS in logs
        if not every_unit:
            self._check_log_names(logs)
        if log_rate is not None and not 0 < log_rate <= MAX_LOG_RATE:
            raise CommandRefused(
                f"log_rate must be more than 0 and at most {MAX_LOG_RATE:g} lines per second",
                code="bad_request",
                status=400,
            )
        wanted = list(types)
        if logs and wanted and "log" not in wanted:
            wanted.append("log")
        sub = self.manager.events.subscribe(since=since, types=wanted, units=units, logs=bool(logs))
        pump = None
        if logs:
            follow = self.manager.mux.subscribe(
                None if every_unit else list(logs), backlog=backlog, max_bytes=FOLLOW_BYTES
            )
            pump = LogPump(sub, follow, rate=log_rate)
        return _EventFeed(sub, pump)

    def events_info(self) -> dict[str, object]:
        hub = self.manager.events
        return {
            "epoch": hub.epoch,
            "last_seq": hub.last_seq,
            "subscribers": hub.subscribers,
            "dropped": hub.dropped,
        }

    def shutdown(self) -> None:
        log.info("shutdown requested over the control socket")
        # Exactly what SIGTERM does: pid1's signal task takes it from here.
        os.kill(os.getpid(), _signal.SIGTERM)

    # ---- transient units ------------------------------------------------------------------

    async def add_transient(self, name: str, toml: str) -> TransientResult:
        unit = await add_transient(self.reloader, name, toml)
        runner = self.manager.runner(unit.name)
        return TransientResult(name, runner.state.value, runner.sm.cause)

    async def remove_transient(self, name: str) -> TransientResult:
        await remove_transient(self.reloader, name)
        return TransientResult(name, State.INACTIVE.value, "removed over the control API")
