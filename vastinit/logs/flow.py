"""Flow control between the pipe readers and stdout: hold reads while stdout is merely busy.

The console's queue is filled by the pumps, which can read a pipe far faster than any
stdout drains.  Dropping whatever does not fit would lose lines whenever a unit is chatty,
although nothing is stuck.  So while stdout makes progress the readers are held between
two water marks (the units' pipes hold the backlog and their writes block briefly, as they
would on a terminal); only when stdout has made no progress for ``STALL_S`` is it declared
stalled, and the readers then run at full speed while the console drops what does not fit
(SPEC §6: a stalled stdout never blocks a unit).  Everything is driven by events: queue
level changes reported by the console and one ``call_later`` timer, never a polling loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable

STALL_S = 1.0
"""No stdout progress for this long means stalled, not busy.  A busy pipe to a live reader
(``docker logs``, a terminal) takes bytes every few milliseconds, even on a loaded host; a
second is long enough not to mistake a descheduled reader for a dead one, and short enough
that a unit writing to a stuck stdout is held back no longer than a human would notice."""


class FlowState(enum.Enum):
    """Whether readers may feed the console."""

    OPEN = "open"  # the queue is below the high-water mark: read at full speed
    HELD = "held"  # the queue is over it and stdout is moving: readers wait for the drain
    STALLED = "stalled"  # stdout made no progress for STALL_S: read, the console drops


class FlowGate:
    """Hysteresis on the console queue's level plus a stall timer; readers ask ``holding``.

    The console reports every change of its queue level with ``grew`` / ``shrank``;
    readers that find ``holding`` true register a callback with ``wait`` and are called
    (once) when the gate opens: the queue drained below ``low``, or stdout stalled.
    """

    def __init__(self, high: int, low: int, *, stall_s: float = STALL_S) -> None:
        if not 0 <= low < high:
            raise ValueError(f"water marks need 0 <= low < high, not low={low} high={high}")
        self.high = high
        self.low = low
        self.stall_s = stall_s
        self.state = FlowState.OPEN
        self._level = 0
        # When stdout last accepted bytes, or when the queue last became non-empty: the
        # "no progress" clock only runs while there is something to write.
        self._since = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[Callable[[], None], None] = {}  # insertion order: round robin
        self._closed = False

    @property
    def holding(self) -> bool:
        """True while readers should not read (the queue is over high water, stdout moving)."""
        return self.state is FlowState.HELD

    def grew(self, level: int) -> None:
        """The queue now holds ``level`` bytes, after lines were queued."""
        if self._level == 0 and level > 0:
            self._since = time.monotonic()
        self._level = level
        if self.state is FlowState.OPEN and level >= self.high and not self._closed:
            self._hold()

    def shrank(self, level: int) -> None:
        """The queue now holds ``level`` bytes, after stdout accepted some (or it was emptied)."""
        self._level = level
        self._since = time.monotonic()
        if self.state is FlowState.STALLED:
            # stdout moves again: back to backpressure until the backlog is worked off.
            if level >= self.low:
                self._hold()
            else:
                self._open(FlowState.OPEN)
        elif self.state is FlowState.HELD and level < self.low:
            self._open(FlowState.OPEN)

    def wait(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once, when the gate next opens (at once if it is not holding)."""
        if not self.holding:
            fn()
            return
        self._waiters[fn] = None

    def cancel(self, fn: Callable[[], None]) -> None:
        """Forget a callback registered with ``wait`` (a reader that closed)."""
        self._waiters.pop(fn, None)

    def close(self) -> None:
        """Never hold again (stdout is gone or closed): open now and release every reader."""
        self._closed = True
        if self.holding:
            self._open(FlowState.OPEN)

    # -- internals --------------------------------------------------------------------------

    def _hold(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, so no timer to end a stall: never hold without one
        self.state = FlowState.HELD
        self._check_stall()

    def _check_stall(self) -> None:
        """Declare stdout stalled once it has made no progress for ``stall_s``; else re-arm."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.state is not FlowState.HELD:
            return
        left = self._since + self.stall_s - time.monotonic()
        if left <= 0:
            self._open(FlowState.STALLED)
            return
        # One timer per window, not one per write: progress only moves ``_since`` and the
        # timer re-arms itself for the remainder when it fires.
        self._timer = asyncio.get_running_loop().call_later(left, self._check_stall)

    def _open(self, state: FlowState) -> None:
        self.state = state
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, {}
        for fn in waiters:
            fn()
