"""When the control commands' waits end, by unit type and state (pure tables)."""

from __future__ import annotations

import pytest

from vastinit.model import State, UnitType
from vastinit.supervisor.commands import ready_dead_end, start_outcome, unit_ready

S, T = State, UnitType
IN_PROGRESS = (S.WAITING, S.STARTING, S.RUNNING, S.STOPPING, S.BACKOFF)


@pytest.mark.parametrize(
    ("kind", "state", "outcome"),
    [
        (T.SERVICE, S.READY, "ready"),
        (T.ONESHOT, S.EXITED, "exited"),
        (T.CRON, S.SCHEDULED, "scheduled"),
        (T.SERVICE, S.FAILED, "failed"),
        (T.SERVICE, S.SKIPPED, "skipped"),
        (T.SERVICE, S.STOPPED, "stopped"),  # stopped by someone else meanwhile
        (T.ONESHOT, S.FAILED, "failed"),
        (T.ONESHOT, S.READY, None),  # a oneshot is waited on until it exits
        (T.CRON, S.RUNNING, None),  # a cron run under way: wait for the schedule
        *[(T.SERVICE, state, None) for state in IN_PROGRESS],
        *[(T.ONESHOT, state, None) for state in IN_PROGRESS],
    ],
)
def test_start_wait_ends_at_the_goal_or_a_dead_end(
    kind: UnitType, state: State, outcome: str | None
) -> None:
    assert start_outcome(kind, state) == outcome


@pytest.mark.parametrize(
    ("kind", "ready_in"),
    [
        (T.SERVICE, {S.READY}),
        (T.ONESHOT, {S.EXITED}),
        (T.CRON, {S.SCHEDULED, S.STARTING, S.RUNNING, S.READY, S.STOPPING}),
    ],
)
def test_what_counts_as_ready_for_a_named_unit(kind: UnitType, ready_in: set[State]) -> None:
    assert {state for state in State if unit_ready(kind, state)} == ready_in


@pytest.mark.parametrize("kind", list(UnitType))
def test_ready_wait_gives_up_only_on_failed_or_skipped(kind: UnitType) -> None:
    assert {state for state in State if ready_dead_end(kind, state)} == {S.FAILED, S.SKIPPED}
