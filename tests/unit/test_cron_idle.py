"""An idle cron timer's wake-ups are cheap: no croniter work until something may be due.

Fifty crontab lines mean fifty timers, each woken once a minute to look at the wall clock
(scheduler.py): that look must not compute fire times again while nothing has changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import vastinit.cron.scheduler as scheduler
from tests.unit.test_cron_scheduler import running
from vastinit.cron.scheduler import CronTimer, FakeClock
from vastinit.model import Schedule

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_idle_wakeups_compute_no_fire_times_yet_fire_and_jumps_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = scheduler.next_fire

    def counted(*args: Any) -> datetime | None:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(scheduler, "next_fire", counted)
    clock = FakeClock(datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC))
    timer = CronTimer(Schedule(cron="0 3 * * *"), clock)
    calls.clear()  # the one at construction
    async with running(timer, clock) as fired:
        await clock.run_for(10 * 3600)  # 600 wake-ups, none due
        assert clock.sleeps >= 600
        assert calls == [], f"{len(calls)} fire-time computations while idle"
        assert fired.due == []
        # A backward step past the tolerance (3 h before the last look at 12:00:30) is a
        # clock correction: still noticed...
        clock.step_wall(-15 * 3600)
        await clock.run_for(61)
        assert calls, "the wall clock went back 15 h and nothing looked at the schedule"
        await clock.run_for(21 * 3600)  # ...and the next 03:00 still fires
    assert fired.due == [datetime(2024, 1, 2, 3, 0, tzinfo=UTC)]
