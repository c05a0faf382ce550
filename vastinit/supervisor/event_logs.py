"""Log lines on the event stream: from a unit's follower (a ``LogSubscription``) into an event
client's queue (an ``EventSubscriber``), at the pace the client reads.

A ``LogPump`` takes lines from the follower only while the client's queue holds less than
``LOG_SHARE`` bytes, so log lines never fill the queue that state events need, and a flood
never drops a client that keeps reading: the lines wait in the follower instead. What a
client cannot take is accounted for, never silently gone:

- **Every line** (the default, ``ctl logs -f``): a client slower than the unit loses the
  oldest waiting lines only when the follower's bound (``FOLLOW_BYTES``) is reached, and gets
  a ``skipped`` event where they were. A client that takes nothing for ``STALL_CUTOFF_S``
  while lines are being shed for it has stopped reading: it is dropped (final ``dropped``
  event, counted), so it holds memory for seconds, not for good.
- **A rate** (``log_rate``, lines per second, for pages people read): lines past the rate are
  left out and counted; one ``skipped`` event per gap says how many, per unit, at most
  ``MARK_S`` after the gap began.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from vastinit.logs.line import LogLine
from vastinit.logs.ring import LogSubscription
from vastinit.supervisor.events import EventSubscriber

LOG_SHARE = 256 << 10
"""Log lines a client's event queue may hold; the rest of its bound stays free for events."""

FOLLOW_BYTES = 768 << 10
"""Log lines waiting in vastinit for a client that is behind, before the oldest are shed."""

STALL_CUTOFF_S = 5.0
"""A client that takes nothing for this long while its lines are being shed is dropped."""

MARK_S = 0.25
"""A rate-limited gap is reported at most this long after it began."""

MAX_LOG_RATE = 100_000.0
"""The highest ``log_rate`` accepted (lines per second); above it, ask for every line."""

ALL_LOGS = "*"
"""``logs=*``: the log lines of every unit."""


class LogPump:
    """Moves one client's log lines from ``follow`` into ``sub`` (see the module doc)."""

    def __init__(
        self,
        sub: EventSubscriber,
        follow: LogSubscription,
        *,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sub = sub
        self._follow = follow
        self._rate = rate
        self._clock = clock
        self._tokens = rate if rate is not None else 0.0
        self._refilled = clock()
        self._pending: dict[str, int] = {}  # lines left out by the rate, per unit, not yet told
        self._pending_since = 0.0

    async def run(self) -> None:
        """Pump until the client or the follower ends."""
        sub, follow = self._sub, self._follow
        while not sub.closed:
            await self._wait_room()
            if sub.closed:
                return
            if self._pending:
                # A gap not yet reported: wait for lines no longer than its deadline.
                lines: list[LogLine] | None = None
                with anyio.move_on_after(max(0.0, self._pending_since + MARK_S - self._clock())):
                    lines = await follow.next_batch()
                if lines is None:
                    self._report_gap()
                    continue
            else:
                lines = await follow.next_batch()
            if not lines:
                self._report_gap()
                return
            self._deliver(lines)

    async def _wait_room(self) -> None:
        """Wait until the client's queue has room for log lines; drop it if it stalls while
        its follower sheds lines."""
        sub, follow = self._sub, self._follow
        shed_before = follow.dropped
        while not await sub.wait_room(LOG_SHARE, timeout=1.0):
            if follow.dropped > shed_before and time.monotonic() - sub.last_read >= STALL_CUTOFF_S:
                sub.drop(
                    f"not reading for {STALL_CUTOFF_S:g} s while its log lines were shed "
                    f"({follow.dropped} lines)"
                )
                return

    def _deliver(self, lines: list[LogLine]) -> None:
        if self._rate is None:
            self._sub.push_log(lines)
            return
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        out: list[LogLine] = []
        for line in lines:
            if line.skipped:  # the follower's own marker: tell the gap as it is
                out.append(line)
            elif self._tokens >= 1.0:
                if self._pending:
                    self._sub.push_log(out)
                    out = []
                    self._report_gap()
                self._tokens -= 1.0
                out.append(line)
            else:
                if not self._pending:
                    self._pending_since = now
                self._pending[line.unit] = self._pending.get(line.unit, 0) + 1
        self._sub.push_log(out)
        if self._pending and now - self._pending_since >= MARK_S:
            self._report_gap()

    def close(self) -> None:
        """The client went away: free the follower's queue (its bytes go back to the budget)."""
        self._follow.discard()

    def _report_gap(self) -> None:
        if not self._pending:
            return
        units, self._pending = self._pending, {}
        self._sub.push_skipped(
            sum(units.values()), f"rate limit: {self._rate:g} lines/s", units=units
        )
