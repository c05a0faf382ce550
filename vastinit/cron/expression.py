"""Cron schedules: validation and next-fire times, on a maintained library (croniter)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter

# croniter (and dateutil under it, ~4 MB) is imported only when a cron schedule is used,
# so a vastinit without cron units never pays for it.


def _lib() -> Any:
    import croniter as lib

    return lib


# Far enough ahead that a rare-but-real schedule (Feb 29) still fires, near enough to be quick.
_SEARCH_YEARS = 8


# The spec's forms: 5 standard fields, or one of these words.  croniter accepts more (a
# seconds field, a year field, @yearly/@midnight, L/W/# extensions); those are refused so
# that a unit file means the same here as in any standard cron.
MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@reboot")
ALLOWED_FORMS = (
    "5 fields (minute hour day-of-month month day-of-week, e.g. '*/5 * * * *') "
    "or one of " + ", ".join(MACROS)
)
# Per field: digits, '*', ',', '-', '/'; month and day-of-week also take 3-letter names.
_FIELD = re.compile(r"[0-9*,/-]+")
_NAMED_FIELD = re.compile(r"(?:[0-9*,/-]|[A-Za-z]{3})+")


def cron_problem(expr: str, timezone: str) -> str | None:
    """Why ``expr`` in ``timezone`` is unusable (not a spec form, never fires, unknown zone),
    or None."""
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
    text = expr.strip()
    if text in MACROS:
        return None
    fields = text.split()
    standard = len(fields) == 5 and all(
        (_NAMED_FIELD if i >= 3 else _FIELD).fullmatch(f) for i, f in enumerate(fields)
    )
    if not standard or not _lib().croniter.is_valid(text):
        return f"invalid cron expression {expr!r}: use {ALLOWED_FORMS}"
    try:
        start = datetime.now(tz)
        it = _lib().croniter(
            text, start, max_years_between_matches=_SEARCH_YEARS, day_or=day_or(text)
        )
        fire = it.get_next(datetime)
    except Exception:  # croniter raises its own error types for impossible dates
        return f"cron expression {expr!r} never fires"
    if fire is None:
        return f"cron expression {expr!r} never fires"
    return None


def day_or(expr: str) -> bool:
    """Whether a day matches when either day field does (both restricted) rather than
    both: cron's rule, where a field that starts with ``*`` (``*``, ``*/2``) restricts
    nothing, so the other field alone decides (Vixie cron's DOM_STAR/DOW_STAR)."""
    fields = expr.split()
    if len(fields) != 5:
        return True
    return not (fields[2].startswith("*") or fields[4].startswith("*"))


def is_reboot(expr: str) -> bool:
    """Whether ``expr`` is ``@reboot``: a run at start only, never a clock time."""
    return expr.strip() == "@reboot"


def _croniter_in(expr: str, timezone: str, at: datetime) -> croniter:
    """A croniter positioned at ``at`` (aware) seen in ``timezone``, so fields mean local time."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"cron times must be timezone-aware, got naive {at.isoformat()}")
    # astimezone sets `fold` on the repeated hour, which croniter reads to tell the twins apart.
    local = at.astimezone(ZoneInfo(timezone))
    text = expr.strip()
    it: croniter = _lib().croniter(
        text, local, max_years_between_matches=_SEARCH_YEARS, day_or=day_or(text)
    )
    return it


def next_fire(expr: str, timezone: str, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (aware, returned in UTC), or None if none.

    None is what ``@reboot`` always gets (it runs only at start) and what an expression with
    no match within the search horizon gets.  Fields are read as local time in ``timezone``
    (an IANA name).  The result is in UTC on purpose: two aware datetimes that share a
    ``ZoneInfo`` compare and subtract as naive wall times (Python ignores ``fold``), which
    would make the repeated hour of a fall-back day ambiguous; UTC times never are.

    Daylight saving time is handled the way croniter (7.x) defines it:

    - Spring forward (the local clock jumps 02:00 -> 03:00; Europe/Berlin 2024-03-31,
      America/New_York 2024-03-10): a job whose time does not exist that day, such as
      ``30 2 * * *``, runs once, at 03:00, the first instant after the gap; the next day it
      is back at 02:30.  Interval jobs (``*/30 * * * *``) simply have no slot in the gap:
      01:30 is followed by 03:00, so they still run every 30 real minutes.
    - Fall back (the local clock goes 03:00 -> 02:00 in Europe/Berlin on 2024-10-27, 02:00 ->
      01:00 in America/New_York on 2024-11-03): every slot in the repeated hour runs twice,
      once per offset, an hour apart.  So ``30 2 * * *`` in Europe/Berlin runs at 02:30 CEST
      (00:30 UTC) and again at 02:30 CET (01:30 UTC); in America/New_York it is
      ``30 1 * * *`` that runs twice, while ``30 2 * * *`` runs once.  (cronie differs here:
      it runs a fixed-time job once on that day.)  To avoid both effects, schedule outside
      01:00-03:00 local time or use ``timezone = "UTC"``.
    """
    if is_reboot(expr):
        return None
    try:
        fire = _croniter_in(expr, timezone, after).get_next(datetime)
    except (
        _lib().CroniterBadDateError
    ):  # no match within the horizon: the schedule never fires again
        return None
    return None if fire is None else fire.astimezone(UTC)


def last_fire(expr: str, timezone: str, at: datetime) -> datetime | None:
    """The latest fire time at or before ``at`` (aware, returned in UTC), or None if none.

    ``@reboot`` has no fire times and gets None, as does an expression with no match within
    the search horizon.  DST follows the same rules as ``next_fire``.
    """
    if is_reboot(expr):
        return None
    # croniter's get_prev is strict (< start); one microsecond later makes it "at or before".
    start = at + timedelta(microseconds=1)
    try:
        fire = _croniter_in(expr, timezone, start).get_prev(datetime)
    except _lib().CroniterBadDateError:
        return None
    return None if fire is None else fire.astimezone(UTC)


def count_fires(expr: str, timezone: str, after: datetime, until: datetime, limit: int) -> int:
    """How many fire times lie in ``(after, until]``, counting no further than ``limit``."""
    if is_reboot(expr) or until <= after:
        return 0
    it = _croniter_in(expr, timezone, after)
    count = 0
    end = until.astimezone(UTC)
    try:
        while count < limit and it.get_next(datetime).astimezone(UTC) <= end:
            count += 1
    except _lib().CroniterBadDateError:
        pass  # no further match: what was counted is the answer
    return count
