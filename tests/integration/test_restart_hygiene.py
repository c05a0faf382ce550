"""What a restart owes the next run: an empty group, and a backoff that forgets a healthy run.

Each test here kills a mutant the suite used to miss (issue 10, item 11; see
docs/mutation-results.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Vastinit, pid_alive, wait_until, write_unit

Start = Callable[..., Vastinit]


def _events(v: Vastinit, unit: str, state: str) -> list[dict[str, Any]]:
    return [e for e in v.events if e.get("unit") == unit and e.get("state") == state]


def test_leftovers_of_a_main_process_that_exited_are_gone_before_the_restart(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """The main process exits while a process it started keeps running in its group: that
    process is stopped before the unit starts again (a second SGLang never meets the first)."""
    pidfile = tmp_path / "leftover.pid"
    # $$ is a literal $; the pid file appears whole (mv) so it is never read half-written
    script = f"sleep 60 >/dev/null 2>&1 & echo $$! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}"
    write_unit(units_dir, "svc", f'command = "{script}; exit 1"\n[restart]\ndelay = "300ms"\n')
    v = vastinit_run()
    leftover = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "pid"))
    v.wait_state("svc", "starting", count=2)
    assert not pid_alive(leftover), f"pid {leftover} of the first run outlived it into the next"
    stopping = v.event("svc", "stopping")
    assert stopping is not None and "stopping what is left of its group" in stopping["cause"]
    assert v.terminate() == 0


def test_a_run_longer_than_max_delay_restarts_after_delay_not_a_doubled_one(
    units_dir: Path, vastinit_run: Start
) -> None:
    """delay 0.2 s, max_delay 0.5 s: a unit that ran 0.8 s before each crash restarts after
    0.2 s every time; one that crashes at once doubles (the control: 0.2 s, then 0.4 s)."""
    restart = '[restart]\ndelay = "200ms"\nmax_delay = "500ms"\n'
    write_unit(units_dir, "healthy", 'command = "sleep 0.8; exit 1"\n' + restart)
    write_unit(units_dir, "crashy", 'command = "exit 1"\n' + restart)
    v = vastinit_run()
    v.wait_state("healthy", "starting", count=3, timeout=20)
    v.wait_state("crashy", "starting", count=3, timeout=20)

    healthy = _events(v, "healthy", "backoff")[:2]
    assert [e["cause"] for e in healthy] == ["exit 1; restarting in 200ms"] * 2
    crashy = _events(v, "crashy", "backoff")[:2]
    assert [e["cause"] for e in crashy] == [
        "exit 1; restarting in 200ms",
        "exit 1; restarting in 400ms",
    ]
    # The delays as the event stream timed them: never shorter than announced (the upper
    # side is left to the causes above: a loaded 2-core machine may add any latency).
    for unit, announced in (("healthy", [0.2, 0.2]), ("crashy", [0.2, 0.4])):
        backoffs, starts = _events(v, unit, "backoff"), _events(v, unit, "starting")
        waited = [starts[i + 1]["ts"] - backoffs[i]["ts"] for i in range(2)]
        assert all(w >= a - 0.01 for w, a in zip(waited, announced, strict=True)), (unit, waited)
    assert v.terminate() == 0
