"""The core engine against real processes: order, skips, restarts, stops, PID 1."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.common import descendants
from tests.harness import PROGRAMS, Vastinit, pid_alive, wait_until, write_unit

PY = sys.executable
Start = Callable[..., Vastinit]


def test_dependent_starts_after_dependency_and_skips_propagate(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(
        units_dir,
        "prep",
        """
        type = "oneshot"
        command = "echo preparing; exit 0"
    """,
    )
    write_unit(
        units_dir,
        "web",
        """
        command = ["sleep", "60"]
        [depends_on]
        prep = "succeeded"
    """,
    )
    write_unit(
        units_dir,
        "needs_model",
        """
        command = ["sleep", "60"]
        [condition]
        env = ["SURELY_UNSET_MODEL_VAR"]
    """,
    )
    write_unit(
        units_dir,
        "ui",
        """
        command = ["sleep", "60"]
        [depends_on]
        needs_model = "ready"
    """,
    )
    v = vastinit_run()
    v.wait_state("web", "ready")
    order = v.transitions()
    assert order.index(("prep", "exited")) < order.index(("web", "starting"))
    v.wait_state("ui", "skipped")
    assert v.event("needs_model", "skipped")["cause"] == "SURELY_UNSET_MODEL_VAR is not set"
    assert "needs_model" in v.event("ui", "skipped")["cause"]
    v.wait_line("prep", "preparing")
    assert v.terminate() == 0


def test_condition_skipped_job_lets_dependents_start(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(
        units_dir,
        "provisioning",
        """
        type = "oneshot"
        command = "exit 0"
        [condition]
        path_missing = ["/"]
    """,
    )
    write_unit(
        units_dir,
        "app",
        """
        command = ["sleep", "60"]
        [depends_on]
        provisioning = "exited"
    """,
    )
    v = vastinit_run()
    v.wait_state("app", "ready")
    assert v.state("provisioning") == "skipped"
    assert v.terminate() == 0


def test_killed_service_is_restarted_after_its_delay(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    pidfile = tmp_path / "pid"
    write_unit(
        units_dir,
        "svc",
        f"""
        command = "echo $$$$ > {pidfile}; exec sleep 60"  # $$ is a literal $
        [restart]
        delay = "300ms"
    """,
    )
    v = vastinit_run()
    v.wait_state("svc", "ready")
    first = int(
        wait_until(lambda: pidfile.read_text().strip() if pidfile.exists() else "", 5, "pid file")
    )
    pidfile.unlink()
    os.kill(first, 9)
    v.wait_state("svc", "backoff")
    assert "killed by SIGKILL; restarting in 300ms" in v.event("svc", "backoff")["cause"]
    v.wait_state("svc", "ready", count=2)
    second = int(
        wait_until(
            lambda: pidfile.read_text().strip() if pidfile.exists() else "", 5, "new pid file"
        )
    )
    assert second != first
    backoff_at = v.event("svc", "backoff")["ts"]
    restarted = [e for e in v.events if e.get("unit") == "svc" and e.get("state") == "starting"]
    assert restarted[1]["ts"] - backoff_at >= 0.3
    assert v.terminate() == 0


def test_crash_loop_ends_in_failed(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(
        units_dir,
        "crashy",
        """
        command = "exit 3"
        [restart]
        delay = "0s"
        limit = 3
        window = "1m"
    """,
    )
    v = vastinit_run()
    v.wait_state("crashy", "failed")
    assert v.states("crashy").count("starting") == 4  # first start + 3 restarts
    assert "restart limit reached" in v.event("crashy", "failed")["cause"]
    assert v.terminate() == 0


def test_essential_failure_stops_everything_with_its_code(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "other", 'command = ["sleep", "60"]')
    write_unit(
        units_dir,
        "core",
        """
        type = "oneshot"
        command = "exit 7"
        [restart]
        essential = true
    """,
    )
    v = vastinit_run()
    v.proc.wait(20)
    assert v.proc.returncode == 7
    assert v.state("other") == "stopped"


def test_sigterm_ignoring_group_is_killed_at_timeout(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    pids_file = tmp_path / "pids"
    write_unit(
        units_dir,
        "stubborn",
        f"""
        command = ["{PY}", "{PROGRAMS / "stubborn.py"}", "{pids_file}"]
        [stop]
        timeout = "500ms"
    """,
    )
    v = vastinit_run()
    v.wait_line("stubborn", "stubborn ready")
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    assert v.terminate() == 0
    stopped = v.event("stubborn", "stopped")
    assert "SIGKILL after SIGTERM timed out (500ms)" in stopped["cause"]
    assert not any(pid_alive(p) for p in pids), "a grandchild survived the stop"


def test_stop_order_is_reverse_dependency_order(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "db", 'command = ["sleep", "60"]')
    write_unit(
        units_dir,
        "api",
        """
        command = ["sleep", "60"]
        depends_on = { db = "ready" }
    """,
    )
    v = vastinit_run()
    v.wait_state("api", "ready")
    assert v.terminate() == 0
    order = v.transitions()
    assert order.index(("api", "stopped")) < order.index(("db", "stopping"))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) missing")
def test_as_pid1_reaps_1000_orphans_and_exits_0_on_sigterm(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(
        units_dir,
        "orphans",
        f"""
        command = ["{PY}", "{PROGRAMS / "orphans.py"}", "1000"]
    """,
    )
    write_unit(units_dir, "idle", 'command = ["sleep", "60"]')
    v = vastinit_run(pid1=True)
    v.wait_line("orphans", "spawned 1000 orphans", timeout=60)
    assert any(e.get("event") == "vastinit starting" and e.get("pid") == 1 for e in v.events)
    ns_root = v.proc.pid  # unshare; vastinit is its child (PID 1 inside)

    def zombies_and_orphans() -> tuple[int, int]:
        tree = descendants(ns_root)
        return sum(1 for s in tree.values() if s == "Z"), len(tree)

    # Every orphan sleeps 50 ms then exits; none may stay a zombie.
    wait_until(
        lambda: zombies_and_orphans() == (0, 3),
        10,
        "no zombies left (tree: vastinit, orphans.py, sleep)",
    )
    assert v.terminate() == 0


def test_missing_program_fails_or_is_skipped_never_crash_looped(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "typo", 'command = ["surely-not-installed-vastinit-tool", "--x"]')
    write_unit(
        units_dir,
        "optional",
        'command = ["surely-not-installed-vastinit-tool", "--x"]\nmissing_program = "skip"',
    )
    write_unit(
        units_dir,
        "badcwd",
        """
        command = ["sleep", "60"]
        working_dir = "/surely/not/a/dir"
    """,
    )
    v = vastinit_run()
    v.wait_state("optional", "skipped")
    assert v.event("optional", "skipped")["cause"] == (
        "program not found: surely-not-installed-vastinit-tool"
    )
    assert v.states("optional").count("starting") == 1
    v.wait_state("typo", "failed")
    assert v.event("typo", "failed")["cause"] == (
        "program not found: surely-not-installed-vastinit-tool"
    )
    assert v.states("typo").count("starting") == 1
    v.wait_state("badcwd", "failed")
    assert "working_dir /surely/not/a/dir does not exist" in v.event("badcwd", "failed")["cause"]
    assert v.terminate() == 0


def test_user_working_dir_environment_and_stdin(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env_file = tmp_path / "unit.env"
    env_file.write_text("# comment\nexport FROM_FILE='file value'\n")
    write_unit(
        units_dir,
        "who",
        f"""
        type = "oneshot"
        user = "nobody"
        working_dir = "{workdir}"
        env_files = ["{env_file}", "{tmp_path}/missing.env"]
        environment = {{ GREETING = "hi ${{FROM_FILE}}" }}
        # stdin is /dev/null: cat ends at once instead of hanging
        command = "cat; echo uid=$$(id -u) cwd=$$(pwd) greeting=$$GREETING gpus=$$GPU_COUNT"
    """,
    )
    v = vastinit_run()
    v.wait_state("who", "exited")
    nobody = __import__("pwd").getpwnam("nobody").pw_uid
    v.wait_line("who", f"uid={nobody} cwd={workdir} greeting=hi file value gpus=")
    assert v.terminate() == 0


def test_env_files_are_reread_at_every_start(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("COLOR=red\n")
    write_unit(
        units_dir,
        "app",
        f"""
        command = "echo color=$$COLOR; exec sleep 60"
        env_files = ["{env_file}"]
        [restart]
        delay = "0s"
    """,
    )
    v = vastinit_run()
    v.wait_line("app", "color=red")
    env_file.write_text("COLOR=blue\n")
    pid = int(v.event("app", "running")["cause"].split()[1])
    os.kill(pid, 9)
    v.wait_line("app", "color=blue")
    assert v.terminate() == 0
