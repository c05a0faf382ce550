"""One stream of what vastinit knows: numbered events, a bounded replay buffer, bounded
subscribers.

``EventHub.publish`` numbers an event (``seq``, 1, 2, ...), stamps it, encodes it once as a
JSON line, keeps it in a replay buffer of the last ``replay`` events and offers it to every
subscriber. It never blocks and never awaits: a subscriber whose unread bytes would pass
its bound is dropped on the spot (its queue freed, one final ``dropped`` event queued in its
place) and the drop is counted in ``EventHub.dropped``. A subscriber that comes back with
``since`` = the last seq it saw gets every event after it from the buffer, in order, or a
``reset`` event when the buffer no longer holds them (re-read ``/v1/status``).

Log lines are not numbered and not replayed: a subscriber that asks for them gets them
pushed (``push_log``) into the same queue by a ``LogPump`` (supervisor/event_logs.py), which
moves them only while the queue has room for them (``wait_room``), so log lines never crowd
out state events and a flood never drops a client that keeps reading. Where lines were left
out (the client too slow, or a rate it asked for) it gets one ``skipped`` event saying how
many. docs/control-api.md has every event's schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio
import structlog

from vastinit.logs.line import LogLine

log = structlog.get_logger("vastinit")

REPLAY_EVENTS = 4096
SUBSCRIBER_BYTES = 1 << 20
BATCH_BYTES = 64 << 10

# Event types a client may filter on ("route": supervisor/edge.py; "gpu": the GPU
# attribution in supervisor/manager.py; a "skipped" event is never filtered out).
EVENT_TYPES = frozenset(
    {
        "state",
        "reload",
        "restart_to_apply",
        "cron",
        "unit",
        "log",
        "gpu",
        "route",
        "reset",
        "dropped",
    }
)


def _line(body: dict[str, object]) -> bytes:
    # default=str: an odd field value (an enum, a path) must never make publishing raise.
    return (json.dumps(body, separators=(",", ":"), default=str) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One published event: its number, time, type, unit (if about one) and JSON line."""

    seq: int
    ts: float
    type: str
    unit: str | None
    line: bytes  # the whole event as one JSON line, newline included


class EventHub:
    """Publishes numbered events to bounded subscribers; keeps the last ``replay`` of them."""

    def __init__(
        self,
        *,
        replay: int = REPLAY_EVENTS,
        subscriber_bytes: int = SUBSCRIBER_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.subscriber_bytes = subscriber_bytes
        self._clock = clock
        self._seq = 0
        self._buffer: deque[Event] = deque(maxlen=max(replay, 1))
        self._subs: set[EventSubscriber] = set()
        self.dropped = 0  # subscribers dropped for falling behind, since vastinit started
        # Names this run of the hub: seq numbers start again at 1 when vastinit restarts, so
        # a client resuming with ``since`` also gives the epoch its seq belongs to.
        self.epoch = os.urandom(6).hex()

    @property
    def last_seq(self) -> int:
        """The seq of the newest event (0 before the first)."""
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, type: str, unit: str | None = None, **fields: object) -> Event:
        """Number, encode, keep and hand out one event; never blocks, never awaits."""
        self._seq += 1
        ts = self._clock()
        body: dict[str, object] = {"seq": self._seq, "ts": ts, "type": type}
        if unit is not None:
            body["unit"] = unit
        body.update(fields)
        event = Event(self._seq, ts, type, unit, _line(body))
        self._buffer.append(event)
        for sub in list(self._subs):
            if sub.wants(event.type, event.unit):
                sub.push(event.line)
        return event

    def subscribe(
        self,
        *,
        since: int | None = None,
        epoch: str | None = None,
        types: Iterable[str] = (),
        units: Iterable[str] = (),
        logs: bool = False,
    ) -> EventSubscriber:
        """A new subscriber to events of ``types`` about ``units`` (all when empty).

        With ``since``, it first gets every kept event numbered after ``since`` that it
        wants, in order; a ``reset`` event instead when some of them are no longer kept (or
        ``since`` is ahead of this vastinit, or ``epoch`` is another one's: it restarted).
        Replay and subscribing happen in
        one step: nothing is missed or repeated.
        """
        sub = EventSubscriber(
            self, frozenset(types), frozenset(units), self.subscriber_bytes, logs=logs
        )
        if since is not None:
            oldest = self._buffer[0].seq if self._buffer else self._seq + 1
            if epoch is not None and epoch != self.epoch:
                sub.push_control("reset", reason="another epoch (vastinit restarted)")
            elif since > self._seq:
                sub.push_control("reset", reason="since is ahead of this vastinit (restarted)")
            elif since < oldest - 1:
                sub.push_control("reset", reason="missed events are no longer kept")
            else:
                missed = [
                    e.line for e in self._buffer if e.seq > since and sub.wants(e.type, e.unit)
                ]
                # The replay (at most the buffer) comes on top of the bound: a client resuming
                # after a burst is not dropped for what it has not had a chance to read yet.
                sub.max_bytes += sum(map(len, missed))
                for line in missed:
                    sub.push(line)
        if not sub.closed:
            self._subs.add(sub)
        return sub

    def _dropped(self, sub: EventSubscriber, reason: str) -> None:
        self._subs.discard(sub)
        self.dropped += 1
        log.warning("event subscriber dropped", reason=reason, dropped_total=self.dropped)

    def _unsubscribe(self, sub: EventSubscriber) -> None:
        self._subs.discard(sub)


class EventSubscriber:
    """One client's bounded queue of encoded events (``next_batch`` reads it).

    Past ``max_bytes`` of unread events it is dropped: the queue is freed and replaced by
    one ``dropped`` event, after which ``next_batch`` returns ``[]``; ``dropped_reason``
    says why and ``gone`` is set (a writer blocked on the client can stop waiting).
    """

    def __init__(
        self,
        hub: EventHub,
        types: frozenset[str],
        units: frozenset[str],
        max_bytes: int,
        *,
        logs: bool = False,
    ) -> None:
        self._hub = hub
        self.types = types
        self.units = units
        self.logs = logs
        self.max_bytes = max_bytes
        self._queue: deque[bytes] = deque()
        self._bytes = 0
        self.closed = False
        self.dropped_reason: str | None = None
        self.gone = anyio.Event()
        self._wake_tx, self._wake_rx = anyio.create_memory_object_stream[None](1)
        # Rung each time the client takes a batch: a LogPump waiting for room wakes up.
        self._room_tx, self._room_rx = anyio.create_memory_object_stream[None](1)
        self.last_read = time.monotonic()  # when the client last took a batch (or subscribed)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def wants(self, type: str, unit: str | None) -> bool:
        """Whether this subscriber asked for events of ``type`` about ``unit``; events about
        no single unit (reload) pass a unit filter."""
        if self.types and type not in self.types:
            return False
        return not self.units or unit is None or unit in self.units

    def push(self, line: bytes) -> None:
        """Queue one encoded event; drops the subscriber if it would pass its bound."""
        if self.closed:
            return
        if self._bytes + len(line) > self.max_bytes:
            self.drop(f"not reading: more than {self.max_bytes} bytes of events queued")
            return
        self._queue.append(line)
        self._bytes += len(line)
        self._notify()

    def push_control(self, type: str, **fields: object) -> None:
        """Queue an unnumbered event about the stream itself (``reset``)."""
        body: dict[str, object] = {"type": type, "ts": time.time(), **fields}
        body["last_seq"] = self._hub.last_seq
        body["epoch"] = self._hub.epoch
        self.push(_line(body))

    def push_log(self, lines: Iterable[LogLine]) -> None:
        """Queue log lines as unnumbered ``log`` events (a follower's marker of lines it lost
        as a ``skipped`` event)."""
        for line in lines:
            if self.closed:
                return
            if line.skipped:
                self.push_skipped(line.skipped, "client too slow: lines shed while it lagged")
                continue
            self.push(
                _line(
                    {
                        "type": "log",
                        "ts": line.ts,
                        "unit": line.unit,
                        "stream": line.stream,
                        "text": line.text.decode(errors="replace"),
                    }
                )
            )

    def push_skipped(self, lines: int, reason: str, units: dict[str, int] | None = None) -> None:
        """Queue one ``skipped`` event: ``lines`` log lines were left out here, and why."""
        body: dict[str, object] = {"type": "skipped", "ts": time.time(), "lines": lines}
        if units:
            body["units"] = units
        body["reason"] = reason
        self.push(_line(body))

    async def wait_room(self, limit: int, timeout: float) -> bool:
        """Wait until fewer than ``limit`` bytes are queued (True), the subscriber is closed
        (True), or ``timeout`` seconds pass (False)."""
        with anyio.move_on_after(timeout):
            while self._bytes >= limit and not self.closed:
                with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
                    await self._room_rx.receive()
            return True
        return False

    def drop(self, reason: str) -> None:
        """Drop the subscriber: free its queue, queue one final ``dropped`` event, count it."""
        if self.closed:
            return
        self._queue.clear()
        self._bytes = 0
        self.dropped_reason = reason
        self._queue.append(
            _line(
                {
                    "type": "dropped",
                    "ts": time.time(),
                    "reason": reason,
                    "last_seq": self._hub.last_seq,
                    "epoch": self._hub.epoch,
                }
            )
        )
        self.closed = True
        self._hub._dropped(self, reason)
        self.gone.set()
        self._notify()
        self._ring_room()

    def close(self) -> None:
        """Stop and free the queue (the client went away)."""
        if not self.closed:
            self.closed = True
            self._hub._unsubscribe(self)
        self._queue.clear()
        self._bytes = 0
        self.gone.set()
        self._notify()
        self._ring_room()

    def _notify(self) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._wake_tx.send_nowait(None)

    def _ring_room(self) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._room_tx.send_nowait(None)

    async def next_batch(self) -> list[bytes]:
        """The encoded events queued now, up to about BATCH_BYTES (waiting for at least
        one); ``[]`` once closed and empty."""
        while True:
            batch: list[bytes] = []
            size = 0
            while self._queue and size < BATCH_BYTES:
                line = self._queue.popleft()
                batch.append(line)
                size += len(line)
            self._bytes = max(self._bytes - size, 0)
            if batch:
                self.last_read = time.monotonic()
                self._ring_room()
            if batch or self.closed:
                return batch
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
                await self._wake_rx.receive()
