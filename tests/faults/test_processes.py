"""Faults of the units' processes: a double-forking daemon, a unit that SIGSTOPs itself, a
group whose members ignore SIGTERM. vastinit runs as PID 1 of a PID namespace of its own
where reaping matters (the daemon), else as a child subreaper (pids then read the same here
and there); `ctl status` must answer within 200 ms throughout."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import descendants
from tests.faults.common import StatusProbe
from tests.harness import PROGRAMS, Vastinit, pid_alive, wait_until, write_unit

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

PY = sys.executable
Start = Callable[..., Vastinit]


def status(v: Vastinit, name: str) -> dict[str, Any]:
    result = v.ctl("status", "--json", name, timeout=10)
    assert result.returncode in (0, 3), result.stderr
    unit: dict[str, Any] = json.loads(result.stdout)["units"][0]
    return unit


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


@pytest.mark.skipif(os.geteuid() != 0, reason="PID 1 in a PID namespace needs root")
def test_double_fork_daemon_is_logged_and_reaped(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """The main process double-forks (setsid in between) and exits 0 at once; the daemon
    keeps writing to the unit's stdout for a while, then exits as an orphan of PID 1."""
    pidfile = tmp_path / "daemon.pid"
    write_unit(
        units_dir,
        "forker",
        f"""
        command = ["{PY}", "{PROGRAMS / "daemonize.py"}", "{pidfile}", "40"]
        [restart]
        policy = "never"
        """,
    )
    v = vastinit_run(control=True, pid1=True)
    v.wait_control()
    with StatusProbe(v.socket, tmp_path) as probe:
        v.wait_line("forker", "parent exiting")
        v.wait_state("forker", "exited")
        daemon = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 10, "pid"))
        # The daemon outlives the unit's main process and its lines still reach the logs.
        v.wait_line("forker", "daemon line 39")
        # Once it exits, PID 1 reaps it: no zombie left behind.
        wait_until(
            lambda: not any(state == "Z" for state in descendants(v.pid).values()),
            10,
            f"no zombie under vastinit (the daemon was {daemon})",
        )
        st = status(v, "forker")
    probe.assert_responsive()
    assert st["state"] == "exited" and st["last_exit_code"] == 0, st
    want = [f"daemon line {i}" for i in range(40)]
    assert [ln for ln in v.unit_lines("forker") if ln.startswith("daemon")] == want
    file_lines = (v.log_dir / "forker.log").read_text().splitlines()
    assert [ln for ln in file_lines if ln.startswith("daemon")] == want
    assert v.terminate() == 0


def test_unit_that_sigstops_itself_can_be_stopped_and_restarted(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """The unit's process sends itself SIGSTOP. `ctl stop` must still end it (a stopped
    process does not act on SIGTERM until continued: SIGCONT, or SIGKILL at the timeout),
    and `ctl restart` must start it again."""
    write_unit(
        units_dir,
        "frozen",
        """
        command = "echo stopping myself; kill -STOP $$$$; echo continued; exec sleep 60"
        [stop]
        timeout = "2s"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    with StatusProbe(v.socket, tmp_path) as probe:
        v.wait_line("frozen", "stopping myself")
        first = status(v, "frozen")["pid"]
        wait_until(lambda: proc_state(first) == "T", 10, f"pid {first} to be stopped (T)")
        assert status(v, "frozen")["state"] in ("running", "ready")
        started = time.monotonic()
        result = v.ctl("stop", "frozen", timeout=20)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert took < 2 + 3, f"stop took {took:.1f}s with a 2s stop timeout"
        assert v.state("frozen") == "stopped"
        wait_until(lambda: not pid_alive(first), 5, f"pid {first} gone")
        result = v.ctl("restart", "frozen", timeout=20)
        assert result.returncode == 0, result.stderr
        v.wait_line("frozen", "stopping myself")  # the new process, stopped in its turn
        second = status(v, "frozen")["pid"]
        assert second not in (None, first)
        wait_until(lambda: proc_state(second) == "T", 10, f"pid {second} to be stopped (T)")
        result = v.ctl("restart", "frozen", timeout=20)
        assert result.returncode == 0, result.stderr
        third = wait_until(
            lambda: (pid := status(v, "frozen")["pid"]) not in (None, second) and pid,
            10,
            "a third process",
        )
        wait_until(lambda: not pid_alive(second), 5, f"pid {second} gone")
    probe.assert_responsive()
    assert pid_alive(third)
    assert v.terminate() == 0


def test_group_ignoring_sigterm_is_killed_at_the_stop_timeout(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """A unit whose process and two grandchildren ignore SIGTERM: `ctl stop` sends SIGTERM to
    the group, waits the 2 s stop timeout, then SIGKILLs the whole group; status answers all
    along and the unit starts again afterwards."""
    pids_file = tmp_path / "pids"
    write_unit(
        units_dir,
        "stubborn",
        f"""
        command = ["{PY}", "{PROGRAMS / "stubborn.py"}", "{pids_file}"]
        [stop]
        timeout = "2s"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    with StatusProbe(v.socket, tmp_path) as probe:
        v.wait_line("stubborn", "stubborn ready")
        pids = [int(p) for p in pids_file.read_text().split()]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
        started = time.monotonic()
        result = v.ctl("stop", "stubborn", timeout=20)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert 1.9 <= took < 2 + 3, f"stop took {took:.1f}s with a 2s stop timeout"
        stopped = v.event("stubborn", "stopped")
        assert stopped is not None and "SIGKILL" in stopped["cause"], stopped
        assert not any(pid_alive(p) for p in pids), "a member of the group survived the stop"
        pids_file.unlink()
        result = v.ctl("start", "stubborn", timeout=20)
        assert result.returncode == 0, result.stderr
        wait_until(pids_file.exists, 10, "the restarted group's pids")
    probe.assert_responsive()
    assert v.terminate() == 0
