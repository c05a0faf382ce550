"""Table-driven tests of the pure supervisor policies."""

from __future__ import annotations

import pytest

from vastinit.model import DependencyCondition as D
from vastinit.model import RestartMode, RestartPolicy, State, UnitType
from vastinit.proc.status import ExitStatus
from vastinit.supervisor.policy import (
    AfterExit,
    DependencyView,
    SkipKind,
    Verdict,
    after_exit,
    backoff_delay,
    dependency_verdict,
    run_was_healthy,
    should_restart,
)

OK, BAD, KILLED = ExitStatus(code=0), ExitStatus(code=1), ExitStatus(signal=9)


@pytest.mark.parametrize(
    ("mode", "status", "expected"),
    [
        (RestartMode.ALWAYS, OK, True),
        (RestartMode.ALWAYS, BAD, True),
        (RestartMode.ON_FAILURE, OK, False),
        (RestartMode.ON_FAILURE, BAD, True),
        (RestartMode.ON_FAILURE, KILLED, True),
        (RestartMode.NEVER, BAD, False),
        (RestartMode.NEVER, KILLED, False),
    ],
)
def test_should_restart(mode: RestartMode, status: ExitStatus, expected: bool) -> None:
    assert should_restart(mode, status) is expected


@pytest.mark.parametrize(
    ("restarts", "now", "action"),
    [
        ([], 100.0, AfterExit.RESTART),
        ([10.0, 20.0, 30.0, 40.0], 50.0, AfterExit.RESTART),  # 4 < limit 5
        ([10.0, 20.0, 30.0, 40.0, 45.0], 50.0, AfterExit.FAILED),  # 5 within window
        ([10.0, 20.0, 30.0, 40.0, 45.0], 700.0, AfterExit.RESTART),  # all outside window
    ],
)
def test_crash_loop_limit_within_window(
    restarts: list[float], now: float, action: AfterExit
) -> None:
    policy = RestartPolicy(limit=5, window=600.0)
    assert after_exit(policy, BAD, restarts, now).action is action


def test_clean_exit_without_restart_is_exited_and_failure_is_failed() -> None:
    never = RestartPolicy(mode=RestartMode.NEVER)
    assert after_exit(never, OK, [], 0).action is AfterExit.EXITED
    failed = after_exit(never, BAD, [], 0)
    assert failed.action is AfterExit.FAILED and failed.reason == "exit 1, restart policy never"


def test_limit_zero_means_no_restart_at_all() -> None:
    assert after_exit(RestartPolicy(limit=0), BAD, [], 0).action is AfterExit.FAILED


@pytest.mark.parametrize(
    ("n", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]
)
def test_backoff_doubles_up_to_max(n: int, delay: float) -> None:
    assert backoff_delay(RestartPolicy(delay=1.0, max_delay=60.0), n) == delay


def test_zero_delay_stays_zero() -> None:
    assert backoff_delay(RestartPolicy(delay=0.0), 10) == 0.0


def test_long_run_resets_backoff() -> None:
    policy = RestartPolicy(delay=1.0, max_delay=60.0)
    assert run_was_healthy(policy, 61.0) and not run_was_healthy(policy, 5.0)


def _view(
    state: State, skip: SkipKind | None = None, kind: UnitType = UnitType.SERVICE
) -> DependencyView:
    return DependencyView(True, True, kind, state, skip)


@pytest.mark.parametrize(
    ("view", "want", "verdict"),
    [
        (_view(State.WAITING), D.STARTED, Verdict.WAIT),
        (_view(State.RUNNING), D.STARTED, Verdict.MET),
        (_view(State.RUNNING), D.READY, Verdict.WAIT),
        (_view(State.READY), D.READY, Verdict.MET),
        (_view(State.BACKOFF), D.READY, Verdict.WAIT),  # restarting: wait, don't fail
        (_view(State.EXITED), D.SUCCEEDED, Verdict.MET),
        (_view(State.FAILED), D.SUCCEEDED, Verdict.NEVER),
        (_view(State.FAILED), D.EXITED, Verdict.MET),
        (_view(State.FAILED), D.READY, Verdict.NEVER),
        (_view(State.SKIPPED, SkipKind.CONDITION), D.EXITED, Verdict.MET),
        (_view(State.SKIPPED, SkipKind.CONDITION), D.SUCCEEDED, Verdict.MET),
        (_view(State.SKIPPED, SkipKind.CONDITION), D.READY, Verdict.NEVER),
        (_view(State.SKIPPED, SkipKind.DEPENDENCY), D.EXITED, Verdict.NEVER),
        (_view(State.STOPPED), D.READY, Verdict.WAIT),
        (_view(State.SCHEDULED, kind=UnitType.CRON), D.STARTED, Verdict.MET),
        (DependencyView(False, False, UnitType.SERVICE, State.INACTIVE), D.READY, Verdict.NEVER),
        (DependencyView(True, False, UnitType.SERVICE, State.SKIPPED), D.EXITED, Verdict.NEVER),
    ],
)
def test_dependency_verdict(view: DependencyView, want: D, verdict: Verdict) -> None:
    assert dependency_verdict(view, want) is verdict
