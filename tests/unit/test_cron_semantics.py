"""Schedule semantics of crontab lines, table-driven, against crontab(5) and cron(8).

Every expectation here is written from the manuals (Debian's crontab(5) and cron(8),
quoted beside each row), not from the engine: a crontab line is read by
``vastinit.config.crontab`` into a unit, and its fire times are computed by the engine
(``next_fire``; the ``CronTimer`` on a fake clock for the DST days) and compared.
Where the engine differs from the manual the row is ``xfail(strict=True)``, so the
difference is recorded (docs/units.md, "cron, as you know it") and noticed if it changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.unit.test_cron_scheduler import running
from vastinit.config import load_units
from vastinit.config.crontab import CrontabPaths, Crontabs
from vastinit.cron.expression import next_fire
from vastinit.cron.scheduler import CronTimer, FakeClock
from vastinit.model import Schedule

# 2024-01-01 is a Monday; the search starts just before its midnight.
START = "2023-12-31T23:59:30"


def schedule_of(tmp_path: Path, line: str, tz: str = "UTC") -> Schedule:
    """The schedule of the crontab line ``line`` (system format, user ``root``)."""
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir(exist_ok=True)
    (cron_d / "t").write_text(f"{line} root true\n")
    (cron_d / "t").chmod(0o644)
    paths = CrontabPaths(
        system=tmp_path / "none", cron_d=cron_d, spool=tmp_path / "none", localtime=tmp_path / "x"
    )
    crontabs = Crontabs(paths, environ={"TZ": tz})
    units = load_units([tmp_path / "units"], crontabs)
    assert not crontabs.take_diagnostics()
    schedule = units["cron.d-t-1"].schedule
    assert schedule is not None
    return schedule


def fires(schedule: Schedule, start: str, count: int) -> list[str]:
    """The first ``count`` fire times after ``start`` (local, naive ISO text), local."""
    zone = ZoneInfo(schedule.timezone)
    at = datetime.fromisoformat(start).replace(tzinfo=zone)
    out = []
    for _ in range(count):
        nxt = next_fire(schedule.cron, schedule.timezone, at)
        assert nxt is not None
        at = nxt
        out.append(nxt.astimezone(zone).strftime("%Y-%m-%d %H:%M %a"))
    return out


TABLE = [
    # "run five minutes after midnight, every day"
    ("5 0 * * *", ["2024-01-01 00:05 Mon", "2024-01-02 00:05 Tue", "2024-01-03 00:05 Wed"]),
    # "run at 2:15pm on the first of every month"
    ("15 14 1 * *", ["2024-01-01 14:15 Mon", "2024-02-01 14:15 Thu", "2024-03-01 14:15 Fri"]),
    # "run at 10 pm on weekdays" (a range: "1-5")
    (
        "0 22 * * 1-5",
        [
            "2024-01-01 22:00 Mon",
            "2024-01-02 22:00 Tue",
            "2024-01-03 22:00 Wed",
            "2024-01-04 22:00 Thu",
            "2024-01-05 22:00 Fri",
            "2024-01-08 22:00 Mon",
        ],
    ),
    # "run 23 minutes after midn, 2am, 4am ..., everyday" (a step over a range)
    ("23 0-23/2 * * *", ["2024-01-01 00:23 Mon", "2024-01-01 02:23 Mon", "2024-01-01 04:23 Mon"]),
    # "run at 5 after 4 every sunday" (a name)
    ("5 4 * * sun", ["2024-01-07 04:05 Sun", "2024-01-14 04:05 Sun"]),
    # "8-11 for an 'hours' entry specifies execution at hours 8, 9, 10 and 11"
    (
        "0 8-11 * * *",
        [
            "2024-01-01 08:00 Mon",
            "2024-01-01 09:00 Mon",
            "2024-01-01 10:00 Mon",
            "2024-01-01 11:00 Mon",
            "2024-01-02 08:00 Tue",
        ],
    ),
    # Lists: "1,2,5,9"; "0-4,8-12"
    ("0 1,2,5,9 * * *", [f"2024-01-01 0{h}:00 Mon" for h in (1, 2, 5, 9)]),
    (
        "0 0-4,8-12 * * *",
        [f"2024-01-01 0{h}:00 Mon" for h in (0, 1, 2, 3, 4, 8, 9)] + ["2024-01-01 10:00 Mon"],
    ),
    # Steps: "*/2" in hours is every two hours; here "*/20" minutes
    ("*/20 * * * *", ["2024-01-01 00:00 Mon", "2024-01-01 00:20 Mon", "2024-01-01 00:40 Mon"]),
    # "Names can also be used for the 'month' and 'day of week' fields ... Case does not matter"
    ("0 0 1 JAN,jul *", ["2024-01-01 00:00 Mon", "2024-07-01 00:00 Mon", "2025-01-01 00:00 Wed"]),
    ("0 12 * * SAT", ["2024-01-06 12:00 Sat", "2024-01-13 12:00 Sat"]),
    # "day of week 0-7 (0 or 7 is Sunday)"
    ("0 0 * * 7", ["2024-01-07 00:00 Sun", "2024-01-14 00:00 Sun"]),
    ("0 0 * * 0", ["2024-01-07 00:00 Sun", "2024-01-14 00:00 Sun"]),
    # "30 4 1,15 * 5 would cause a command to be run at 4:30 am on the 1st and 15th of each
    # month, plus every Friday" (both day fields restricted: either matches)
    (
        "30 4 1,15 * 5",
        [
            "2024-01-01 04:30 Mon",
            "2024-01-05 04:30 Fri",
            "2024-01-12 04:30 Fri",
            "2024-01-15 04:30 Mon",
            "2024-01-19 04:30 Fri",
            "2024-01-26 04:30 Fri",
            "2024-02-01 04:30 Thu",
            "2024-02-02 04:30 Fri",
        ],
    ),
    (
        "0 0 13 * fri",
        [
            "2024-01-05 00:00 Fri",
            "2024-01-12 00:00 Fri",
            "2024-01-13 00:00 Sat",
            "2024-01-19 00:00 Fri",
        ],
    ),
    # One day field "*": only the other one counts.
    ("0 0 13 * *", ["2024-01-13 00:00 Sat", "2024-02-13 00:00 Tue"]),
    ("0 0 * * fri", ["2024-01-05 00:00 Fri", "2024-01-12 00:00 Fri"]),
    # A day that exists only in leap years.
    ("0 0 29 2 *", ["2024-02-29 00:00 Thu", "2028-02-29 00:00 Tue"]),
    # The @ forms: "@yearly Run once a year, '0 0 1 1 *'" ... "@hourly '0 * * * *'"
    ("@yearly", ["2024-01-01 00:00 Mon", "2025-01-01 00:00 Wed"]),
    ("@annually", ["2024-01-01 00:00 Mon", "2025-01-01 00:00 Wed"]),
    ("@monthly", ["2024-01-01 00:00 Mon", "2024-02-01 00:00 Thu"]),
    ("@weekly", ["2024-01-07 00:00 Sun", "2024-01-14 00:00 Sun"]),
    ("@daily", ["2024-01-01 00:00 Mon", "2024-01-02 00:00 Tue"]),
    ("@midnight", ["2024-01-01 00:00 Mon", "2024-01-02 00:00 Tue"]),
    ("@hourly", ["2024-01-01 00:00 Mon", "2024-01-01 01:00 Mon"]),
    # crontab(5): the OR applies when both fields are restricted, "i.e., do not contain
    # the '*' character"; "*/2" contains it, so both must match: odd days that are Mondays.
    (
        "0 0 */2 * mon",
        ["2024-01-01 00:00 Mon", "2024-01-15 00:00 Mon", "2024-01-29 00:00 Mon"],
    ),
]


@pytest.mark.parametrize(("expr", "want"), TABLE)
def test_fire_times_as_the_manual_says(tmp_path: Path, expr: str, want: list[str]) -> None:
    assert fires(schedule_of(tmp_path, expr), START, len(want)) == want


def test_reboot_has_no_clock_time(tmp_path: Path) -> None:
    schedule = schedule_of(tmp_path, "@reboot")
    assert schedule.cron == "@reboot"
    assert next_fire(schedule.cron, "UTC", datetime.now(UTC)) is None


def test_local_time_is_the_zone_of_tz(tmp_path: Path) -> None:
    schedule = schedule_of(tmp_path, "0 9 * * *", tz="Asia/Tokyo")
    first = next_fire(schedule.cron, schedule.timezone, datetime(2023, 12, 31, 23, tzinfo=UTC))
    assert first == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 JST


# --- DST days, on the engine's timer with an injected clock ---------------------------------
# cron(8): "If the time has moved forwards, those jobs which would have run in the time that
# was skipped will be run soon after the change. Conversely, if the time has moved backwards
# by less than 3 hours, those jobs that fall into the repeated time will not be re-run. Only
# jobs that run at a particular time (not specified as @hourly, nor with '*' in the hour or
# minute specifier) are affected. Jobs which are specified with wildcards are run based on the
# new time immediately."

DST = [
    # Europe/Berlin 2024-03-31: 02:00 CET -> 03:00 CEST. 02:30 is skipped: run soon after.
    ("30 2 * * *", "2024-03-30T23:00", ["2024-03-31T01:00", "2024-04-01T00:30"]),
    # A wildcard job runs on the new time: every 30 real minutes, no slot in the gap.
    (
        "*/30 * * * *",
        "2024-03-30T23:50",
        ["2024-03-31T00:00", "2024-03-31T00:30", "2024-03-31T01:00", "2024-03-31T01:30"],
    ),
    # 2024-10-27: 03:00 CEST -> 02:00 CET. A wildcard job: every real hour.
    (
        "0 * * * *",
        "2024-10-26T23:30",
        ["2024-10-27T00:00", "2024-10-27T01:00", "2024-10-27T02:00", "2024-10-27T03:00"],
    ),
    pytest.param(
        # 02:30 comes twice (00:30 and 01:30 UTC): "will not be re-run".
        "30 2 * * *",
        "2024-10-26T22:00",
        ["2024-10-27T00:30", "2024-10-28T01:30"],
        marks=pytest.mark.xfail(
            strict=True, reason="the engine (croniter) runs a fixed time in the repeated hour twice"
        ),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("expr", "start_utc", "want_utc"), DST)
async def test_dst_days_on_an_injected_clock(
    tmp_path: Path, expr: str, start_utc: str, want_utc: list[str]
) -> None:
    schedule = schedule_of(tmp_path, expr, tz="Europe/Berlin")
    clock = FakeClock(datetime.fromisoformat(start_utc).replace(tzinfo=UTC))
    timer = CronTimer(schedule, clock)
    last = datetime.fromisoformat(want_utc[-1]).replace(tzinfo=UTC)
    async with running(timer, clock) as fired:
        await clock.run_for((last - clock.wall()).total_seconds() + 1)
    got = [d.strftime("%Y-%m-%dT%H:%M") for d in fired.due]
    assert got == want_utc
