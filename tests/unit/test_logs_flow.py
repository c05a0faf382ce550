"""FlowGate: hold readers between two water marks while stdout moves; open when it stalls."""

from __future__ import annotations

import time

import anyio
import pytest

from vastinit.logs.flow import STALL_S, FlowGate, FlowState

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Calls:
    """A waiter that counts how often, and when, the gate called it."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self) -> None:
        self.times.append(time.monotonic())


def state(gate: FlowGate) -> FlowState:
    """The gate's state, read afresh (mypy would keep a narrowed attribute type)."""
    return gate.state


async def wait_for_state(gate: FlowGate, want: FlowState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while gate.state is not want:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gate still {gate.state.value} after {timeout}s, want {want.value}"
            )
        await anyio.sleep(0.005)


async def test_gate_holds_at_high_water_and_opens_only_below_low_water() -> None:
    gate = FlowGate(100, 25, stall_s=60)
    gate.grew(99)
    assert state(gate) is FlowState.OPEN and not gate.holding
    gate.grew(100)
    assert state(gate) is FlowState.HELD and gate.holding
    woken = Calls()
    gate.wait(woken)
    for level in (80, 50, 25):  # draining, but not yet below the low-water mark
        gate.shrank(level)
        assert gate.holding, f"released at {level} bytes, above low water"
    assert woken.times == []
    gate.shrank(24)
    assert state(gate) is FlowState.OPEN
    assert len(woken.times) == 1
    gate.grew(99)  # hysteresis: refilling up to just under high water does not hold
    assert not gate.holding
    gate.shrank(0)
    assert len(woken.times) == 1, "a waiter is called once per wait"


async def test_gate_declares_stdout_stalled_after_the_window_without_progress() -> None:
    gate = FlowGate(100, 25, stall_s=0.2)
    held_at = time.monotonic()
    gate.grew(150)
    woken = Calls()
    gate.wait(woken)
    await wait_for_state(gate, FlowState.STALLED, timeout=5)
    assert not gate.holding, "a stalled stdout must not hold readers"
    assert len(woken.times) == 1
    assert woken.times[0] - held_at >= 0.2, "declared stalled before the window passed"


async def test_progress_on_stdout_keeps_the_gate_holding_past_the_window() -> None:
    gate = FlowGate(100, 25, stall_s=0.5)
    gate.grew(100)
    start = time.monotonic()
    last_progress = start
    while last_progress - start < 1.2:  # well past the window, with steady progress
        last_progress = time.monotonic()
        gate.shrank(90)  # stdout takes bytes while readers keep it above low water
        assert state(gate) is FlowState.HELD, "stalled although stdout was making progress"
        await anyio.sleep(0.02)
    await wait_for_state(gate, FlowState.STALLED, timeout=5)
    assert time.monotonic() - last_progress >= 0.5


async def test_progress_after_a_stall_holds_again_until_the_backlog_drains() -> None:
    gate = FlowGate(100, 25, stall_s=0.1)
    gate.grew(100)
    await wait_for_state(gate, FlowState.STALLED, timeout=5)
    gate.grew(200)  # readers run at full speed while stalled (the console drops the excess)
    assert state(gate) is FlowState.STALLED
    gate.shrank(190)  # stdout took bytes: no longer stalled, and the backlog is big
    assert state(gate) is FlowState.HELD
    woken = Calls()
    gate.wait(woken)
    gate.shrank(10)
    assert state(gate) is FlowState.OPEN and len(woken.times) == 1


async def test_progress_after_a_stall_with_a_small_backlog_opens() -> None:
    gate = FlowGate(100, 25, stall_s=0.1)
    gate.grew(100)
    await wait_for_state(gate, FlowState.STALLED, timeout=5)
    gate.shrank(0)
    assert state(gate) is FlowState.OPEN


async def test_stdout_stuck_since_before_high_water_stalls_at_once() -> None:
    gate = FlowGate(100, 25, stall_s=0.1)
    gate.grew(10)  # something to write: the no-progress clock starts now
    await anyio.sleep(0.15)  # the passing time is the input here: no progress for > 0.1 s
    gate.grew(100)
    assert state(gate) is FlowState.STALLED, "held readers although stdout was already stuck"


async def test_a_queue_that_was_empty_does_not_count_as_stuck() -> None:
    gate = FlowGate(100, 25, stall_s=0.1)
    await anyio.sleep(0.15)  # idle with an empty queue: stdout owes nothing
    gate.grew(100)
    assert state(gate) is FlowState.HELD


async def test_closed_gate_releases_readers_and_never_holds_again() -> None:
    gate = FlowGate(100, 25, stall_s=60)
    gate.grew(100)
    woken = Calls()
    gate.wait(woken)
    gate.close()
    assert len(woken.times) == 1 and not gate.holding
    gate.shrank(0)
    gate.grew(1000)
    assert not gate.holding


async def test_cancelled_waiter_is_not_called_and_open_gate_calls_at_once() -> None:
    gate = FlowGate(100, 25, stall_s=60)
    now = Calls()
    gate.wait(now)
    assert len(now.times) == 1, "waiting on an open gate should call back at once"
    gate.grew(100)
    gone = Calls()
    gate.wait(gone)
    gate.cancel(gone)
    gate.shrank(0)
    assert gone.times == []


def test_without_an_event_loop_the_gate_never_holds() -> None:
    gate = FlowGate(100, 25)
    gate.grew(1000)  # no loop, so no timer could ever end a stall
    assert not gate.holding


def test_water_marks_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="low < high"):
        FlowGate(10, 10)


def test_stall_window_is_one_second() -> None:
    assert STALL_S == 1.0  # docs/logs.md states it
