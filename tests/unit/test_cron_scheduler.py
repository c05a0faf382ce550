"""Cron timing on a fake clock: exact fires, clock jumps, suspend, DST, overlap, start runs.

Every timer here runs on ``FakeClock``: time moves only when a test moves it, so a day of
schedule takes milliseconds and nothing waits for a real minute.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from vastinit.cron.scheduler import (
    CLOCK_OFFSET_ENV,
    CronRuns,
    CronTimer,
    FakeClock,
    SystemClock,
    clock_offset_from_env,
    decide,
    offset_for_due_in,
    overlap_refusal,
    settle,
)
from vastinit.model import Overlap, Schedule

pytestmark = pytest.mark.anyio

HOUR = 3600.0
TOLERANCE = 3 * HOUR


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def utc(text: str) -> datetime:
    """An aware UTC datetime from ``YYYY-MM-DDTHH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Fired:
    """What a timer loop saw: each due time, and the fake wall time when it was returned."""

    def __init__(self) -> None:
        self.due: list[datetime] = []
        self.at: list[datetime] = []


@asynccontextmanager
async def running(timer: CronTimer, clock: FakeClock) -> AsyncIterator[Fired]:
    """Run ``timer.wait_next`` in a loop, as the engine does, for the body of the block."""
    fired = Fired()

    async def loop() -> None:
        while True:
            due = await timer.wait_next()
            fired.due.append(due)
            fired.at.append(clock.wall())

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await settle()
        yield fired
        tg.cancel_scope.cancel()


def timer_for(
    cron: str,
    clock: FakeClock,
    notes: list[str] | None = None,
    *,
    timezone: str = "UTC",
    run_on_start: bool = False,
) -> CronTimer:
    """A timer on ``clock``; its clock-jump notes go to ``notes`` when given."""
    sched = Schedule(cron=cron, timezone=timezone, run_on_start=run_on_start)
    sink = notes.append if notes is not None else None
    return CronTimer(sched, clock, on_note=sink)


# --- the pure policy -------------------------------------------------------------------------


def test_decide_waits_for_the_next_fire_time_when_none_has_come() -> None:
    d = decide("*/5 * * * *", "UTC", utc("2024-01-01T12:01"), utc("2024-01-01T12:03"), TOLERANCE)
    assert (d.fire_for, d.next_at, d.missed, d.note) == (None, utc("2024-01-01T12:05"), 0, "")


def test_decide_fires_on_the_dot_without_a_note() -> None:
    d = decide("*/5 * * * *", "UTC", utc("2024-01-01T12:01"), utc("2024-01-01T12:05"), TOLERANCE)
    assert d.fire_for == utc("2024-01-01T12:05")
    assert d.next_at == utc("2024-01-01T12:10")
    assert (d.missed, d.note) == (0, "")


def test_decide_coalesces_a_forward_jump_into_one_run_for_the_latest_time() -> None:
    d = decide("*/5 * * * *", "UTC", utc("2024-01-01T12:01"), utc("2024-01-01T13:02"), TOLERANCE)
    assert d.fire_for == utc("2024-01-01T13:00")
    assert d.missed == 11  # 12:05 .. 12:55 folded into the 13:00 run
    assert d.cursor == utc("2024-01-01T13:02")
    assert d.next_at == utc("2024-01-01T13:05")
    assert "running once" in d.note


def test_decide_drops_runs_that_are_later_than_the_tolerance() -> None:
    d = decide("0 3 * * *", "UTC", utc("2024-01-01T02:00"), utc("2024-01-01T10:00"), TOLERANCE)
    assert d.fire_for is None
    assert d.missed == 1
    assert d.next_at == utc("2024-01-02T03:00")
    assert "tolerance" in d.note


def test_decide_does_not_rerun_times_after_a_small_backward_step() -> None:
    # Fired 12:05, then the wall clock went back to 11:50: 11:55 and 12:00 already ran.
    d = decide("*/5 * * * *", "UTC", utc("2024-01-01T12:05"), utc("2024-01-01T11:50"), TOLERANCE)
    assert d.fire_for is None
    assert d.next_at == utc("2024-01-01T12:10")


def test_decide_restarts_the_schedule_after_a_backward_step_beyond_the_tolerance() -> None:
    d = decide("*/5 * * * *", "UTC", utc("2024-01-02T12:05"), utc("2024-01-01T12:02"), TOLERANCE)
    assert d.fire_for is None
    assert d.next_at == utc("2024-01-01T12:05")
    assert "clock correction" in d.note


# --- the timer on a fake clock ---------------------------------------------------------------


async def test_timer_fires_exactly_at_each_fire_time() -> None:
    clock = FakeClock(utc("2024-01-01T12:01:30"))
    timer = timer_for("*/5 * * * *", clock)
    assert timer.next_run_at() == utc("2024-01-01T12:05")
    async with running(timer, clock) as fired:
        await clock.run_for(14 * 60)
    want = [utc("2024-01-01T12:05"), utc("2024-01-01T12:10"), utc("2024-01-01T12:15")]
    assert fired.due == want
    assert fired.at == want  # woken on the dot, not a poll interval later
    assert timer.next_run_at() == utc("2024-01-01T12:20")


async def test_idle_timer_sleeps_straight_to_the_fire_time_within_the_cap() -> None:
    clock = FakeClock(utc("2024-01-01T12:00:20"), monotonic=500.0)
    timer = timer_for("1 12 * * *", clock)  # 12:01, 40 s away: inside the 60 s cap
    async with running(timer, clock) as fired:
        assert clock.deadlines == [540.0]  # one sleeper, deadline = the fire time exactly
        await clock.run_for(40)
        assert fired.due == [utc("2024-01-01T12:01")]


async def test_idle_timer_wakes_at_most_once_a_minute() -> None:
    clock = FakeClock(utc("2024-01-01T12:00:30"))
    timer = timer_for("@hourly", clock)
    async with running(timer, clock) as fired:
        await clock.run_for(HOUR)
    assert fired.due == [utc("2024-01-01T13:00")]
    assert clock.sleeps <= 61  # ~60 capped sleeps for the hour, never a per-second loop


async def test_forward_jump_over_several_fire_times_runs_once_then_resumes() -> None:
    notes: list[str] = []
    clock = FakeClock(utc("2024-01-01T12:00:10"))
    timer = timer_for("*/5 * * * *", clock, notes)
    async with running(timer, clock) as fired:
        clock.step_wall(HOUR)  # NTP steps the wall clock an hour ahead: 13:00:10
        await clock.run_for(5 * 60)
    assert fired.due == [utc("2024-01-01T13:00"), utc("2024-01-01T13:05")]
    assert fired.at[1] == utc("2024-01-01T13:05")  # back on the dot after the catch-up run
    assert timer.missed == 11
    assert len(notes) == 1 and "running once" in notes[0]


async def test_suspend_runs_the_missed_job_once_on_resume() -> None:
    clock = FakeClock(utc("2024-01-01T02:00"))
    timer = timer_for("0 3 * * *", clock)
    async with running(timer, clock) as fired:
        clock.suspend(2 * HOUR)  # asleep 02:00 -> 04:00; monotonic stands still
        await clock.run_for(60)  # the capped sleep ends a minute after resume
        assert fired.due == [utc("2024-01-01T03:00")]
        assert fired.at == [utc("2024-01-01T04:01")]
        await clock.run_for(2 * HOUR)
    assert fired.due == [utc("2024-01-01T03:00")]  # no second catch-up
    assert timer.next_run_at() == utc("2024-01-02T03:00")


async def test_suspend_past_the_tolerance_skips_the_missed_run_and_says_so() -> None:
    notes: list[str] = []
    clock = FakeClock(utc("2024-01-01T02:00"))
    timer = timer_for("0 3 * * *", clock, notes)
    async with running(timer, clock) as fired:
        clock.suspend(8 * HOUR)  # 03:00 would run 7 h late
        await clock.run_for(2 * HOUR)
    assert fired.due == []
    assert timer.missed == 1
    assert len(notes) == 1 and "tolerance" in notes[0]
    assert timer.next_run_at() == utc("2024-01-02T03:00")


async def test_backward_step_does_not_rerun_a_time_that_already_fired() -> None:
    clock = FakeClock(utc("2024-01-01T12:04"))
    timer = timer_for("*/5 * * * *", clock)
    async with running(timer, clock) as fired:
        await clock.run_for(60)  # 12:05 fires
        clock.step_wall(-10 * 60)  # back to 11:55: 11:55 and 12:00 already ran
        await clock.run_for(15 * 60)  # wall reaches 12:10
    assert fired.due == [utc("2024-01-01T12:05"), utc("2024-01-01T12:10")]
    assert fired.at[1] == utc("2024-01-01T12:10")


async def test_backward_step_beyond_the_tolerance_restarts_from_the_new_time() -> None:
    notes: list[str] = []
    clock = FakeClock(utc("2024-01-02T12:04"))
    timer = timer_for("*/5 * * * *", clock, notes)
    async with running(timer, clock) as fired:
        await clock.run_for(60)  # 2024-01-02 12:05 fires
        clock.step_wall(-24 * HOUR)  # the clock was a day fast
        await clock.run_for(5 * 60)
    assert fired.due == [utc("2024-01-02T12:05"), utc("2024-01-01T12:10")]
    assert any("clock correction" in n for n in notes)


async def test_timer_fires_at_local_time_of_its_timezone() -> None:
    clock = FakeClock(utc("2024-01-10T12:00"))
    timer = timer_for("0 9 * * *", clock, timezone="America/New_York")
    assert timer.next_run_at() == utc("2024-01-10T14:00")  # 09:00 EST
    async with running(timer, clock) as fired:
        await clock.run_for(2 * HOUR)
    assert fired.at == [utc("2024-01-10T14:00")]


async def test_timer_runs_a_0230_job_at_0300_on_spring_forward_night() -> None:
    clock = FakeClock(utc("2024-03-30T23:00"))  # Berlin 00:00 CET, the night of the change
    timer = timer_for("30 2 * * *", clock, timezone="Europe/Berlin")
    async with running(timer, clock) as fired:
        await clock.run_for(4 * HOUR)
    assert fired.at == [utc("2024-03-31T01:00")]  # 03:00 CEST, once


async def test_timer_runs_a_0230_job_twice_on_fall_back_night() -> None:
    clock = FakeClock(utc("2024-10-26T22:00"))  # Berlin 00:00 CEST
    timer = timer_for("30 2 * * *", clock, timezone="Europe/Berlin")
    async with running(timer, clock) as fired:
        await clock.run_for(5 * HOUR)
    assert fired.at == [utc("2024-10-27T00:30"), utc("2024-10-27T01:30")]  # CEST, then CET


async def test_run_on_start_fires_at_once_then_follows_the_schedule() -> None:
    clock = FakeClock(utc("2024-01-01T12:01"))
    timer = timer_for("*/5 * * * *", clock, run_on_start=True)
    assert timer.next_run_at() == utc("2024-01-01T12:01")
    async with running(timer, clock) as fired:
        assert fired.due == [utc("2024-01-01T12:01")]  # before any time passed
        await clock.run_for(4 * 60)
    assert fired.due == [utc("2024-01-01T12:01"), utc("2024-01-01T12:05")]


async def test_reboot_fires_once_at_start_and_never_again() -> None:
    clock = FakeClock(utc("2024-01-01T12:00"))
    timer = timer_for("@reboot", clock)
    async with running(timer, clock) as fired:
        assert fired.due == [utc("2024-01-01T12:00")]
        assert timer.next_run_at() is None
        clock.step_wall(400 * 24 * HOUR)
        await clock.run_for(24 * HOUR)
        assert clock.deadlines == []  # asleep for good, not polling
    assert fired.due == [utc("2024-01-01T12:00")]


# --- overlap ---------------------------------------------------------------------------------


def test_overlap_skip_refuses_a_run_while_the_previous_one_is_going() -> None:
    reason = overlap_refusal(Overlap.SKIP, utc("2024-01-01T12:05"), utc("2024-01-01T12:00"))
    assert reason is not None
    assert "12:05:00" in reason and "12:00:00" in reason and "skip" in reason


@pytest.mark.parametrize(
    ("policy", "running_since"),
    [(Overlap.SKIP, None), (Overlap.ALLOW, None), (Overlap.ALLOW, utc("2024-01-01T12:00"))],
)
def test_overlap_lets_a_run_start(policy: Overlap, running_since: datetime | None) -> None:
    assert overlap_refusal(policy, utc("2024-01-01T12:05"), running_since) is None


def test_run_book_counts_skips_and_reports_the_last_finished_run() -> None:
    runs = CronRuns(Overlap.SKIP)
    assert runs.admit(utc("2024-01-01T12:00")) is None
    token = runs.started(utc("2024-01-01T12:00:01"), monotonic=100.0)
    assert runs.running_since == utc("2024-01-01T12:00:01")
    assert runs.admit(utc("2024-01-01T12:05")) is not None
    assert runs.admit(utc("2024-01-01T12:10")) is not None
    record = runs.finished(token, monotonic=760.5, exit_code=3)
    assert (record.started, record.duration, record.exit_code) == (
        utc("2024-01-01T12:00:01"),
        660.5,
        3,
    )
    assert (runs.skipped, runs.running, runs.last_run) == (2, 0, record)
    assert runs.admit(utc("2024-01-01T12:15")) is None


def test_run_book_with_overlap_allow_tracks_side_by_side_runs() -> None:
    runs = CronRuns(Overlap.ALLOW)
    first = runs.started(utc("2024-01-01T12:00"), monotonic=0.0)
    assert runs.admit(utc("2024-01-01T12:05")) is None
    second = runs.started(utc("2024-01-01T12:05"), monotonic=300.0)
    assert (runs.running, runs.running_since) == (2, utc("2024-01-01T12:00"))
    assert runs.last_start == utc("2024-01-01T12:05")
    runs.finished(second, monotonic=310.0, exit_code=0)
    assert runs.running_since == utc("2024-01-01T12:00")
    runs.finished(first, monotonic=400.0, exit_code=1)
    assert runs.last_run is not None and runs.last_run.exit_code == 1
    assert runs.skipped == 0


async def test_long_run_with_overlap_skip_skips_the_fire_times_it_spans() -> None:
    # The engine's loop in miniature: each due time asks the run book; a run takes 7 minutes.
    clock = FakeClock(utc("2024-01-01T12:04"))
    timer = timer_for("*/5 * * * *", clock)
    runs = CronRuns(Overlap.SKIP)
    started: list[datetime] = []
    reasons: list[str] = []

    async def one_run(token: int) -> None:
        await clock.sleep_until_monotonic(clock.monotonic() + 7 * 60)
        runs.finished(token, clock.monotonic(), exit_code=0)

    async with anyio.create_task_group() as tg:

        async def loop() -> None:
            while True:
                due = await timer.wait_next()
                reason = runs.admit(due)
                if reason is not None:
                    reasons.append(reason)
                    continue
                started.append(due)
                tg.start_soon(one_run, runs.started(clock.wall(), clock.monotonic()))

        tg.start_soon(loop)
        await clock.run_for(16 * 60)  # 12:04 -> 12:20
        tg.cancel_scope.cancel()
    # 12:05 runs until 12:12, so 12:10 is skipped; 12:15 runs until 12:22, so 12:20 is too.
    assert started == [utc("2024-01-01T12:05"), utc("2024-01-01T12:15")]
    assert runs.skipped == 2
    assert ["12:10:00" in reasons[0], "12:20:00" in reasons[1]] == [True, True]
    assert runs.last_run is not None and runs.last_run.duration == 7 * 60
    assert timer.missed == 0  # a skipped run is the overlap rule's, not a clock jump


# --- clocks ----------------------------------------------------------------------------------


async def test_fake_clock_wakes_sleepers_only_when_monotonic_time_passes_them() -> None:
    clock = FakeClock(utc("2024-01-01T00:00"), monotonic=10.0)
    woke: list[float] = []

    async def sleeper(t: float) -> None:
        await clock.sleep_until_monotonic(t)
        woke.append(t)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, 15.0)
        tg.start_soon(sleeper, 20.0)
        await settle()
        clock.suspend(HOUR)  # wall only: nobody wakes
        await settle()
        assert woke == []
        clock.advance(5.0)
        await settle()
        assert woke == [15.0]
        clock.advance(5.0)
    assert woke == [15.0, 20.0]
    assert clock.wall() == utc("2024-01-01T01:00:10")
    with pytest.raises(ValueError):
        clock.advance(-1.0)


def test_clock_offset_is_read_from_the_environment() -> None:
    assert clock_offset_from_env({}) == 0.0
    assert clock_offset_from_env({CLOCK_OFFSET_ENV: " -12.5 "}) == -12.5
    with pytest.raises(ValueError, match=CLOCK_OFFSET_ENV):
        clock_offset_from_env({CLOCK_OFFSET_ENV: "soon"})


def test_system_clock_adds_the_offset_to_the_wall_clock_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CLOCK_OFFSET_ENV, "7200")
    clock = SystemClock()
    mono_before = time.monotonic()
    skew = clock.wall() - datetime.now(UTC)
    assert timedelta(seconds=7199) < skew < timedelta(seconds=7201)
    assert clock.wall().tzinfo is UTC
    assert abs(clock.monotonic() - mono_before) < 1.0


def test_offset_for_due_in_puts_now_just_before_a_minute_boundary() -> None:
    now = utc("2024-01-01T12:00:17.250000")
    offset = offset_for_due_in(2.0, now)
    assert 0.0 <= offset < 60.0
    assert now + timedelta(seconds=offset) == utc("2024-01-01T12:00:58")


async def test_system_clock_sleeps_until_the_monotonic_deadline() -> None:
    clock = SystemClock(offset=0.0)
    deadline = clock.monotonic() + 0.005
    await clock.sleep_until_monotonic(deadline)
    assert time.monotonic() >= deadline
    await clock.sleep_until_monotonic(deadline - 10)  # in the past: returns at once


async def test_timer_on_the_system_clock_fires_when_the_offset_makes_a_job_due() -> None:
    # What an integration test does: shift the daemon's wall clock to just before a minute
    # boundary, so a `* * * * *` job is due in 50 ms instead of up to a minute.
    for _ in range(3):  # a loaded host may cross the boundary before the timer is built
        clock = SystemClock(offset=offset_for_due_in(0.05))
        timer = CronTimer(Schedule(cron="* * * * *"), clock)
        upcoming = timer.next_run_at()
        assert upcoming is not None
        if (upcoming - clock.wall()).total_seconds() < 1.0:
            break
    else:
        pytest.fail("could not place the wall clock just before a minute boundary")
    with anyio.fail_after(5):
        due = await timer.wait_next()
    assert due == upcoming and due.second == 0
    assert clock.wall() >= due  # never early
