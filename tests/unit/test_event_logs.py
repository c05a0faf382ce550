"""Log lines on the event stream (supervisor/event_logs.py): paced by the client, never
crowding out state events, every line or a counted gap, a stalled client dropped, and the
rate-limited form for pages people read."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import pytest

from vastinit.logs.line import Chunk
from vastinit.logs.ring import FollowBudget, LogSubscription
from vastinit.supervisor import event_logs
from vastinit.supervisor.event_logs import FOLLOW_BYTES, LOG_SHARE, LogPump
from vastinit.supervisor.events import EventHub, EventSubscriber

LINE = 100  # bytes of text per line (the newline makes 101)


def _chunk(seq: int, unit: str, first: int, n: int) -> Chunk:
    block = b"".join(
        b"%s %09d %s\n" % (unit.encode(), i, b"x" * (LINE - 12 - len(unit)))
        for i in range(first, first + n)
    )
    return Chunk(seq, 1.0, unit, "stdout", block)


def _setup(
    rate: float | None = None, clock: Callable[[], float] | None = None
) -> tuple[EventHub, EventSubscriber, LogSubscription, LogPump]:
    hub = EventHub()
    sub = hub.subscribe(logs=True)
    follow = LogSubscription(None, max_bytes=FOLLOW_BYTES, budget=FollowBudget(1 << 30))
    pump = LogPump(sub, follow, rate=rate, **({"clock": clock} if clock else {}))
    return hub, sub, follow, pump


def _decode(batch: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in batch]


def _numbers(events: list[dict[str, object]]) -> list[int]:
    return [int(str(e["text"]).split()[1]) for e in events if e["type"] == "log"]


async def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.005)
    assert cond(), what


def test_a_client_that_pauses_during_a_burst_is_not_dropped_and_is_told_the_gap() -> None:
    """4 MiB of lines arrive while the client reads nothing: its queue holds at most
    LOG_SHARE of them (state events still fit), the oldest waiting lines are shed and
    counted, and when it reads again it gets a ``skipped`` event with exactly the lines
    it lost, then every later line, in order. (Before: the client was dropped at 1 MiB.)"""

    async def main() -> None:
        hub, sub, follow, pump = _setup()
        total = 40_000  # ~4 MiB
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            for i in range(0, total, 1000):
                follow.push(_chunk(i, "flood", i, 1000))
                await anyio.sleep(0)
                assert sub.queued_bytes <= LOG_SHARE + 70 << 10  # one batch past the share
            await _until(lambda: follow.dropped > 0, "the follower to shed")
            hub.publish("state", "flood", old="running", new="ready")
            assert not sub.closed and hub.dropped == 0
            events: list[dict[str, object]] = []
            while not any(e["type"] == "state" for e in events) or _numbers(events)[-1:] != [
                total - 1
            ]:
                events += _decode(await sub.next_batch())
            tg.cancel_scope.cancel()
        skipped = [e for e in events if e["type"] == "skipped"]
        got = _numbers(events)
        assert len(skipped) == 1 and skipped[0]["lines"] == follow.dropped
        assert len(got) + follow.dropped == total
        assert got == sorted(got)  # in order, the gap in one place
        assert "too slow" in str(skipped[0]["reason"])
        assert any(e["type"] == "state" for e in events)

    anyio.run(main)


def test_a_client_that_keeps_reading_gets_every_line_in_order() -> None:
    async def main() -> None:
        _hub, sub, follow, pump = _setup()
        total = 30_000
        got: list[int] = []

        async def read() -> None:
            while len(got) < total:
                events = _decode(await sub.next_batch())
                assert not [e for e in events if e["type"] != "log"], events
                got.extend(_numbers(events))

        async def write() -> None:
            for i in range(0, total, 500):
                follow.push(_chunk(i, "flood", i, 500))
                await anyio.sleep(0)  # the writer is as fast as the reader here

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            tg.start_soon(write)
            with anyio.fail_after(10):
                await read()
            tg.cancel_scope.cancel()
        assert got == list(range(total)) and follow.dropped == 0

    anyio.run(main)


def test_a_client_that_stops_reading_while_lines_are_shed_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_logs, "STALL_CUTOFF_S", 0.3)

    async def main() -> None:
        hub, sub, follow, pump = _setup()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            i = 0
            with anyio.fail_after(5):
                while not sub.closed:
                    follow.push(_chunk(i, "flood", i, 1000))
                    i += 1000
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert hub.dropped == 1 and sub.dropped_reason is not None
        assert "not reading for 0.3 s" in sub.dropped_reason
        last = _decode(await sub.next_batch())
        assert [e["type"] for e in last] == ["dropped"]

    anyio.run(main)


def test_an_idle_client_that_is_not_losing_lines_is_never_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not reading is fine while nothing is lost: a quiet unit's follower waits forever."""
    monkeypatch.setattr(event_logs, "STALL_CUTOFF_S", 0.1)

    async def main() -> None:
        hub, sub, follow, pump = _setup()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            for i in range(0, 3000, 1000):  # ~300 KiB: fills the share, sheds nothing
                follow.push(_chunk(i, "quiet", i, 1000))
            await anyio.sleep(1.5)  # waits on purpose: nothing may happen in this time
            assert not sub.closed and hub.dropped == 0 and follow.dropped == 0
            tg.cancel_scope.cancel()

    anyio.run(main)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limited_client_gets_the_rate_and_a_count_per_unit_of_the_rest() -> None:
    async def main() -> None:
        clock = FakeClock()
        _hub, sub, follow, pump = _setup(rate=100, clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            follow.push(_chunk(0, "a", 0, 600))
            follow.push(_chunk(1, "b", 0, 400))
            events = _decode(await sub.next_batch())
            while not any(e["type"] == "skipped" for e in events):  # told within MARK_S
                events += _decode(await sub.next_batch())
            clock.now += 0.5  # half a second later: 50 more lines may pass
            follow.push(_chunk(2, "a", 600, 100))
            while len([e for e in events if e["type"] == "log"]) < 150:
                events += _decode(await sub.next_batch())
            tg.cancel_scope.cancel()
        logs = [e for e in events if e["type"] == "log"]
        skipped = [e for e in events if e["type"] == "skipped"]
        assert len(logs) == 150
        assert _numbers(logs[:100]) == list(range(100))  # the first 100 of unit a
        assert _numbers(logs[100:]) == list(range(600, 650))
        assert skipped[0] == {**skipped[0], "lines": 900, "units": {"a": 500, "b": 400}}
        assert "rate limit: 100 lines/s" in str(skipped[0]["reason"])
        # The gap is where it was: after the first 100 lines, before the next ones.
        kinds = [e["type"] for e in events]
        assert kinds.index("skipped") == 100

    anyio.run(main)


def test_a_rate_limited_gap_is_reported_even_when_no_line_follows() -> None:
    async def main() -> None:
        _hub, sub, follow, pump = _setup(rate=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            follow.push(_chunk(0, "a", 0, 25))
            events: list[dict[str, object]] = []
            with anyio.fail_after(2):
                while not any(e["type"] == "skipped" for e in events):
                    events += _decode(await sub.next_batch())
            tg.cancel_scope.cancel()
        assert len(_numbers(events)) == 10
        assert [e["lines"] for e in events if e["type"] == "skipped"] == [15]

    anyio.run(main)


def test_a_slow_reader_losing_lines_is_not_dropped_while_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shedding alone is not stalling: a client that pauses 1.5 s, then takes a batch every
    0.1 s while its unit floods, loses lines (counted) but keeps its stream."""
    monkeypatch.setattr(event_logs, "STALL_CUTOFF_S", 3.0)

    async def main() -> None:
        hub, sub, follow, pump = _setup()
        events: list[dict[str, object]] = []

        async def slow_reader() -> None:
            events.extend(_decode(await sub.next_batch()))
            await anyio.sleep(1.5)  # one pause longer than the pump's 1 s check, on purpose
            while True:
                events.extend(_decode(await sub.next_batch()))
                await anyio.sleep(0.1)  # the client's own pace, on purpose

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            tg.start_soon(slow_reader)
            for i in range(0, 250_000, 1000):  # ~25 MiB over ~2.5 s
                follow.push(_chunk(i, "flood", i, 1000))
                await anyio.sleep(0.01)
            await _until(lambda: any(e["type"] == "skipped" for e in events), "a skipped event")
            tg.cancel_scope.cancel()
        assert follow.dropped > 0 and not sub.closed and hub.dropped == 0

    anyio.run(main)


def test_a_rate_gap_is_told_before_the_next_line_that_passes() -> None:
    async def main() -> None:
        clock = FakeClock()
        _hub, sub, follow, pump = _setup(rate=100, clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            follow.push(_chunk(0, "a", 0, 150))  # 100 pass, 50 left out
            events = _decode(await sub.next_batch())
            clock.now += 0.105  # 10 more may pass; the gap is not told yet (MARK_S: real time)
            follow.push(_chunk(1, "a", 150, 20))
            while len([e for e in events if e["type"] == "log"]) < 110:
                events += _decode(await sub.next_batch())
            tg.cancel_scope.cancel()
        kinds = [e["type"] for e in events]
        assert kinds[:100] == ["log"] * 100 and kinds[100] == "skipped"
        assert events[100]["lines"] == 50 and _numbers(events[101:111]) == list(range(150, 160))

    anyio.run(main)
