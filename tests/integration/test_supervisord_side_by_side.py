"""The same conf.d under real supervisord 4.3 and under vastinit: the real supervisorctl
sees the same thing from both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Vastinit, wait_until

pytest.importorskip("supervisor")

Start = Callable[..., Vastinit]

PROGRAMS = """\
[program:crash]
command=sh -c "echo crashing; exit 3"
startretries=1
[program:once]
command=sh -c "echo once"
startsecs=0
autorestart=false
[program:manual]
command=sleep 600
autostart=false
[program:web]
command=sh -c "echo web up; exec sleep 600"
[program:w]
command=sleep 600
process_name=%(program_name)s_%(process_num)02d
numprocs=3
"""


class Side:
    def __init__(self, url: str, conf_d: Path) -> None:
        self.url = url
        self.conf_d = conf_d

    def ctl(self, *args: str) -> tuple[int, str]:
        argv = [sys.executable, "-m", "supervisor.supervisorctl", "-s", self.url, *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        return done.returncode, done.stdout

    def states(self) -> dict[str, str]:
        _, out = self.ctl("status")
        return {line.split()[0]: line.split()[1] for line in out.splitlines()}


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Side]:
    base = tmp_path / "sd"
    (base / "conf.d").mkdir(parents=True)
    (base / "logs").mkdir()
    (base / "conf.d" / "progs.conf").write_text(PROGRAMS)
    conf = base / "supervisord.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [unix_http_server]
            file={base}/s.sock
            [supervisord]
            nodaemon=true
            logfile={base}/supervisord.log
            pidfile={base}/supervisord.pid
            childlogdir={base}/logs
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [include]
            files=conf.d/*.conf
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    side = Side(f"unix://{base}/s.sock", base / "conf.d")
    try:
        wait_until(lambda: (base / "s.sock").exists(), 15, "supervisord's socket")
        yield side
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.fixture
def vastinit(tmp_path: Path, units_dir: Path, vastinit_run: Start) -> Iterator[Side]:
    etc = tmp_path / "etc-supervisor"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d" / "progs.conf").write_text(PROGRAMS)
    env = {
        "VASTINIT_ROLE": "box",
        "VASTINIT_SUPERVISOR_DIR": str(etc),
        "VASTINIT_SUPERVISOR_SOCKET": "",
    }
    v = vastinit_run(control=True, env=env)
    v.wait_control()
    yield Side(f"unix://{v.socket}", etc / "conf.d")
    assert v.terminate() == 0


def _states(out: str) -> str:
    return "".join(" ".join(line.split()[:2]) + "\n" for line in out.splitlines())


SETTLED = {
    "crash": "FATAL",
    "once": "EXITED",
    "manual": "STOPPED",
    "web": "RUNNING",
    "w:w_00": "RUNNING",
    "w:w_01": "RUNNING",
    "w:w_02": "RUNNING",
}


def test_supervisorctl_sees_the_same_from_supervisord_and_vastinit(
    supervisord: Side, vastinit: Side
) -> None:
    sides = (supervisord, vastinit)
    for side in sides:
        wait_until(lambda side=side: side.states() == SETTLED, 30, f"{side.url} settled")

    def same(*args: str) -> tuple[int, str]:
        results = [side.ctl(*args) for side in sides]
        if args[0] == "status":  # pids, uptimes and FATAL reasons differ: compare the rest
            results = [(rc, _states(out)) for rc, out in results]
        if args[-1].endswith(":*"):  # supervisord's order within a group varies
            results = [(rc, "".join(sorted(out.splitlines(True)))) for rc, out in results]
        assert results[0] == results[1], args
        return results[0]

    # The status table: same names, states and column layout; same exit codes.
    for side in sides:
        _, out = side.ctl("status")
        for line in out.splitlines():
            name, state = line.split()[:2]
            assert line.startswith(f"{name:<33}{state:<10}"), line
    assert same("status")[0] == 3
    assert same("status", "web")[0] == 0
    assert same("status", "manual")[0] == 3
    assert supervisord.ctl("status", "nosuch") == vastinit.ctl("status", "nosuch")
    assert same("stop", "w:*") == (0, "w:w_00: stopped\nw:w_01: stopped\nw:w_02: stopped\n")
    assert same("start", "w:*")[0] == 0
    assert same("start", "manual") == (0, "manual: started\n")
    assert same("start", "manual")[1] == "manual: ERROR (already started)\n"
    assert same("stop", "manual") == (0, "manual: stopped\n")
    assert same("stop", "manual")[1] == "manual: ERROR (not running)\n"
    assert same("restart", "web") == (0, "web: stopped\nweb: started\n")
    assert "web up\n" in same("tail", "web")[1]
    assert same("signal", "HUP", "w:w_01") == (0, "w:w_01: signalled\n")
    assert same("signal", "HUP", "manual")[1] == "manual: ERROR (not running)\n"
    assert same("reread") == (0, "No config updates to processes\n")
    for side in sides:
        (side.conf_d / "extra.conf").write_text("[program:extra]\ncommand=sleep 600\n")
    assert same("reread") == (0, "extra: available\n")
    assert same("update") == (0, "extra: added process group\n")
    for side in sides:
        wait_until(lambda side=side: side.states().get("extra") == "RUNNING", 15, "extra")
        (side.conf_d / "extra.conf").unlink()
    assert same("reread") == (0, "extra: disappeared\n")
    assert same("update") == (0, "extra: stopped\nextra: removed process group\n")
    assert supervisord.states() == vastinit.states()
