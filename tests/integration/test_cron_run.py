"""Cron units in a real ``vastinit run``: due runs, overlap, conditions, ctl start/stop, stop rules.

A job is made due within seconds by shifting the daemon's wall clock with the test-only
``VASTINIT_CLOCK_OFFSET`` (``offset_for_due_in``), so a ``* * * * *`` job fires at the next
minute boundary of the shifted clock instead of up to a real minute later.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import PROGRAMS, Vastinit, pid_alive, wait_until, write_unit
from vastinit.cron.scheduler import CLOCK_OFFSET_ENV, offset_for_due_in

Start = Callable[..., Vastinit]


def start_due_in(start: Start, seconds: float) -> tuple[Vastinit, float]:
    """A vastinit whose ``* * * * *`` jobs are due ``seconds`` from now; and that real time."""
    offset = offset_for_due_in(seconds)
    due = time.time() + seconds
    v = start(control=True, env={CLOCK_OFFSET_ENV: repr(offset)})
    v.wait_control()
    return v, due


def status(v: Vastinit, name: str) -> dict[str, Any]:
    """``ctl status --json NAME``: the unit's entry."""
    result = v.ctl("status", "--json", name)
    assert result.returncode in (0, 3), result.stderr
    units: list[dict[str, Any]] = json.loads(result.stdout)["units"]
    return units[0]


def unit_events(v: Vastinit, name: str, event: str) -> list[dict[str, Any]]:
    """vastinit's own events about ``name`` whose message starts with ``event``."""
    return [
        e
        for e in list(v.events)
        if e.get("unit") == name and str(e.get("event", "")).startswith(event)
    ]


def wait_event(v: Vastinit, name: str, event: str, timeout: float = 15.0) -> dict[str, Any]:
    found: list[dict[str, Any]] = wait_until(
        lambda: unit_events(v, name, event), timeout, f"{name} to log {event!r}"
    )
    return found[0]


def test_due_job_runs_once_on_time_then_is_scheduled_with_its_exit_and_next_run(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(
        units_dir,
        "tick",
        """
        type = "cron"
        command = "echo tick ran; exit 3"
        [schedule]
        cron = "* * * * *"
    """,
    )
    v, due = start_due_in(vastinit_run, 4)
    v.wait_state("tick", "scheduled")
    assert v.states("tick") == ["waiting", "scheduled"], "ran before its time"
    v.wait_line("tick", "tick ran", timeout=15)
    v.wait_state("tick", "scheduled", count=2)
    started = v.event("tick", "starting")
    assert started is not None
    # Never early; and woken on the dot, not by a coarse tick.
    assert due - 0.05 <= started["ts"] <= due + 1.0, (started["ts"] - due, started)
    st = status(v, "tick")
    assert st["state"] == "scheduled" and st["fine"] is True
    assert st["last_exit_code"] == 3 and st["last_exit"] == "exit 3"
    assert st["last_run_duration"] is not None and 0 <= st["last_run_duration"] < 5
    assert abs(st["started_at"] - started["ts"]) < 0.5
    # The next run is the next minute boundary of the shifted clock, in real epoch seconds.
    assert abs(st["next_run"] - (due + 60)) < 1.0, st["next_run"] - due
    table = v.ctl("status", "tick")
    assert re.search(r"scheduled .* exit 3 +in [45]\ds ", table.stdout), table.stdout
    assert v.states("tick").count("starting") == 1, "one due time, one run"
    assert v.terminate() == 0


def test_overlap_skip_skips_a_due_run_while_the_previous_one_is_going(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    release = tmp_path / "release"
    write_unit(
        units_dir,
        "slow",
        f"""
        type = "cron"
        command = "echo slow started; while [ ! -e {release} ]; do sleep 0.05; done; echo slow done"
        [schedule]
        cron = "* * * * *"
        run_on_start = true
    """,
    )
    v, due = start_due_in(vastinit_run, 3)
    v.wait_line("slow", "slow started")
    skipped = wait_event(v, "slow", "cron run skipped")
    assert skipped["ts"] >= due - 0.05
    # Both times are in the log line: when the skipped run was due, when the going one began.
    assert "skipped: the run started" in skipped["reason"], skipped
    assert 'overlap = "skip"' in skipped["reason"]
    assert v.state("slow") == "running"
    release.touch()
    v.wait_line("slow", "slow done")
    v.wait_state("slow", "scheduled", count=2)
    assert v.states("slow").count("starting") == 1, v.states("slow")
    assert status(v, "slow")["last_exit_code"] == 0
    assert v.terminate() == 0


def test_overlap_allow_runs_side_by_side_and_stop_ends_every_run_by_its_stop_rule(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    # Each run writes its pid, then ignores SIGTERM: only [stop]'s SIGKILL after 1s ends it.
    write_unit(
        units_dir,
        "both",
        f"""
        type = "cron"
        command = "trap '' TERM; touch {pids}/$$$$; echo run $$$$; while :; do sleep 0.05; done"
        [schedule]
        cron = "* * * * *"
        overlap = "allow"
        run_on_start = true
        [stop]
        timeout = "1s"
    """,
    )
    v, _ = start_due_in(vastinit_run, 3)
    wait_event(v, "both", "overlapping run started")
    running = wait_until(
        lambda: [int(p.name) for p in pids.iterdir()] if len(list(pids.iterdir())) == 2 else None,
        10,
        "two runs side by side",
    )
    assert all(pid_alive(p) for p in running)
    wait_until(lambda: len(v.unit_lines("both")) == 2, 5, "output of both runs")
    result = v.ctl("stop", "both")
    assert result.returncode == 0, result.stdout + result.stderr
    v.wait_state("both", "stopped")
    assert not any(pid_alive(p) for p in running), "a run outlived the stop"
    # One stop timeout (1s) for all runs together, not one per run.
    began = wait_event(v, "both", "stopping every run")["ts"]
    took = v.event("both", "stopped")["ts"] - began  # type: ignore[index]
    assert 1.0 <= took < 1.8, took
    stopped = unit_events(v, "both", "run stopped")
    assert len(stopped) == 2 and all("SIGKILL after SIGTERM" in e["by"] for e in stopped)
    assert status(v, "both")["next_run"] is None
    assert v.terminate() == 0


def test_ctl_stop_pauses_the_schedule_and_ctl_start_resumes_it_then_runs_it_now(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(
        units_dir,
        "job",
        """
        type = "cron"
        command = "echo job ran"
        [schedule]
        cron = "* * * * *"
    """,
    )
    v, due = start_due_in(vastinit_run, 6)
    v.wait_state("job", "scheduled")
    assert abs(status(v, "job")["next_run"] - due) < 1.0
    result = v.ctl("stop", "job")
    assert result.returncode == 0, result.stderr
    v.wait_state("job", "stopped")
    assert time.time() < due, "setup took too long: the stop came after the due time"
    assert status(v, "job")["next_run"] is None
    # Past the due time: a stopped job's schedule is paused.
    wait_until(lambda: time.time() > due + 1.5, 10, "the due time to pass", interval=0.1)
    assert "starting" not in v.states("job"), v.states("job")
    # Start on a stopped job: the schedule resumes (armed again, next minute), no run yet.
    result = v.ctl("start", "job")
    assert result.returncode == 0, result.stdout + result.stderr
    v.wait_state("job", "scheduled", count=2)
    st = status(v, "job")
    assert abs(st["next_run"] - (due + 60)) < 1.0 and st["last_exit"] is None
    assert "starting" not in v.states("job")
    # Start on a scheduled job: it runs now.
    result = v.ctl("start", "job")
    assert result.returncode == 0, result.stdout + result.stderr
    v.wait_line("job", "job ran")
    v.wait_state("job", "scheduled", count=3)
    assert status(v, "job")["last_exit_code"] == 0
    assert v.states("job").count("starting") == 1
    assert v.terminate() == 0


def test_false_condition_skips_the_run_and_keeps_the_job_scheduled(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    flag = tmp_path / "enabled"
    write_unit(
        units_dir,
        "guarded",
        f"""
        type = "cron"
        command = "echo guarded ran"
        [schedule]
        cron = "@daily"
        run_on_start = true
        [condition]
        path_exists = ["{flag}"]
    """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    skipped = wait_event(v, "guarded", "cron run skipped: condition is false")
    assert skipped["reason"] == f"{flag} does not exist"
    assert v.states("guarded") == ["waiting", "scheduled"]
    flag.touch()
    assert v.ctl("start", "guarded").returncode == 0
    v.wait_line("guarded", "guarded ran")
    v.wait_state("guarded", "scheduled", count=2)
    assert v.terminate() == 0


def test_shutdown_stops_a_running_job_by_its_stop_rule(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    pidfile = tmp_path / "stubborn.pids"
    write_unit(
        units_dir,
        "stubborn",
        f"""
        type = "cron"
        command = ["{sys.executable}", "{PROGRAMS / "stubborn.py"}", "{pidfile}"]
        [schedule]
        cron = "@reboot"
        [stop]
        timeout = "500ms"
    """,
    )
    v = vastinit_run()
    v.wait_line("stubborn", "stubborn ready")
    pids = [int(p) for p in pidfile.read_text().split()]
    assert v.terminate() == 0
    stopped = v.event("stubborn", "stopped")
    assert stopped is not None and "SIGKILL after SIGTERM timed out" in stopped["cause"]
    assert not any(pid_alive(p) for p in pids)


def test_a_run_whose_environment_cannot_be_built_is_logged_and_the_schedule_goes_on(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    # 2 x 100 KiB: one expanded value past MAX_EXPANSION (128 KiB), which execve refuses.
    env_file = tmp_path / "job.env"
    env_file.write_text("A=" + "a" * 100 * 1024 + "\n")
    write_unit(
        units_dir,
        "big",
        f"""
        type = "cron"
        command = "sh -c 'echo big ran $${{#X}}'"
        env_files = ["{env_file}"]
        environment = {{ X = "${{A}}${{A}}" }}
        [schedule]
        cron = "@daily"
        run_on_start = true
    """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    failed = wait_event(v, "big", "cron run could not start")
    assert "environment.X" in failed["error"], failed
    st = status(v, "big")
    assert st["state"] == "scheduled" and st["last_exit_code"] == 127, st
    # Fixed on disk: the next run (here: run now) reads the files again and runs.
    env_file.write_text("A=short\n")
    assert v.ctl("start", "big").returncode == 0
    v.wait_line("big", "big ran 10")
    v.wait_state("big", "scheduled", count=2)
    assert v.terminate() == 0


def test_a_run_whose_command_cannot_be_expanded_is_logged_and_the_schedule_goes_on(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    # The environment builds (each value is under 128 KiB), the command does not: one
    # argument of 2 x 100 KiB is past what execve takes.
    env_file = tmp_path / "job.env"
    env_file.write_text("A=" + "a" * 100 * 1024 + "\n")
    write_unit(
        units_dir,
        "argbomb",
        f"""
        type = "cron"
        command = ["echo", "ran", "${{A}}${{A}}"]
        env_files = ["{env_file}"]
        [schedule]
        cron = "@daily"
        run_on_start = true
    """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    failed = wait_event(v, "argbomb", "cron run could not start")
    assert "128 KiB" in failed["error"], failed
    assert status(v, "argbomb")["state"] == "scheduled"
    env_file.write_text("A=short\n")
    assert v.ctl("start", "argbomb").returncode == 0
    v.wait_line("argbomb", "ran shortshort")
    v.wait_state("argbomb", "scheduled", count=2)
    assert "failed" not in v.states("argbomb")
    assert v.terminate() == 0
