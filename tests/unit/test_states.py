"""The transition table: legal moves pass and are reported, illegal ones raise."""

from __future__ import annotations

import pytest

from vastinit.model import State
from vastinit.supervisor.states import TRANSITIONS, IllegalTransition, StateMachine, Transition


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)


def test_legal_moves_are_reported_with_cause() -> None:
    seen: list[Transition] = []
    sm = StateMachine("u", seen.append)
    sm.set(State.WAITING, "boot")
    sm.set(State.STARTING, "dependencies met")
    sm.set(State.RUNNING, "pid 42")
    assert [(t.old, t.new, t.cause) for t in seen] == [
        (State.INACTIVE, State.WAITING, "boot"),
        (State.WAITING, State.STARTING, "dependencies met"),
        (State.STARTING, State.RUNNING, "pid 42"),
    ]
    assert sm.state is State.RUNNING and sm.cause == "pid 42"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], State.READY),  # inactive -> ready skips everything
        ([State.WAITING], State.EXITED),
        ([State.WAITING, State.STARTING, State.RUNNING, State.STOPPING], State.READY),
    ],
)
def test_illegal_moves_raise_and_change_nothing(path: list[State], bad: State) -> None:
    sm = StateMachine("u", lambda t: None)
    for state in path:
        sm.set(state, "test")
    before = sm.state
    with pytest.raises(IllegalTransition):
        sm.set(bad, "nope")
    assert sm.state is before
