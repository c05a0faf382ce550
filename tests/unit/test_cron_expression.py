"""Cron fire times: croniter's answers, in the unit's time zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from vastinit.cron.expression import count_fires, cron_problem, last_fire, next_fire


def utc(text: str) -> datetime:
    """An aware UTC datetime from ``YYYY-MM-DDTHH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, timezone: str, start: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times after ``start``, each found from the previous one."""
    out: list[datetime] = []
    at = start
    for _ in range(n):
        nxt = next_fire(expr, timezone, at)
        assert nxt is not None, f"{expr} stopped firing after {at}"
        out.append(nxt)
        at = nxt
    return out


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", "2024-01-01T12:01:30", ["12:05", "12:10", "12:15"]),
        ("*/5 * * * *", "2024-01-01T12:05:00", ["12:10", "12:15", "12:20"]),  # strictly after
        ("@hourly", "2024-01-01T12:00:01", ["13:00", "14:00", "15:00"]),
        ("@daily", "2024-01-01T12:00", ["2024-01-02T00:00", "2024-01-03T00:00"]),
        # 2024-01-01 is a Monday; @weekly is Sunday midnight.
        ("@weekly", "2024-01-01T12:00", ["2024-01-07T00:00", "2024-01-14T00:00"]),
        ("@monthly", "2024-01-15T00:00", ["2024-02-01T00:00", "2024-03-01T00:00"]),
        ("0 0 29 2 *", "2024-03-01T00:00", ["2028-02-29T00:00"]),
    ],
)
def test_next_fire_follows_the_expression_in_utc(
    expr: str, after: str, expected: list[str]
) -> None:
    start = utc(after)
    want = [utc(e if "T" in e else f"{after[:10]}T{e}") for e in expected]
    assert fires(expr, "UTC", start, len(want)) == want


@pytest.mark.parametrize(
    ("expr", "timezone", "after", "expected"),
    [
        # New York is UTC-5 in winter and UTC-4 in summer: 09:00 local moves in UTC.
        ("0 9 * * *", "America/New_York", "2024-01-10T00:00", "2024-01-10T14:00"),
        ("0 9 * * *", "America/New_York", "2024-07-10T00:00", "2024-07-10T13:00"),
        ("@daily", "Asia/Kolkata", "2024-01-10T00:00", "2024-01-10T18:30"),  # UTC+05:30
        ("0 9 * * *", "Asia/Tokyo", "2024-01-09T23:00", "2024-01-10T00:00"),  # UTC+9
    ],
)
def test_next_fire_reads_fields_as_local_time_of_the_timezone(
    expr: str, timezone: str, after: str, expected: str
) -> None:
    assert next_fire(expr, timezone, utc(after)) == utc(expected)


def test_next_fire_returns_utc_whatever_zone_the_start_is_in() -> None:
    berlin = datetime(2024, 1, 10, 8, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    got = next_fire("0 9 * * *", "Europe/Berlin", berlin)
    assert got == utc("2024-01-10T08:00")
    assert got is not None and got.tzinfo is UTC


def test_next_fire_of_reboot_is_none() -> None:
    assert next_fire("@reboot", "UTC", utc("2024-01-01T00:00")) is None
    assert last_fire(" @reboot ", "UTC", utc("2024-01-01T00:00")) is None


def test_next_fire_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire("* * * * *", "UTC", datetime(2024, 1, 1))


# --- DST.  Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST; 2024-10-27 03:00 CEST -> 02:00 CET.
# America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.


def test_spring_forward_runs_a_nonexistent_0230_job_once_at_0300_in_berlin() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", utc("2024-03-30T12:00"), 3)
    # 01:00 UTC is 03:00 CEST, the first instant after the gap; then 02:30 CEST as usual.
    assert got == [utc("2024-03-31T01:00"), utc("2024-04-01T00:30"), utc("2024-04-02T00:30")]


def test_spring_forward_runs_a_nonexistent_0230_job_once_at_0300_in_new_york() -> None:
    got = fires("30 2 * * *", "America/New_York", utc("2024-03-09T12:00"), 2)
    assert got == [utc("2024-03-10T07:00"), utc("2024-03-11T06:30")]  # 03:00 EDT, 02:30 EDT


def test_spring_forward_interval_job_keeps_real_time_spacing() -> None:
    got = fires("*/30 * * * *", "Europe/Berlin", utc("2024-03-31T00:15"), 3)
    # 01:30 CET, then 03:00 CEST (02:00 and 02:30 do not exist), then 03:30 CEST.
    assert got == [utc("2024-03-31T00:30"), utc("2024-03-31T01:00"), utc("2024-03-31T01:30")]


def test_fall_back_runs_a_0230_job_twice_in_berlin() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", utc("2024-10-26T12:00"), 3)
    # 02:30 CEST (00:30 UTC), 02:30 CET (01:30 UTC), then once a day again.
    assert got == [utc("2024-10-27T00:30"), utc("2024-10-27T01:30"), utc("2024-10-28T01:30")]
    tz = ZoneInfo("Europe/Berlin")
    assert [g.astimezone(tz).strftime("%H:%M %Z") for g in got[:2]] == ["02:30 CEST", "02:30 CET"]


def test_fall_back_repeats_the_0130_slot_not_0230_in_new_york() -> None:
    twice = fires("30 1 * * *", "America/New_York", utc("2024-11-02T12:00"), 3)
    assert twice == [utc("2024-11-03T05:30"), utc("2024-11-03T06:30"), utc("2024-11-04T06:30")]
    once = fires("30 2 * * *", "America/New_York", utc("2024-11-02T12:00"), 2)
    assert once == [utc("2024-11-03T07:30"), utc("2024-11-04T07:30")]


def test_fall_back_chain_from_inside_the_repeated_hour_moves_forward() -> None:
    # Starting from the first 02:30 (CEST) must give the second one, not the same instant again.
    assert next_fire("30 2 * * *", "Europe/Berlin", utc("2024-10-27T00:30")) == utc(
        "2024-10-27T01:30"
    )


@pytest.mark.parametrize(
    ("expr", "timezone", "at", "expected"),
    [
        ("*/5 * * * *", "UTC", "2024-01-01T12:05:00", "2024-01-01T12:05"),  # at counts
        ("*/5 * * * *", "UTC", "2024-01-01T12:09:59", "2024-01-01T12:05"),
        ("0 3 * * *", "UTC", "2024-01-02T02:00", "2024-01-01T03:00"),
        ("30 2 * * *", "Europe/Berlin", "2024-10-27T02:00", "2024-10-27T01:30"),
    ],
)
def test_last_fire_is_the_latest_fire_at_or_before(
    expr: str, timezone: str, at: str, expected: str
) -> None:
    assert last_fire(expr, timezone, utc(at)) == utc(expected)


def test_count_fires_counts_the_half_open_interval_and_stops_at_the_limit() -> None:
    start, end = utc("2024-01-01T12:00"), utc("2024-01-01T13:00")
    assert count_fires("*/5 * * * *", "UTC", start, end, 1000) == 12  # 12:05 .. 13:00
    assert count_fires("*/5 * * * *", "UTC", start, end, 5) == 5
    assert count_fires("*/5 * * * *", "UTC", end, start, 1000) == 0
    assert count_fires("@reboot", "UTC", start, end, 1000) == 0


@pytest.mark.parametrize(
    ("expr", "timezone", "fragment"),
    [
        ("*/5 * * * *", "Nowhere/Atlantis", "unknown time zone"),
        ("*/5 * * *", "UTC", "invalid cron expression"),
        ("0 0 30 2 *", "UTC", "never fires"),
    ],
)
def test_cron_problem_names_what_is_wrong(expr: str, timezone: str, fragment: str) -> None:
    problem = cron_problem(expr, timezone)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize("expr", ["*/5 * * * *", "@hourly", "@daily", "@reboot", "0 0 29 2 *"])
def test_cron_problem_accepts_valid_schedules(expr: str) -> None:
    assert cron_problem(expr, "Europe/Berlin") is None
