"""Readiness and liveness for one unit runner: the prestart and readiness hooks it calls.

Per run: before spawn, a log watcher or notify socket is set up (so nothing the process
says is missed); while the process lives, the readiness probe runs until it passes
(``running`` -> ``ready``) or ``start_timeout`` fails the run; after ready a periodic
readiness probe keeps checking (a failure -> ``running``, no restart) and the liveness
probe runs (``failures`` in a row -> the run fails and the restart policy decides).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING

import anyio

from vastinit.config.values import format_duration
from vastinit.health.log_probe import LogMatcher
from vastinit.health.notify import NotifySocket
from vastinit.health.probes import PERIODIC, ProbeContext, describe, run_probe
from vastinit.health.report import ProbeErrors, ProbeLog
from vastinit.health.result import Outcome, passed
from vastinit.logs.mux import UnitLog
from vastinit.model import (
    READINESS_FAST_CAP,
    READINESS_FAST_FIRST,
    Probe,
    ProbeKind,
    Unit,
    UnitType,
)
from vastinit.proc.spawn import Child

if TYPE_CHECKING:
    from vastinit.supervisor.unit import UnitRunner


class _Run:
    """What one run of a unit needs for its probes, from before spawn to its end."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)  # the unit's environment, for exec probes
        self.matcher: LogMatcher | None = None
        self.notify: NotifySocket | None = None
        self.notified = anyio.Event()  # READY=1 received
        self.main_pid: str | None = None
        self.setup_error: str | None = None
        self.ready_once = False

    def close(self) -> None:
        if self.matcher is not None:
            self.matcher.detach()
        if self.notify is not None:
            self.notify.close()


class UnitHealth:
    """The probes of one unit runner (install with ``setup_runner``)."""

    def __init__(self, runner: UnitRunner) -> None:
        self._runner = runner
        self._run: _Run | None = None

    # ---- before spawn -------------------------------------------------------------------

    def prestart(self, runner: UnitRunner, unit: Unit, env: dict[str, str], ulog: UnitLog) -> None:
        """Set up this run's log watcher or notify socket; adds ``NOTIFY_SOCKET`` to ``env``."""
        if self._run is not None:
            self._run.close()  # the previous spawn failed: its hook never ran to clean up
        run = self._run = _Run(env)
        probe = unit.readiness
        if unit.type is not UnitType.SERVICE or probe is None:
            return
        try:
            if probe.kind is ProbeKind.LOG:
                run.matcher = LogMatcher(str(probe.target))
                run.matcher.attach(ulog)
            elif probe.kind is ProbeKind.NOTIFY:
                run.notify = NotifySocket(lambda m: self._on_notify(run, m), name=unit.name)
                env["NOTIFY_SOCKET"] = run.notify.path
        except re.error as exc:
            run.setup_error = f"readiness.log: invalid regular expression {probe.target!r}: {exc}"
        except OSError as exc:
            run.setup_error = f"cannot create the notify socket: {exc.strerror or exc}"

    def _on_notify(self, run: _Run, message: dict[str, str]) -> None:
        runner = self._runner
        if "STATUS" in message and (message["STATUS"] or None) != runner.status_text:
            runner.status_text = message["STATUS"] or None
            # Startup progress is worth a line; a ready unit's chatter only shows in status.
            level = "debug" if run.ready_once else "info"
            getattr(runner.log, level)("unit status", status=runner.status_text)
        if "MAINPID" in message and message["MAINPID"] != run.main_pid:
            # Recorded only: vastinit keeps supervising the process it started.
            run.main_pid = message["MAINPID"]
            runner.log.info("unit reported its main pid", mainpid=run.main_pid)
        if message.get("READY") == "1":
            run.notified.set()
            if run.ready_once:
                runner.mark_ready("READY=1 received again")
        if message.get("STOPPING") == "1":
            runner.mark_not_ready("unit sent STOPPING=1")

    # ---- while the process lives ----------------------------------------------------------

    async def readiness(self, runner: UnitRunner, unit: Unit, child: Child) -> None:
        """Probe until ready (or fail the run at ``start_timeout``), then keep probing."""
        run = self._run if self._run is not None else _Run(runner.ctx.base_env)
        ctx = ProbeContext(
            reaper=runner.ctx.reaper,
            env=run.env,
            cwd=unit.working_dir,
            user=unit.user,
            group=unit.group,
        )
        errors = ProbeErrors(lambda text: setattr(runner, "probe_error", text))
        try:
            if run.setup_error is not None:
                runner.log.error("cannot probe readiness", error=run.setup_error)
                await runner.fail_run(run.setup_error)
                return
            readiness = unit.readiness
            rlog: ProbeLog | None = None
            if readiness is not None:
                rlog = ProbeLog(
                    runner.log, "readiness", describe(readiness), errors, announce_first=True
                )
                if not await self._until_ready(runner, readiness, child, run, ctx, rlog):
                    return
            run.ready_once = True
            async with anyio.create_task_group() as tg:
                if readiness is not None and rlog is not None and readiness.kind in PERIODIC:
                    tg.start_soon(self._keep_checking, runner, readiness, ctx, rlog)
                if unit.liveness is not None:
                    tg.start_soon(self._liveness, runner, unit.liveness, ctx, errors)
                if run.notify is not None:
                    # Keep the socket open for the whole run: STATUS= and STOPPING=1 still count.
                    tg.start_soon(anyio.sleep_forever)
        finally:
            with anyio.CancelScope(shield=True):
                await ctx.aclose()
            run.close()
            if self._run is run:
                self._run = None

    async def _until_ready(
        self,
        runner: UnitRunner,
        probe: Probe,
        child: Child,
        run: _Run,
        ctx: ProbeContext,
        rlog: ProbeLog,
    ) -> bool:
        """Wait for the first pass and mark the unit ready; False if the run was failed."""
        limit = probe.start_timeout
        left = float("inf") if limit is None else child.started_at + limit - time.monotonic()
        outcome: Outcome | None = None
        took: float | None = None
        with anyio.move_on_after(max(left, 0.0)):
            if probe.kind is ProbeKind.LOG and run.matcher is not None:
                await run.matcher.matched.wait()
                outcome = passed(f"line matched: {(run.matcher.line or '')[:200]}")
            elif probe.kind is ProbeKind.NOTIFY:
                await run.notified.wait()
                outcome = passed("READY=1 received")
            else:
                outcome, took = await _first_pass(probe, ctx, rlog)
        if outcome is None:
            assert limit is not None
            why = rlog.last_error or _silence(probe)
            reason = f"not ready within {format_duration(limit)}: {why}"
            await runner.fail_run(reason)
            return False
        after = time.monotonic() - child.started_at
        rlog.passed(outcome.detail, took, after=format_duration(after))
        runner.mark_ready(f"{describe(probe)}: {outcome.detail}")
        return True

    async def _keep_checking(
        self, runner: UnitRunner, probe: Probe, ctx: ProbeContext, rlog: ProbeLog
    ) -> None:
        """After ready: a failure makes the unit not ready, a pass ready again (no restart)."""
        async for outcome, took in _every_interval(probe, ctx, first_now=False):
            if outcome.ok:
                rlog.passed(outcome.detail, took)
                runner.mark_ready(f"readiness probe passed again: {outcome.detail}")
            else:
                rlog.failed(outcome.detail, level="warning")
                runner.mark_not_ready(f"readiness probe failed: {outcome.detail}")

    async def _liveness(
        self, runner: UnitRunner, probe: Probe, ctx: ProbeContext, errors: ProbeErrors
    ) -> None:
        """``failures`` consecutive failures fail the run (the restart policy decides)."""
        llog = ProbeLog(runner.log, "liveness", describe(probe), errors, announce_first=False)
        async for outcome, took in _every_interval(probe, ctx, first_now=False):
            if outcome.ok:
                llog.passed(outcome.detail, took)
                continue
            llog.failed(outcome.detail, level="warning", limit=probe.failures)
            if llog.failures >= probe.failures:
                await runner.fail_run(
                    f"liveness probe failed {llog.failures} times: {outcome.detail}"
                )
                return


async def _first_pass(probe: Probe, ctx: ProbeContext, rlog: ProbeLog) -> tuple[Outcome, float]:
    """Probe until a pass, fast at first (``starting_delays``); returns the pass and how
    long that attempt took."""
    delays = starting_delays(probe)
    async for outcome, took in _every_interval(probe, ctx, first_now=True, delays=delays):
        if outcome.ok:
            return outcome, took
        rlog.failed(outcome.detail)
    raise AssertionError("unreachable: _every_interval never ends")


def starting_delays(probe: Probe) -> Iterator[float]:
    """The periods between readiness attempts while starting: 50 ms for http and tcp
    probes; for exec ones 50 ms doubling up to ``interval``; never over ``interval``."""
    cap = READINESS_FAST_CAP if probe.kind in (ProbeKind.HTTP, ProbeKind.TCP) else probe.interval
    delay = READINESS_FAST_FIRST
    while True:
        yield min(delay, cap, probe.interval)
        delay *= 2


async def _every_interval(
    probe: Probe, ctx: ProbeContext, *, first_now: bool, delays: Iterator[float] | None = None
) -> AsyncIterator[tuple[Outcome, float]]:
    """Run ``probe`` forever, one attempt every ``interval`` (or each of ``delays`` in
    turn), start to start, so a slow attempt does not stretch the period; yields each
    outcome and how long it took."""
    delay = 0.0 if first_now else probe.interval
    while True:
        await anyio.sleep(delay)
        began = time.monotonic()
        outcome = await run_probe(probe, ctx)
        took = time.monotonic() - began
        yield outcome, took
        period = next(delays) if delays is not None else probe.interval
        delay = max(period - took, 0.0)


def _silence(probe: Probe) -> str:
    if probe.kind is ProbeKind.NOTIFY:
        return "no READY=1 received on $NOTIFY_SOCKET"
    if probe.kind is ProbeKind.LOG:
        return f"no output line matched /{probe.target}/"
    return "the probe never completed"


def setup_runner(runner: UnitRunner) -> None:
    """Install readiness and liveness probing on ``runner`` (its prestart and readiness hooks)."""
    health = UnitHealth(runner)
    runner.prestart_hook = health.prestart
    runner.readiness_hook = health.readiness
