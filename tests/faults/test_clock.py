"""Wall-clock jumps under a running vastinit with a `* * * * *` cron unit.

The jump is made with tests/faults/clock_hook (a sitecustomize that adds the seconds in a
file to the scheduler's wall clock, read at each look), after VASTINIT_CLOCK_OFFSET has put
the next fire time a few seconds ahead, as tests/integration/test_cron_run.py does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import StatusProbe
from tests.harness import REPO, Vastinit, write_unit

try:
    from vastinit.cron.scheduler import (  # type: ignore[import-not-found]
        CLOCK_OFFSET_ENV,
        offset_for_due_in,
    )
except ImportError:
    from vastinit.scheduler import CLOCK_OFFSET_ENV, offset_for_due_in

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

HOOK = Path(__file__).resolve().parent / "clock_hook"
Start = Callable[..., Vastinit]

TICK = """
type = "cron"
command = "echo tick ran"
[schedule]
cron = "* * * * *"
"""


def _start(start: Start, tmp: Path, due_in: float) -> tuple[Vastinit, Path]:
    step = tmp / "clock-step"
    step.write_text("0")
    env = {
        CLOCK_OFFSET_ENV: repr(offset_for_due_in(due_in)),
        "VASTINIT_TEST_CLOCK_FILE": str(step),
        "PYTHONPATH": f"{HOOK}:{REPO}",
    }
    v = start(control=True, env=env)
    v.wait_control()
    v.wait_state("tick", "scheduled")
    return v, step


def _notes(v: Vastinit) -> list[str]:
    with v._cond:
        return [json.dumps(e) for e in v.events if e.get("unit") == "tick" and "line" not in e]


def _runs(v: Vastinit) -> int:
    return sum(1 for ln in v.unit_lines("tick") if ln == "tick ran")


def _status(v: Vastinit) -> dict[str, Any]:
    unit: dict[str, Any] = json.loads(v.ctl("status", "--json", "tick").stdout)["units"][0]
    return unit


def test_forward_jump_runs_a_missed_job_once_not_per_missed_minute(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "tick", TICK)
    v, step = _start(vastinit_run, tmp_path, due_in=5)
    with StatusProbe(v.socket, tmp_path) as probe:
        time.sleep(1)
        step.write_text("600")  # NTP steps the clock 10 minutes forward
        v.wait_line("tick", "tick ran", timeout=15)
        v.wait_state("tick", "scheduled", count=2)
        time.sleep(2)  # time for a burst of catch-up runs, which must not come
        st = _status(v)
    probe.assert_responsive()
    assert _runs(v) == 1, f"{_runs(v)} runs for one jump"
    assert any("jump" in n for n in _notes(v)), "the jump is not mentioned in the log"
    assert st["state"] == "scheduled" and st["next_run"] is not None, st
    assert v.terminate() == 0


def test_backward_jump_neither_reruns_nor_wedges_the_schedule(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """A step back of 4 h (past cronie's 3 h tolerance) is taken as a clock correction: the
    schedule restarts from the new time, nothing runs twice, the unit stays scheduled and
    runs again at the next minute of the corrected clock."""
    write_unit(units_dir, "tick", TICK)
    v, step = _start(vastinit_run, tmp_path, due_in=8)
    with StatusProbe(v.socket, tmp_path) as probe:
        time.sleep(1)
        step.write_text(str(-4 * 3600))
        v._wait(lambda: any("correction" in n for n in _notes(v)), 15, "a note on the correction")
        st = _status(v)
    probe.assert_responsive()
    assert _runs(v) <= 1
    assert st["state"] == "scheduled" and st["next_run"] is not None, st
    # The next run is about a minute away (on the corrected clock, or shown on the host's),
    # not 4 hours away.
    now = time.time()
    assert min(abs(st["next_run"] - now), abs(st["next_run"] - (now - 4 * 3600))) <= 120, st
    assert v.terminate() == 0
