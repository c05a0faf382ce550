"""Pure policy functions: restart decisions, backoff delays, dependency verdicts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from vastinit.config.values import format_duration
from vastinit.model import DependencyCondition, RestartMode, RestartPolicy, State, UnitType
from vastinit.proc.status import ExitStatus


class AfterExit(enum.Enum):
    RESTART = "restart"
    EXITED = "exited"  # finished cleanly, not to be restarted
    FAILED = "failed"  # finished badly, or crash-looping


@dataclass(frozen=True)
class Decision:
    action: AfterExit
    reason: str


def should_restart(mode: RestartMode, status: ExitStatus) -> bool:
    """Whether ``mode`` restarts a process that ended with ``status`` on its own."""
    if mode is RestartMode.ALWAYS:
        return True
    if mode is RestartMode.ON_FAILURE:
        return not status.success
    return False


def after_exit(
    policy: RestartPolicy,
    status: ExitStatus,
    restarts: Sequence[float],
    now: float,
    *,
    failed_run: str | None = None,
) -> Decision:
    """What to do once a unit's process exited on its own (or was failed by a probe).

    ``restarts`` are the monotonic times of earlier restarts: more than ``policy.limit``
    of them within ``policy.window`` means a crash loop, and the unit fails for good.
    ``failed_run`` (a probe's reason) makes the run a failure whatever its exit status.
    """
    if failed_run is not None and status.success:
        status = ExitStatus(code=1) if status.code is not None else status
    what = f"{failed_run} ({status})" if failed_run else str(status)
    if not should_restart(policy.mode, status):
        if status.success:
            return Decision(AfterExit.EXITED, what)
        return Decision(AfterExit.FAILED, f"{what}, restart policy {policy.mode.value}")
    return _restart_unless_limit(policy, what, restarts, now)


def after_spawn_error(
    policy: RestartPolicy, reason: str, restarts: Sequence[float], now: float
) -> Decision:
    """What to do when a start failed for want of a resource (EMFILE, EAGAIN, ...): try
    again after the backoff delay whatever the restart mode (the program never ran), but
    count the try toward the crash-loop limit, so a lasting shortage ends in ``failed``."""
    return _restart_unless_limit(policy, reason, restarts, now)


def _restart_unless_limit(
    policy: RestartPolicy, what: str, restarts: Sequence[float], now: float
) -> Decision:
    """RESTART, or FAILED once ``policy.limit`` restarts fall within ``policy.window``."""
    recent = sum(1 for t in restarts if now - t < policy.window)
    if recent >= policy.limit:
        return Decision(
            AfterExit.FAILED,
            f"{what}; restart limit reached ({recent} restarts within "
            f"{format_duration(policy.window)})",
        )
    return Decision(AfterExit.RESTART, what)


def backoff_delay(policy: RestartPolicy, consecutive_failures: int) -> float:
    """Delay before restart number ``consecutive_failures`` (1-based): doubling, capped."""
    if consecutive_failures <= 1 or policy.delay <= 0:
        return max(policy.delay, 0.0)
    doubled: float = policy.delay * 2.0 ** (consecutive_failures - 1)
    return min(doubled, max(policy.max_delay, policy.delay))


def run_was_healthy(policy: RestartPolicy, ran_for: float) -> bool:
    """A run that lasted at least ``max_delay`` resets the doubling: it was not a crash loop."""
    return ran_for >= max(policy.max_delay, policy.delay)


class SkipKind(enum.Enum):
    CONDITION = "condition"  # nothing to do here: the unit's own condition is false
    DEPENDENCY = "dependency"  # a dependency can never reach what it needs
    DISABLED = "disabled"


class Verdict(enum.Enum):
    MET = "met"
    WAIT = "wait"
    NEVER = "never"


@dataclass(frozen=True)
class DependencyView:
    """What a dependent may know about one dependency."""

    exists: bool
    enabled: bool
    type: UnitType
    state: State
    skip_kind: SkipKind | None = None
    cause: str = ""


def dependency_verdict(dep: DependencyView, want: DependencyCondition) -> Verdict:
    """Whether ``dep`` satisfies ``want`` now, may later, or never can (without a restart)."""
    if not dep.exists or not dep.enabled:
        return Verdict.NEVER
    st = dep.state
    if st is State.SKIPPED:
        # A unit skipped by its own condition had nothing to do: a job that needed no
        # run is done, but a service that isn't there can't be started on or be ready.
        if dep.skip_kind is SkipKind.CONDITION and want in (
            DependencyCondition.SUCCEEDED,
            DependencyCondition.EXITED,
        ):
            return Verdict.MET
        return Verdict.NEVER
    if st is State.FAILED:
        return Verdict.MET if want is DependencyCondition.EXITED else Verdict.NEVER
    if st is State.EXITED:
        return Verdict.MET
    if dep.type is UnitType.CRON and st is State.SCHEDULED:
        return Verdict.MET  # a cron unit is "up" once its schedule is armed
    if want is DependencyCondition.STARTED and st in (State.RUNNING, State.READY):
        return Verdict.MET
    if want is DependencyCondition.READY and st is State.READY:
        return Verdict.MET
    return Verdict.WAIT
