"""Test-only: lets a fault test step vastinit's wall clock while it runs.

Put this directory first on PYTHONPATH and set VASTINIT_TEST_CLOCK_FILE: every read of the
cron scheduler's wall clock (``SystemClock.wall``) adds the number of seconds in that file
(plus VASTINIT_CLOCK_OFFSET as usual). Writing the file is an NTP step, seen at once; the
monotonic clock is untouched, as with a real step. Nothing happens without the variable.
"""

import os

_PATH = os.environ.get("VASTINIT_TEST_CLOCK_FILE")

if _PATH:
    from datetime import UTC, datetime, timedelta

    try:
        from vastinit.cron import scheduler as _scheduler  # type: ignore[import-not-found]
    except ImportError:
        from vastinit import scheduler as _scheduler

    def _step() -> float:
        try:
            with open(_PATH) as f:
                return float(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def _wall(self: object) -> datetime:
        offset = float(getattr(self, "offset", 0.0))
        return datetime.now(UTC) + timedelta(seconds=offset + _step())

    _scheduler.SystemClock.wall = _wall  # type: ignore[method-assign,assignment]
