"""The unit state machine: an explicit transition table and one checked setter."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from vastinit.errors import VastinitError
from vastinit.model import State

S = State

# Every legal move. Anything else is a bug in the supervisor and raises.
_TABLE: Mapping[State, frozenset[State]] = {
    S.INACTIVE: frozenset({S.WAITING, S.SKIPPED, S.STOPPED}),
    S.WAITING: frozenset({S.STARTING, S.SKIPPED, S.STOPPED, S.SCHEDULED}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FAILED, S.STOPPED, S.SCHEDULED, S.SKIPPED}),
    S.RUNNING: frozenset(
        {S.READY, S.STOPPING, S.BACKOFF, S.FAILED, S.EXITED, S.STOPPED, S.SCHEDULED}
    ),
    S.READY: frozenset(
        {S.RUNNING, S.STOPPING, S.BACKOFF, S.FAILED, S.EXITED, S.STOPPED, S.SCHEDULED}
    ),
    S.STOPPING: frozenset({S.STOPPED, S.BACKOFF, S.FAILED, S.EXITED, S.SCHEDULED}),
    S.STOPPED: frozenset({S.WAITING, S.INACTIVE}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED, S.SKIPPED, S.FAILED}),
    S.EXITED: frozenset({S.WAITING, S.STOPPED}),
    S.FAILED: frozenset({S.WAITING, S.STOPPED}),
    S.SKIPPED: frozenset({S.WAITING, S.STOPPED}),
    S.SCHEDULED: frozenset({S.STARTING, S.STOPPED, S.SKIPPED}),
}
# The bug barrier's move: a unit whose task hit an unexpected exception becomes FAILED
# ("internal error: ...") from whatever state it was in, so FAILED is legal from every state.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    old: moves | {S.FAILED} for old, moves in _TABLE.items()
}

# States in which no process of the unit exists and nothing is pending.
SETTLED: frozenset[State] = frozenset(
    {S.INACTIVE, S.STOPPED, S.EXITED, S.FAILED, S.SKIPPED, S.SCHEDULED}
)
# States a process of the unit may be alive in.
ALIVE: frozenset[State] = frozenset({S.RUNNING, S.READY, S.STOPPING})
# `ctl status` is happy with these.
FINE: frozenset[State] = frozenset({S.READY, S.EXITED, S.SCHEDULED, S.SKIPPED})


class IllegalTransition(VastinitError):
    """The supervisor tried a move the transition table forbids (a bug)."""


@dataclass(frozen=True)
class Transition:
    unit: str
    old: State
    new: State
    cause: str
    at: float  # time.time()


class StateMachine:
    """One unit's state; every change goes through ``set`` and is logged with its cause."""

    def __init__(self, unit: str, on_change: Callable[[Transition], None]) -> None:
        self._unit = unit
        self._state = State.INACTIVE
        self._on_change = on_change
        self._log = structlog.get_logger("vastinit").bind(unit=unit)
        self.cause = "not started"
        self.since = time.time()

    @property
    def state(self) -> State:
        return self._state

    def set(self, new: State, cause: str) -> None:
        """Move to ``new`` for ``cause``; raises IllegalTransition for a forbidden move."""
        old = self._state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"unit {self._unit}: {old} -> {new} is not allowed ({cause})")
        self._state, self.cause, self.since = new, cause, time.time()
        self._log.info(f"{old} -> {new}", state=new.value, cause=cause)
        self._on_change(Transition(self._unit, old, new, cause, self.since))
