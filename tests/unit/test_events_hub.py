"""The event hub: numbering, replay after a reconnect, reset, bounded subscribers, filters."""

from __future__ import annotations

import json

import anyio
import pytest

from vastinit.logs.line import LogLine
from vastinit.supervisor.events import EventHub, EventSubscriber


def _read_now(sub: EventSubscriber) -> list[dict[str, object]]:
    """Everything queued for ``sub`` now (never waits: fails if nothing is queued)."""

    async def take() -> list[bytes]:
        with anyio.fail_after(1.0):
            return await sub.next_batch()

    return [json.loads(line) for line in anyio.run(take)]


def test_events_are_numbered_consecutively_and_encoded_once() -> None:
    hub = EventHub(clock=lambda: 42.0)
    first = hub.publish("state", "web", old="waiting", new="starting")
    second = hub.publish("reload", added=["x"])
    assert (first.seq, second.seq, hub.last_seq) == (1, 2, 2)
    assert json.loads(first.line) == {
        "seq": 1,
        "ts": 42.0,
        "type": "state",
        "unit": "web",
        "old": "waiting",
        "new": "starting",
    }
    assert "unit" not in json.loads(second.line)


def test_a_subscriber_gets_live_events_in_order() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    for i in range(5):
        hub.publish("state", "web", n=i)
    got = _read_now(sub)
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["n"] for e in got] == [0, 1, 2, 3, 4]


def test_reconnect_with_since_replays_exactly_what_was_missed() -> None:
    hub = EventHub()
    for i in range(10):
        hub.publish("state", "web", n=i)
    sub = hub.subscribe(since=6)
    hub.publish("state", "web", n=10)
    assert [e["seq"] for e in _read_now(sub)] == [7, 8, 9, 10, 11]


def test_since_equal_to_the_last_seq_replays_nothing() -> None:
    hub = EventHub()
    hub.publish("state", "web")
    sub = hub.subscribe(since=1)
    hub.publish("state", "web")
    assert [e["seq"] for e in _read_now(sub)] == [2]


def test_since_older_than_the_buffer_gets_a_reset_then_live_events() -> None:
    hub = EventHub(replay=4)
    for _ in range(10):
        hub.publish("state", "web")
    sub = hub.subscribe(since=5)  # 6 was evicted: the buffer holds 7..10
    hub.publish("state", "web")
    got = _read_now(sub)
    assert got[0]["type"] == "reset" and got[0]["last_seq"] == 10
    assert [e["seq"] for e in got[1:]] == [11]


def test_since_just_inside_the_buffer_gets_no_reset() -> None:
    hub = EventHub(replay=4)
    for _ in range(10):
        hub.publish("state", "web")
    sub = hub.subscribe(since=6)  # 7..10 are all kept
    assert [e["seq"] for e in _read_now(sub)] == [7, 8, 9, 10]


def test_since_ahead_of_the_hub_means_vastinit_restarted_reset() -> None:
    hub = EventHub()
    hub.publish("state", "web")
    sub = hub.subscribe(since=500)
    got = _read_now(sub)
    assert got[0]["type"] == "reset" and "restarted" in str(got[0]["reason"])


def test_filters_by_type_and_unit_and_reload_passes_a_unit_filter() -> None:
    hub = EventHub()
    sub = hub.subscribe(types=["state", "reload"], units=["web"])
    hub.publish("state", "web", n=1)
    hub.publish("state", "db", n=2)
    hub.publish("cron", "web", n=3)
    hub.publish("reload", n=4)
    assert [e["n"] for e in _read_now(sub)] == [1, 4]


def test_replay_applies_the_filters_too() -> None:
    hub = EventHub()
    hub.publish("state", "db")
    hub.publish("state", "web")
    sub = hub.subscribe(since=0, units=["web"])
    assert [e["seq"] for e in _read_now(sub)] == [2]


def test_a_subscriber_that_falls_behind_is_dropped_told_why_and_counted() -> None:
    hub = EventHub(subscriber_bytes=4096)
    slow = hub.subscribe()
    fast = hub.subscribe()
    for i in range(200):
        hub.publish("state", "web", n=i, pad="x" * 50)
        if i % 10 == 0:
            _read_now(fast)
    assert hub.dropped == 1 and hub.subscribers == 1
    assert slow.closed and slow.dropped_reason is not None
    assert slow.gone.is_set()
    got = _read_now(slow)
    assert [e["type"] for e in got] == ["dropped"]  # its queue was freed, only the notice
    assert "not reading" in str(got[0]["reason"])
    assert _read_now(slow) == []  # then the end of the stream
    # The drop freed the queue; nothing more is queued for it.
    hub.publish("state", "web")
    assert slow.queued_bytes == 0
    assert [e["seq"] for e in _read_now(fast)][-1] == 201


def test_publishing_to_a_full_subscriber_never_blocks() -> None:
    hub = EventHub(subscriber_bytes=1 << 20)
    subs = [hub.subscribe() for _ in range(20)]
    for i in range(20000):  # ~2 MB each: every subscriber overflows and is dropped
        hub.publish("state", "web", n=i, pad="y" * 60)
    assert hub.dropped == 20 and all(s.closed for s in subs)
    assert all(s.queued_bytes < 1024 for s in subs)


def test_log_lines_are_unnumbered_and_count_toward_the_bound() -> None:
    hub = EventHub(subscriber_bytes=2048)
    sub = hub.subscribe(types=["state"], logs=True)
    hub.publish("state", "web")
    sub.push_log([LogLine(1.0, "web", "stdout", b"hello")])
    got = _read_now(sub)
    assert got[1] == {"type": "log", "ts": 1.0, "unit": "web", "stream": "stdout", "text": "hello"}
    assert "seq" not in got[1]
    sub.push_log([LogLine(1.0, "web", "stdout", b"z" * 100)] * 100)
    assert sub.closed and hub.dropped == 1


def test_close_unsubscribes_and_ends_the_stream() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    sub.close()
    hub.publish("state", "web")
    assert hub.subscribers == 0 and hub.dropped == 0
    assert _read_now(sub) == []


@pytest.mark.parametrize("replay", [1, 3])
def test_the_replay_buffer_is_bounded(replay: int) -> None:
    hub = EventHub(replay=replay)
    for _ in range(10):
        hub.publish("state", "web")
    sub = hub.subscribe(since=10 - replay)
    assert [e["seq"] for e in _read_now(sub)] == list(range(11 - replay, 11))


def test_a_waiting_reader_wakes_on_publish() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    got: list[bytes] = []

    async def main() -> None:
        with anyio.fail_after(2.0):
            async with anyio.create_task_group() as tg:

                async def reader() -> None:
                    got.extend(await sub.next_batch())

                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                hub.publish("state", "web")

    anyio.run(main)
    assert len(got) == 1


def test_since_from_another_epoch_gets_a_reset_even_when_the_seq_exists() -> None:
    before, after = EventHub(), EventHub()
    for _ in range(5):
        after.publish("state", "web")
    assert before.epoch != after.epoch
    sub = after.subscribe(since=2, epoch=before.epoch)
    got = _read_now(sub)
    assert [e["type"] for e in got] == ["reset"] and got[0]["epoch"] == after.epoch
    same = after.subscribe(since=2, epoch=after.epoch)
    assert [e["seq"] for e in _read_now(same)] == [3, 4, 5]


def test_a_full_replay_does_not_drop_the_subscriber_that_asked_for_it() -> None:
    hub = EventHub(replay=4096, subscriber_bytes=1 << 20)
    for i in range(4096):
        hub.publish("state", "web", n=i, cause="c" * 300)  # ~1.4 MB kept in all
    sub = hub.subscribe(since=0)
    assert not sub.closed and hub.dropped == 0
    hub.publish("state", "web")  # a live event on top still fits
    got: list[dict[str, object]] = []
    while len(got) < 4097:
        got.extend(_read_now(sub))
    assert [e["seq"] for e in got] == list(range(1, 4098))
