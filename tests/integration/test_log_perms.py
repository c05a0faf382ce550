"""Log files are 0640 and the log directory 0750, group from --log-group / VASTINIT_LOG_GROUP."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, Vastinit, wait_until, write_unit


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def other_group() -> tuple[str, int]:
    """A group that is not our primary one (so that setting it shows)."""
    for g in grp.getgrall():
        if g.gr_gid != os.getgid():
            return g.gr_name, g.gr_gid
    pytest.skip("no second group on this machine")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_log_dir_and_files_are_group_readable_only(tmp_path: Path, how: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another group needs root")
    name, gid = other_group()
    units = tmp_path / "units"
    units.mkdir()
    # keep = 1 and a tiny max_size: the file is rotated, and the rotated file keeps its mode.
    write_unit(
        units,
        "talker",
        'command = ["sh", "-c", "for i in $(seq 50); do echo line $i; done; sleep 30"]\n'
        '[log]\nmax_size = "200B"\nkeep = 1\n',
    )
    args, env = (
        (["--log-group", name], None) if how == "flag" else ([], {"VASTINIT_LOG_GROUP": name})
    )
    old_umask = os.umask(0o022)
    try:
        vi = Vastinit(units, tmp_path, args=args, env=env)
    finally:
        os.umask(old_umask)
    try:
        log = vi.log_dir / "talker.log"
        rotated = vi.log_dir / "talker.log.1"
        wait_until(lambda: rotated.exists() and b"line 50" in log.read_bytes(), 10, "the logs")
        assert mode(vi.log_dir) == 0o750
        assert os.stat(vi.log_dir).st_gid == gid
        for path in (log, rotated):
            assert mode(path) == 0o640, path
            assert os.stat(path).st_gid == gid, path
    finally:
        vi.terminate()


def test_default_group_is_our_primary_group(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    write_unit(units, "talker", 'command = ["sh", "-c", "echo hi; sleep 30"]\n')
    env = {k: v for k, v in os.environ.items() if k != "VASTINIT_LOG_GROUP"}
    vi = Vastinit(units, tmp_path, env=env)
    try:
        log = vi.log_dir / "talker.log"
        wait_until(lambda: log.exists() and b"hi" in log.read_bytes(), 10, "the log")
        assert mode(vi.log_dir) == 0o750 and mode(log) == 0o640
        assert os.stat(log).st_gid == os.getgid()
    finally:
        vi.terminate()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_log_group_is_a_clear_startup_error(tmp_path: Path, how: str) -> None:
    units = tmp_path / "units"
    units.mkdir()
    write_unit(units, "talker", 'command = ["sleep", "30"]\n')
    cmd = [sys.executable, "-m", "vastinit", "run", "--units", str(units), "--no-control"]
    cmd += ["--log-dir", str(tmp_path / "logs")]
    env = dict(os.environ)
    if how == "flag":
        cmd += ["--log-group", "no-such-group-xyz"]
    else:
        env["VASTINIT_LOG_GROUP"] = "no-such-group-xyz"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=10)
    assert proc.returncode == 2
    assert "no-such-group-xyz" in proc.stderr and "unknown group" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "logs").exists()  # nothing started, nothing created
