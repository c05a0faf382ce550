"""Cron schedules: validation and next-fire times, on a maintained library (croniter)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# Far enough ahead that a rare-but-real schedule (Feb 29) still fires, near enough to be quick.
_SEARCH_YEARS = 8


def cron_problem(expr: str, timezone: str) -> str | None:
    """Why ``expr`` in ``timezone`` is unusable (invalid, never fires, unknown zone), or None."""
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
    if expr.strip() == "@reboot":
        return None
    if not croniter.is_valid(expr):
        return f"invalid cron expression {expr!r} (5 fields or @hourly/@daily/@weekly/@monthly)"
    try:
        start = datetime.now(tz)
        fire = croniter(expr, start, max_years_between_matches=_SEARCH_YEARS).get_next(datetime)
    except Exception:  # croniter raises its own error types for impossible dates
        return f"cron expression {expr!r} never fires"
    if fire is None:
        return f"cron expression {expr!r} never fires"
    return None
