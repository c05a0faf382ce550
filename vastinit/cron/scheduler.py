"""When a ``type = "cron"`` unit's next run is due, on an injectable clock; overlap and run books.

Fire times are wall-clock times (``vastinit.cron.expression``); this module turns them into
sleeps and decides what a jumping wall clock means.  The policy, in one place:

- **Exact wake-ups, no busy polling.**  The timer sleeps on the monotonic clock until the next
  fire time, but never longer than ``max_sleep`` (60 s) at a stretch, then re-reads the wall
  clock.  So an idle timer wakes at most once a minute, a fire time is hit on the dot, and a
  wall-clock step or a suspend is noticed within a minute.
- **Never early.**  A run is due only once the wall clock has reached its fire time.
- **Forward jumps** (NTP step, suspend/resume, a stalled host): the fire times jumped over are
  coalesced into at most ONE run, for the latest of them, and only if that one is at most
  ``tolerance`` (3 h, cronie's threshold) late; past that they are all dropped, because a run
  hours off its slot (a nightly job at noon) is more likely to hurt than to help.  Either way
  it is reported (``on_note``) and counted in ``CronTimer.missed``.  Never a burst.
- **Backward jumps** of up to ``tolerance``: a fire time that already ran does not run again;
  the schedule resumes once the wall clock passes the point it had reached.  A larger backward
  jump is taken as the correction of a clock that was wrong: the schedule restarts from the
  new time, so a ``*/5`` job is not silenced for a day.

``decide`` is that policy as a pure function; ``CronTimer`` is the loop around it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel
import structlog

from vastinit.cron.expression import count_fires, is_reboot, last_fire, next_fire
from vastinit.model import Overlap, Schedule

CLOCK_OFFSET_ENV = "VASTINIT_CLOCK_OFFSET"
DEFAULT_TOLERANCE = 3 * 3600.0  # cronie treats clock changes under 3 h as jumps, over as fixes
DEFAULT_MAX_SLEEP = 60.0  # cron's own resolution: a jump is noticed within one cron minute
_COUNT_LIMIT = 1000  # missed fire times counted for the log; bounded so a jump of years is cheap
_SETTLE_YIELDS = 20  # FakeClock: zero-time yields before checking that all tasks are blocked
_LATE_NOTE = 2.0  # seconds late before a run is worth a note (normal wake-ups are ms late)

_log = structlog.get_logger("vastinit.cron.scheduler")


class Clock(Protocol):
    """The two clocks a timer needs, and a way to sleep on the steady one."""

    def wall(self) -> datetime:
        """The wall-clock time now, aware, in UTC (it may jump: NTP steps, suspend)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (it may stand still while the host sleeps)."""
        ...

    async def sleep_until_monotonic(self, t: float) -> None:
        """Return once ``monotonic()`` has reached ``t`` (at once if it already has)."""
        ...


def clock_offset_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The test-only wall-clock offset in seconds from ``VASTINIT_CLOCK_OFFSET`` (0.0 if unset)."""
    text = (os.environ if environ is None else environ).get(CLOCK_OFFSET_ENV, "").strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{CLOCK_OFFSET_ENV}={text!r} is not a number of seconds (e.g. 12.5 or -30)"
        ) from None


def offset_for_due_in(seconds: float, now: datetime | None = None) -> float:
    """The ``VASTINIT_CLOCK_OFFSET`` (in [0, 60)) that makes a ``* * * * *`` job due in ``seconds``.

    Test-only: an integration test sets it so that the daemon's "now" is e.g. hh:mm:58 and
    a per-minute job fires about two seconds later, instead of waiting for a real minute.
    """
    now = datetime.now(UTC) if now is None else now
    into_minute = now.second + now.microsecond / 1e6
    return ((60.0 - seconds) - into_minute) % 60.0


class SystemClock:
    """The real clocks: UTC wall time (plus the test-only offset) and ``time.monotonic``.

    ``offset`` (seconds, float) is added to the wall clock only; when None it is read from
    ``VASTINIT_CLOCK_OFFSET``.  It exists for integration tests, which use it to make a job
    due within a couple of seconds (see ``offset_for_due_in``); nothing else should set it.
    """

    def __init__(self, offset: float | None = None) -> None:
        self.offset = clock_offset_from_env() if offset is None else offset

    def wall(self) -> datetime:
        """UTC now, shifted by the test-only offset."""
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        """``time.monotonic()``: the clock asyncio's own timers run on."""
        return time.monotonic()

    async def sleep_until_monotonic(self, t: float) -> None:
        """Sleep on the event loop's timer until ``time.monotonic()`` reaches ``t``."""
        await anyio.sleep(max(0.0, t - time.monotonic()))


class FakeClock:
    """A clock for tests: time moves only when told, and wall and monotonic can move apart.

    ``advance`` is time passing (both clocks), ``step_wall`` an NTP step (wall only; negative
    goes back), ``suspend`` a host asleep (wall moves, monotonic stands still, as Linux's
    CLOCK_MONOTONIC does).  Sleepers wake when monotonic time is advanced past their deadline.
    """

    def __init__(self, wall: datetime, monotonic: float = 1000.0) -> None:
        if wall.tzinfo is None:
            raise ValueError("FakeClock needs an aware wall time")
        self._wall = wall.astimezone(UTC)
        self._mono = monotonic
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self.sleeps = 0  # sleeps that had to wait: lets tests prove there is no busy polling

    def wall(self) -> datetime:
        """The fake wall time, aware, in UTC."""
        return self._wall

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._mono

    async def sleep_until_monotonic(self, t: float) -> None:
        """Wait until the fake monotonic time has been advanced to ``t``."""
        if t <= self._mono:
            await anyio.lowlevel.checkpoint()
            return
        self.sleeps += 1
        entry = (t, anyio.Event())
        self._sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            self._sleepers.remove(entry)

    @property
    def deadlines(self) -> list[float]:
        """The monotonic deadlines of the tasks sleeping now, earliest first."""
        return sorted(t for t, _ in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks at once; wake every sleeper now due."""
        if seconds < 0:
            raise ValueError("time does not run backwards; use step_wall for a wall-clock step")
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)
        for t, event in self._sleepers:
            if t <= self._mono:
                event.set()

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (negative: back), as NTP or an operator would."""
        self._wall += timedelta(seconds=seconds)

    def suspend(self, seconds: float) -> None:
        """The host sleeps ``seconds``: the wall clock moves on, the monotonic clock does not."""
        self.step_wall(seconds)

    async def run_for(self, seconds: float) -> None:
        """Let ``seconds`` pass smoothly: wake each sleeper at its exact deadline, in order.

        Between steps every task is allowed to run until it blocks, so a task woken at one
        deadline can register the next before time moves on.
        """
        end = self._mono + seconds
        while True:
            await settle()
            due = [t for t in self.deadlines if t <= end]
            if not due:
                break
            self.advance(due[0] - self._mono)
        self.advance(end - self._mono)
        await settle()


async def settle() -> None:
    """Return once every other task is blocked (tests: let woken tasks run to their next wait)."""
    # wait_all_tasks_blocked alone is exact but polls every 0.1 s of real time while a task is
    # still runnable; a few zero-time yields first let woken tasks block, so it rarely has to.
    for _ in range(_SETTLE_YIELDS):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


@dataclass(frozen=True)
class Decision:
    """What a cron timer does at one look at the wall clock (see ``decide``)."""

    fire_for: datetime | None  # run now, for this scheduled time; None: nothing to run
    cursor: datetime  # every fire time at or before this is dealt with (ran or dropped)
    next_at: datetime | None  # the next fire time after ``cursor``; None: never again
    missed: int  # fire times passed over without a run (counted up to a bound)
    note: str  # why something unusual happened, for the log; "" normally


def decide(expr: str, timezone: str, cursor: datetime, now: datetime, tolerance: float) -> Decision:
    """The clock-jump policy (module docstring) for a schedule that has dealt with ``cursor``.

    All datetimes are aware; ``tolerance`` is in seconds.
    """
    tol = timedelta(seconds=tolerance)
    note = ""
    if cursor - now > tol:  # the wall clock went back further than a jump: it was wrong
        note = (
            f"wall clock is {_span(cursor - now)} behind the last time this schedule reached "
            f"({format_when(cursor)}), more than the {_span(tol)} tolerance: taken as a clock "
            f"correction, the schedule restarts from {format_when(now)}"
        )
        cursor = now
    upcoming = next_fire(expr, timezone, cursor)
    if upcoming is None or upcoming > now:
        return Decision(None, cursor, upcoming, 0, note)
    # At least one fire time has come.  Everything up to `now` is dealt with by this look, so
    # the cursor moves to `now`: whatever croniter says, the next fire is after now (no burst).
    latest = max(upcoming, last_fire(expr, timezone, now) or upcoming)
    passed = count_fires(expr, timezone, cursor, now, _COUNT_LIMIT)
    counted = f"{passed}+" if passed >= _COUNT_LIMIT else str(passed)
    after = next_fire(expr, timezone, now)
    late = now - latest
    if late > tol:
        note = _join(
            note,
            f"missed {counted} run(s) due {format_when(upcoming)} .. {format_when(latest)} "
            f"(wall clock jump or suspend); the latest is {_span(late)} late, "
            f"more than the {_span(tol)} tolerance, so none runs; next at {format_when(after)}",
        )
        return Decision(None, now, after, max(passed, 1), note)
    if passed > 1:
        note = _join(
            note,
            f"wall clock passed {counted} run times "
            f"({format_when(upcoming)} .. {format_when(latest)}) at once "
            f"(clock jump or suspend): running once, for {format_when(latest)}",
        )
    elif late.total_seconds() > _LATE_NOTE:
        note = _join(
            note,
            f"running {_span(late)} late for {format_when(latest)} "
            "(clock jump, suspend or a stalled host)",
        )
    return Decision(latest, now, after, max(passed - 1, 0), note)


class CronTimer:
    """Says when a cron unit's next run is due; construct it when the unit enters ``scheduled``.

    Call ``wait_next`` in a loop from a task of its own (one waiter at a time), and let the
    overlap rule (``CronRuns.admit``) decide about each run: a timer that is not waited on
    while a run is in progress would see the fire times of that period as a clock jump.
    ``on_note`` gets what is worth logging (jumps, late runs); ``on_next`` gets the new
    ``next_run_at()`` each time it may have changed, so a status display never goes stale.
    """

    def __init__(
        self,
        schedule: Schedule,
        clock: Clock | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        max_sleep: float = DEFAULT_MAX_SLEEP,
        on_note: Callable[[str], None] | None = None,
        on_next: Callable[[datetime | None], None] | None = None,
    ) -> None:
        if max_sleep <= 0:
            raise ValueError("max_sleep must be positive")
        self._schedule = schedule
        self._clock: Clock = SystemClock() if clock is None else clock
        self._tolerance = tolerance
        self._max_sleep = max_sleep
        self._on_note = on_note
        self._on_next = on_next
        self._cursor = self._clock.wall()
        # run_on_start, and @reboot (whose only run is the one at start), fire at once.
        self._start_pending = schedule.run_on_start or is_reboot(schedule.cron)
        self._next = next_fire(schedule.cron, schedule.timezone, self._cursor)
        self.missed = 0  # fire times passed over because of clock jumps

    def next_run_at(self) -> datetime | None:
        """When the next run is due (UTC, for status); None if never again (``@reboot`` done)."""
        return self._cursor if self._start_pending else self._next

    async def wait_next(self) -> datetime:
        """Return when the next run is due, with the scheduled time (UTC) it is due for.

        The first call returns at once for ``run_on_start`` or ``@reboot`` (with the start
        time).  When no fire time remains (``@reboot`` after its run) it never returns, until
        cancelled.
        """
        if self._start_pending:
            self._start_pending = False
            self._publish()
            await anyio.lowlevel.checkpoint()
            return self._cursor
        while True:
            now = self._clock.wall()
            if self._idle(now):
                # Nothing due and no backward jump: `decide` would say so too (the cached
                # next fire time is the one after the cursor); skip its croniter work, so
                # that a woken idle timer costs microseconds, not ~0.1 ms per schedule.
                await self._sleep_toward(now)
                continue
            d = decide(
                self._schedule.cron, self._schedule.timezone, self._cursor, now, self._tolerance
            )
            self._cursor, self._next = d.cursor, d.next_at
            self.missed += d.missed
            self._publish()
            if d.note:
                self._note(d.note)
            if d.fire_for is not None:
                await anyio.lowlevel.checkpoint()  # a caller's loop must yield, even when due now
                return d.fire_for
            if d.next_at is None:
                await anyio.sleep_forever()
                raise AssertionError("unreachable: sleep_forever returned")
            await self._sleep_toward(now)

    def _idle(self, now: datetime) -> bool:
        """Whether ``decide`` at ``now`` could only say "nothing to run, sleep on": the next
        fire time (always ``next_fire`` of the cursor) is ahead and the wall clock has not
        gone back past the tolerance."""
        nxt = self._next
        return (
            nxt is not None
            and now < nxt
            and (self._cursor - now).total_seconds() <= self._tolerance
        )

    async def _sleep_toward(self, now: datetime) -> None:
        """Sleep toward the next fire time on the steady clock, but look at the wall again
        after at most max_sleep: the wall clock may step or the host sleep meanwhile."""
        assert self._next is not None
        wait = min((self._next - now).total_seconds(), self._max_sleep)
        await self._clock.sleep_until_monotonic(self._clock.monotonic() + wait)

    def _publish(self) -> None:
        if self._on_next is not None:
            self._on_next(self.next_run_at())

    def _note(self, text: str) -> None:
        if self._on_note is not None:
            self._on_note(text)
        else:
            _log.warning("cron schedule", cron=self._schedule.cron, note=text)


def overlap_refusal(policy: Overlap, due: datetime, running_since: datetime | None) -> str | None:
    """Why the run due at ``due`` must not start (``skip`` and a run in progress), else None."""
    if policy is Overlap.ALLOW or running_since is None:
        return None
    return (
        f"run due {format_when(due)} skipped: the run started {format_when(running_since)} "
        f'is still going (overlap = "skip"; "allow" would run them side by side)'
    )


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a cron unit, for status."""

    started: datetime  # wall time, UTC
    duration: float  # seconds, measured on the monotonic clock
    exit_code: int


class CronRuns:
    """One cron unit's run book: the overlap decision, skipped runs, and what status shows.

    The engine asks ``admit`` at each due time, calls ``started`` when it spawns the run and
    ``finished`` when the run is reaped; all times are passed in, so this stays pure.
    """

    def __init__(self, overlap: Overlap) -> None:
        self.overlap = overlap
        self.skipped = 0
        self.last_run: RunRecord | None = None  # the most recently finished run
        self._running: dict[int, tuple[datetime, float]] = {}
        self._tokens = 0

    @property
    def running(self) -> int:
        """How many runs are in progress."""
        return len(self._running)

    @property
    def running_since(self) -> datetime | None:
        """The start of the oldest run in progress, or None when none is."""
        return min((w for w, _ in self._running.values()), default=None)

    @property
    def last_start(self) -> datetime | None:
        """The start of the most recent run, in progress or finished (for status)."""
        starts = [w for w, _ in self._running.values()]
        if self.last_run is not None:
            starts.append(self.last_run.started)
        return max(starts, default=None)

    def admit(self, due: datetime) -> str | None:
        """None if the run due at ``due`` may start; else why not (for the log), counted."""
        reason = overlap_refusal(self.overlap, due, self.running_since)
        if reason is not None:
            self.skipped += 1
        return reason

    def started(self, wall: datetime, monotonic: float) -> int:
        """Record a run that started at ``wall`` (``monotonic``); returns its token."""
        self._tokens += 1
        self._running[self._tokens] = (wall.astimezone(UTC), monotonic)
        return self._tokens

    def finished(self, token: int, monotonic: float, exit_code: int) -> RunRecord:
        """Record that run ``token`` ended at ``monotonic`` with ``exit_code``; returns it."""
        wall, started = self._running.pop(token)
        record = RunRecord(wall, max(0.0, monotonic - started), exit_code)
        self.last_run = record
        return record


def format_when(t: datetime | None) -> str:
    """A fire time for logs and status: UTC, to the second; ``never`` for None."""
    return "never" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))]
    return "".join(p for p in parts if not p.startswith("0")) or "0s"


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second
