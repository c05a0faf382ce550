"""The restart and dependency policies at their edges (each case kills a mutant that the
table tests of test_policy.py let live; docs/mutation-results.md)."""

from __future__ import annotations

import pytest

from vastinit.model import DependencyCondition, RestartMode, RestartPolicy, State, UnitType
from vastinit.proc.status import ExitStatus
from vastinit.supervisor.policy import (
    AfterExit,
    DependencyView,
    after_exit,
    backoff_delay,
    dependency_verdict,
    run_was_healthy,
)

D = DependencyCondition


def test_a_probe_failed_run_that_exited_0_counts_as_exit_1() -> None:
    policy = RestartPolicy(mode=RestartMode.NEVER)
    decision = after_exit(policy, ExitStatus(code=0), [], 0.0, failed_run="liveness failed")
    assert decision.action is AfterExit.FAILED
    assert decision.reason == "liveness failed (exit 1), restart policy never"


def test_a_probe_failed_run_killed_by_a_signal_keeps_its_signal() -> None:
    policy = RestartPolicy(mode=RestartMode.NEVER)
    decision = after_exit(policy, ExitStatus(signal=9), [], 0.0, failed_run="not ready")
    assert decision.reason.startswith("not ready (killed by SIGKILL)")


def test_restarts_older_than_the_window_do_not_count_and_the_edge_is_outside() -> None:
    policy = RestartPolicy(mode=RestartMode.ALWAYS, limit=2, window=10.0)
    now = 100.0
    # two restarts exactly one window ago, one well before: none is recent
    old = [now - 10.0, now - 10.0, now - 50.0]
    assert after_exit(policy, ExitStatus(code=1), old, now).action is AfterExit.RESTART
    recent = [now - 9.9, now - 0.1]
    decision = after_exit(policy, ExitStatus(code=1), recent, now)
    assert decision.action is AfterExit.FAILED
    assert "restart limit reached (2 restarts within 10s)" in decision.reason


@pytest.mark.parametrize(
    ("delay", "max_delay", "n", "want"),
    [
        (0.2, 0.5, 0, 0.2),  # before the first failure: the plain delay
        (0.2, 0.5, 1, 0.2),
        (0.2, 0.5, 2, 0.4),
        (0.2, 0.5, 3, 0.5),  # capped
        (0.0, 5.0, 4, 0.0),  # no delay stays no delay, however many failures
    ],
)
def test_backoff_doubles_from_the_second_restart_and_is_capped(
    delay: float, max_delay: float, n: int, want: float
) -> None:
    policy = RestartPolicy(delay=delay, max_delay=max_delay)
    assert backoff_delay(policy, n) == pytest.approx(want)


def test_a_run_of_exactly_max_delay_was_healthy() -> None:
    policy = RestartPolicy(delay=0.2, max_delay=0.5)
    assert run_was_healthy(policy, 0.5)
    assert not run_was_healthy(policy, 0.49)


@pytest.mark.parametrize(
    ("exists", "enabled"), [(False, True), (True, False), (False, False)], ids=str
)
def test_a_missing_or_disabled_dependency_is_never_met(exists: bool, enabled: bool) -> None:
    view = DependencyView(exists, enabled, UnitType.SERVICE, State.READY)
    assert dependency_verdict(view, D.STARTED).value == "never"


def test_scheduled_counts_as_up_only_for_a_cron_unit() -> None:
    cron = DependencyView(True, True, UnitType.CRON, State.SCHEDULED)
    service = DependencyView(True, True, UnitType.SERVICE, State.SCHEDULED)
    oneshot_running = DependencyView(True, True, UnitType.ONESHOT, State.RUNNING)
    assert dependency_verdict(cron, D.READY).value == "met"
    assert dependency_verdict(service, D.READY).value == "wait"
    assert dependency_verdict(oneshot_running, D.SUCCEEDED).value == "wait"
