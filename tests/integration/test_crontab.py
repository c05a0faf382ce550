"""Crontabs as units in a real ``vastinit run``, with the real ``crontab`` program.

Nothing here touches this machine's crontabs: vastinit reads scratch directories (the
``VASTINIT_CRON*`` variables), and ``crontab`` itself, whose spool path is built in, runs
under ``unshare -m`` with a scratch directory bind-mounted on /var/spool/cron/crontabs in its
own mount namespace. Jobs are made due within seconds with ``VASTINIT_CLOCK_OFFSET``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Vastinit, pid_alive, wait_until, write_unit
from vastinit.cron.scheduler import CLOCK_OFFSET_ENV, offset_for_due_in

SPOOL = Path("/var/spool/cron/crontabs")

needs_crontab = pytest.mark.skipif(
    shutil.which("crontab") is None or shutil.which("unshare") is None or not SPOOL.is_dir(),
    reason="needs Debian's cron package (crontab) and unshare (.ci/run installs them)",
)


def cron_dirs(tmp: Path) -> tuple[dict[str, str], Path, Path]:
    """Scratch cron directories; the env that points vastinit at them; cron.d and spool."""
    cron_d, spool = tmp / "cron.d", tmp / "crontabs"
    cron_d.mkdir()
    spool.mkdir()
    gid = grp.getgrnam("crontab").gr_gid if _has_group("crontab") else 0
    os.chown(spool, 0, gid)
    spool.chmod(0o1730)  # as Debian's cron package makes it
    env = {
        "VASTINIT_CRONTABS": "on",
        "VASTINIT_ROLE": "box",
        "VASTINIT_CRONTAB": str(tmp / "etc-crontab"),
        "VASTINIT_CRON_D": str(cron_d),
        "VASTINIT_CRON_SPOOL": str(spool),
        "VASTINIT_CRON_RESCAN": "0.5",
        "TZ": "UTC",
    }
    return env, cron_d, spool


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def crontab(spool: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``crontab ARGS`` with ``spool`` standing in for /var/spool/cron/crontabs."""
    script = 'mount --bind "$1" /var/spool/cron/crontabs && shift && exec crontab "$@"'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(spool), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def status(v: Vastinit) -> dict[str, dict[str, Any]]:
    result = v.ctl("status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


def logged(v: Vastinit, event: str) -> list[dict[str, Any]]:
    return [e for e in list(v.events) if e.get("event") == event]


@needs_crontab
def test_crontab_dash_line_runs_at_next_minute_then_crontab_r_removes_it_alone(
    tmp_path: Path,
) -> None:
    env, _, spool = cron_dirs(tmp_path)
    units = tmp_path / "units"
    write_unit(units, "svc", 'command = ["sleep", "600"]\n')
    # The job's minute boundary ~8 s after start (shifted clock): the test needs no real minute.
    env[CLOCK_OFFSET_ENV] = repr(offset_for_due_in(8))
    v = Vastinit(units, tmp_path, env=env, control=True)
    try:
        v.wait_control()
        v.wait_state("svc", "ready")
        svc_pid = status(v)["svc"]["pid"]
        added = time.monotonic()
        result = crontab(spool, "-", stdin="* * * * * echo hi-from-cron\n")
        assert result.returncode == 0, result.stderr
        written = spool / "root"
        assert written.exists() and (written.stat().st_mode & 0o777) == 0o600
        v.wait_line("crontab-root-1", "hi-from-cron", timeout=61)
        assert time.monotonic() - added < 61
        logs = v.ctl("logs", "crontab-root-1")
        assert "hi-from-cron" in logs.stdout, logs
        unit = status(v)["crontab-root-1"]
        assert unit["state"] == "scheduled"
        assert unit["next_run"] and 0 < unit["next_run"] - time.time() <= 61
        table = v.ctl("status", "crontab-root-1").stdout
        assert "in " in table and "crontab-root-1" in table

        result = crontab(spool, "-r")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: "crontab-root-1" not in status(v), 10, "the unit to go")
        assert status(v)["svc"]["pid"] == svc_pid, "a crontab rescan restarted another unit"
        reloads = logged(v, "reloading unit files")
        assert reloads and all(not r["changed"] for r in reloads)
        assert reloads[-1]["removed"] == ["crontab-root-1"]
        assert v.states("svc") == ["waiting", "starting", "running", "ready"]
    finally:
        v.terminate()


def test_cron_d_user_env_percent_bad_line_and_permission_checks(tmp_path: Path) -> None:
    env, cron_d, spool = cron_dirs(tmp_path)
    nobody = pwd.getpwnam("nobody")
    job = cron_d / "job"
    job.write_text(
        "# a comment\n"
        "GREETING = 'hello there'\n"
        "MAILTO=root\n"
        '* * * * * nobody echo "$GREETING as $(id -un) L=$LOGNAME P=$PATH S=$SHELL"\n'
        "this is not a cron line\n"
        "* * * * * nobody tr a-z A-Z%first line%second \\% line\n"
    )
    job.chmod(0o644)
    loose = cron_d / "loose"
    loose.write_text("* * * * * root echo loose-ran\n")
    loose.chmod(0o664)
    spooled = spool / "nobody"
    spooled.write_text("* * * * * echo spool-ran\n")
    os.chown(spooled, nobody.pw_uid, nobody.pw_gid)
    spooled.chmod(0o644)
    env[CLOCK_OFFSET_ENV] = repr(offset_for_due_in(5))
    (tmp_path / "units").mkdir()
    v = Vastinit(tmp_path / "units", tmp_path, env=env, control=True)
    try:
        v.wait_control()
        v.wait_line("cron.d-job-1", "hello there as nobody", timeout=30)
        line = next(x for x in v.unit_lines("cron.d-job-1") if "hello there" in x)
        assert line == "hello there as nobody L=nobody P=/usr/bin:/bin S=/bin/sh", line
        v.wait_line("cron.d-job-2", "SECOND % LINE", timeout=30)
        assert "FIRST LINE" in v.unit_lines("cron.d-job-2")
        assert sorted(status(v)) == ["cron.d-job-1", "cron.d-job-2"]
        problems = [e["problem"] for e in logged(v, "crontab line skipped")]
        assert problems == [f"{job}:5: not a job line nor a NAME=value line: skipped"]
        warnings = [e["problem"] for e in logged(v, "crontab")]
        assert f"{loose}: ignored: writable by group or others (mode 0664)" in warnings
        assert f"{spooled}: ignored: mode 0644; a crontab must be 0600" in warnings
        assert any(w.startswith(f"{job}:3: MAILTO") for w in warnings), warnings
    finally:
        v.terminate()
    assert not any("loose-ran" in x or "spool-ran" in x for x in v.lines)


def test_reboot_nohup_job_keeps_running_after_its_shell_and_stops_at_shutdown(
    tmp_path: Path,
) -> None:
    env, cron_d, _ = cron_dirs(tmp_path)
    (cron_d / "boot").write_text(
        "@reboot root nohup sleep 999 >/dev/null 2>&1 &\n* * * * * root echo tick\n"
    )
    (cron_d / "boot").chmod(0o644)
    env[CLOCK_OFFSET_ENV] = repr(offset_for_due_in(4))
    units = tmp_path / "units"
    units.mkdir()
    v = Vastinit(units, tmp_path, env=env, control=True)
    try:
        v.wait_control()

        def released() -> list[dict[str, Any]]:
            return list(status(v)["cron.d-boot-1"]["escaped"])

        listed = wait_until(released, 15, "the sleep to be listed")
        assert [p["kind"] for p in listed] == ["released"]
        assert "sleep 999" in listed[0]["command"]
        pid = listed[0]["pid"]
        # Its shell exited at once; a scheduled run of the file's other line, and a rescan,
        # come and go: the sleep stays (cron leaves what a job started alone).
        assert status(v)["cron.d-boot-1"]["state"] == "scheduled"
        v.wait_line("cron.d-boot-2", "tick", timeout=30)
        (cron_d / "boot").write_text(
            "@reboot root nohup sleep 999 >/dev/null 2>&1 &\n* * * * * root echo tock\n"
        )
        wait_until(lambda: logged(v, "reloading unit files"), 10, "the rescan")
        # A minute later (the next minute boundary, ~60 s of real time after "tick"):
        v.wait_line("cron.d-boot-2", "tock", timeout=75)
        assert pid_alive(pid)
        assert [p["pid"] for p in released()] == [pid]
        assert v.ctl("status", "cron.d-boot-1").stdout.count(f"released process {pid}") == 1
    finally:
        v.terminate()
    assert not pid_alive(pid), "the @reboot job's process outlived vastinit"
