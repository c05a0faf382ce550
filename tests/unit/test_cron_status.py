"""What config and status see of a schedule: the forms accepted, a next run kept current."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
import pytest

from vastinit.cron.expression import MACROS, cron_problem
from vastinit.cron.scheduler import CronTimer, FakeClock, settle
from vastinit.model import Schedule

HOUR = 3600.0


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the forms the spec allows -------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/5 * * * *",
        "0,30 8-18/2 1,15 * 0",
        "0 9 * JAN-MAR mon-fri",
        "0 0 * * 7",
        " 30 3 * * * ",
        *MACROS,
    ],
)
def test_cron_problem_accepts_five_fields_and_the_five_words(expr: str) -> None:
    assert cron_problem(expr, "UTC") is None


@pytest.mark.parametrize(
    "expr",
    [
        "* * * *",  # 4 fields
        "0 * * * * *",  # croniter's seconds field
        "0 0 1 1 * 2030",  # a year field
        "@yearly",
        "@annually",
        "@midnight",
        "@every 5m",
        "0 0 L * *",  # croniter extensions: last day, weekday, nth weekday, "?", hash
        "0 0 1W * *",
        "0 0 * * 1#2",
        "0 0 ? * *",
        "H * * * *",
        "0 0 * JANUARY *",
        "0 0 1 mon *",  # a day name in the month field
        "0 0 1 * jan",
        "",
    ],
)
def test_cron_problem_refuses_anything_else_and_lists_the_allowed_forms(expr: str) -> None:
    problem = cron_problem(expr, "UTC")
    assert problem is not None and problem.startswith("invalid cron expression"), problem
    assert "5 fields (minute hour day-of-month month day-of-week" in problem
    assert "@hourly, @daily, @weekly, @monthly, @reboot" in problem


def test_cron_problem_refuses_an_impossible_date_and_an_unknown_zone() -> None:
    assert cron_problem("0 0 31 2 *", "UTC") == "cron expression '0 0 31 2 *' never fires"
    problem = cron_problem("0 0 * * *", "Europe/Atlantis")
    assert problem is not None and problem.startswith("unknown time zone 'Europe/Atlantis'")


# --- next run for status ---------------------------------------------------------------------


@asynccontextmanager
async def waiting(timer: CronTimer) -> AsyncIterator[list[datetime]]:
    """Run ``timer.wait_next`` in a loop as the engine does; yields the due times seen."""
    due: list[datetime] = []

    async def loop() -> None:
        while True:
            due.append(await timer.wait_next())

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await settle()
        yield due
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_next_run_is_published_after_each_fire_and_after_a_clock_correction() -> None:
    clock = FakeClock(utc("2024-01-01T12:01"))
    published: list[datetime | None] = []
    timer = CronTimer(Schedule("*/5 * * * *", run_on_start=True), clock, on_next=published.append)
    assert timer.next_run_at() == utc("2024-01-01T12:01")
    async with waiting(timer) as due:
        # The start run is taken: status now shows the first fire time.
        assert due == [utc("2024-01-01T12:01")] and published[-1] == utc("2024-01-01T12:05")
        await clock.run_for(4 * 60)
        assert due[-1] == utc("2024-01-01T12:05") and published[-1] == utc("2024-01-01T12:10")
        # A clock corrected 5 h back: no run is due, but the next run moves; status follows
        # within the timer's one-minute look at the wall clock, not at the old 12:10.
        clock.step_wall(-5 * HOUR)
        await clock.run_for(60)
        assert published[-1] == utc("2024-01-01T07:10")
        assert len(due) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_reboot_publishes_no_next_run_once_it_has_run() -> None:
    clock = FakeClock(utc("2024-01-01T12:00"))
    published: list[datetime | None] = []
    timer = CronTimer(Schedule("@reboot"), clock, on_next=published.append)
    async with waiting(timer) as due:
        assert due == [utc("2024-01-01T12:00")]
        assert published[-1] is None and timer.next_run_at() is None
