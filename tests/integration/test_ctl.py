"""`vastinit ctl` against a real `vastinit run`: every verb, its output and its exit status."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, Vastinit, wait_until, write_unit

Start = Callable[..., Vastinit]


def status_of(v: Vastinit, *names: str) -> dict[str, dict[str, Any]]:
    """``ctl status --json`` as {name: unit}."""
    result = v.ctl("status", "--json", *names)
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


def wait_status(v: Vastinit, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll ``ctl status`` until ``name`` is in ``state``; returns its status."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (u := status_of(v, name)[name])["state"] == state and u,
        timeout,
        f"{name} to be {state}",
        interval=0.05,
    )


class LineReader:
    """Collects a child's stdout lines on a thread, so tests can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        wait_until(lambda: predicate(list(self.lines)), timeout, f"{what}; got {self.lines[-10:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._thread.join(5)


# ---- status -----------------------------------------------------------------------------


def test_status_table_shows_every_unit_and_exits_3_when_one_is_not_fine(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    write_unit(units_dir, "job", 'type = "oneshot"\ncommand = "exit 0"')
    write_unit(units_dir, "broken", 'type = "oneshot"\ncommand = "exit 4"')
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "broken", "failed")
    wait_status(v, "web", "ready")
    wait_status(v, "job", "exited")

    table = v.ctl("status")
    assert table.returncode == 3, table
    header, *rows = table.stdout.splitlines()
    assert header.split()[:6] == ["NAME", "STATE", "READY", "PID", "UPTIME", "RESTARTS"]
    assert "LAST EXIT" in header and "NEXT RUN" in header
    by_name = {row.split()[0]: row.split() for row in rows}
    assert set(by_name) == {"web", "job", "broken"}
    assert by_name["web"][1:3] == ["ready", "yes"]
    assert by_name["web"][3] == str(status_of(v, "web")["web"]["pid"])
    assert by_name["broken"][1] == "failed"
    assert "exit 4" in table.stdout

    fine = v.ctl("status", "web", "job")
    assert fine.returncode == 0, fine
    data = json.loads(v.ctl("status", "--json", "web").stdout)
    assert [u["name"] for u in data["units"]] == ["web"]
    assert data["units"][0]["state"] == "ready" and data["units"][0]["pid"] > 0
    assert v.terminate() == 0


def test_unknown_unit_is_one_line_naming_close_matches(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "sglang", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    for verb in (["status"], ["restart"], ["logs"], ["show"], ["signal", "HUP"]):
        result = v.ctl(*verb, "sglnag")
        assert result.returncode == 1, (verb, result)
        assert result.stderr == "vastinit ctl: no unit 'sglnag' (did you mean sglang?)\n", verb
    assert v.terminate() == 0


def test_no_daemon_names_the_socket_tried(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    argv = [sys.executable, "-m", "vastinit", "ctl", "--socket"]
    result = subprocess.run([*argv, str(missing), "status"], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"vastinit ctl: no vastinit is listening on {missing} (it does not exist)\n"
    )

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # a socket file nobody listens on: a crashed vastinit's
    result = subprocess.run([*argv, str(stale), "status"], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr == f"vastinit ctl: no vastinit is listening on {stale} (connection refused)\n"
    )

    # VASTINIT_SOCKET is the default when --socket is not given.
    env = {**os.environ, "VASTINIT_SOCKET": str(missing)}
    result = subprocess.run(
        [sys.executable, "-m", "vastinit", "ctl", "status"], capture_output=True, text=True, env=env
    )
    assert str(missing) in result.stderr and result.returncode == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_permission_denied_says_so(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    assert os.stat(v.socket).st_mode & 0o777 == 0o660
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, *v.ctl_argv("status")], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"vastinit ctl: permission denied on {v.socket}")
    assert v.terminate() == 0


# ---- start / stop / restart ------------------------------------------------------------------


def test_restart_waits_for_ready_and_replaces_the_process(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(
        units_dir,
        "svc",
        """
        command = "sleep 0.3; echo listening; exec sleep 60"
        [readiness]
        log = "listening"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    first = wait_status(v, "svc", "ready")["pid"]

    restarted = v.ctl("restart", "svc")
    assert restarted.returncode == 0, restarted
    assert restarted.stdout == "svc: ready\n"
    after = status_of(v, "svc")["svc"]
    # It returned once the *new* process was ready, not on the old one's ready state.
    assert after["state"] == "ready" and after["pid"] not in (None, first)

    stopped = v.ctl("stop", "svc")
    assert (stopped.returncode, stopped.stdout) == (0, "svc: stopped\n")
    assert status_of(v, "svc")["svc"]["pid"] is None
    assert v.ctl("status").returncode == 3  # stopped is not fine

    started = v.ctl("start", "svc")
    assert (started.returncode, started.stdout) == (0, "svc: ready\n")

    no_wait = v.ctl("stop", "--no-wait", "svc")
    assert (no_wait.returncode, no_wait.stdout) == (0, "svc: stop requested\n")
    wait_status(v, "svc", "stopped")
    assert v.terminate() == 0


def test_start_ends_with_the_units_outcome(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "ok", 'type = "oneshot"\ncommand = "exit 0"')
    write_unit(units_dir, "bad", 'type = "oneshot"\ncommand = "exit 3"')
    write_unit(
        units_dir,
        "needs",
        """
        command = ["sleep", "60"]
        [condition]
        env = ["SURELY_UNSET_CTL_VAR"]
        """,
    )
    write_unit(
        units_dir,
        "slow",
        """
        command = ["sleep", "60"]
        [readiness]
        log = "never printed"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "bad", "failed")

    ok = v.ctl("start", "ok")
    assert (ok.returncode, ok.stdout) == (0, "ok: exited\n")
    bad = v.ctl("start", "bad")
    assert bad.returncode == 3 and bad.stderr.startswith("bad: failed ("), bad
    skipped = v.ctl("start", "needs")
    assert skipped.returncode == 3
    assert skipped.stderr == "needs: skipped (SURELY_UNSET_CTL_VAR is not set)\n"

    began = time.monotonic()
    timed_out = v.ctl("restart", "--timeout", "0.5", "slow")
    assert timed_out.returncode == 3, timed_out
    assert timed_out.stderr.startswith("slow: timed out after 0.5s (running:")
    assert time.monotonic() - began < 10
    assert v.terminate() == 0


# ---- logs -------------------------------------------------------------------------------------


def test_logs_merges_several_units_in_time_order(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "first", 'type = "oneshot"\ncommand = "echo one; echo uno"')
    write_unit(
        units_dir,
        "second",
        'type = "oneshot"\ncommand = "echo two"\n[depends_on]\nfirst = "exited"',
    )
    write_unit(
        units_dir,
        "third",
        'type = "oneshot"\ncommand = "echo three"\n[depends_on]\nsecond = "exited"',
    )
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "third", "exited")

    merged = v.ctl("logs", "third", "first", "second")
    assert merged.returncode == 0, merged
    assert merged.stdout.splitlines() == [
        "first  | one",
        "first  | uno",
        "second | two",
        "third  | three",
    ]
    last = v.ctl("logs", "-n", "2", "first", "second", "third")
    assert last.stdout.splitlines() == ["second | two", "third  | three"]
    alone = v.ctl("logs", "first")
    assert alone.stdout.splitlines() == ["one", "uno"]  # one unit: bare lines
    stamped = v.ctl("logs", "-t", "-n", "1", "first")
    assert stamped.stdout.rstrip().endswith(" uno") and stamped.stdout[:2] == "20"
    assert v.terminate() == 0


def test_logs_follow_survives_the_unit_restarting(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(
        units_dir,
        "ticker",
        'command = "echo started $$$$; while true; do echo tick; sleep 0.1; done"',
    )
    v = vastinit_run(control=True)
    v.wait_control()
    first = wait_status(v, "ticker", "ready")["pid"]
    follower = LineReader(v.ctl_popen("logs", "-f", "-n", "50", "ticker"))
    try:
        follower.wait_for(lambda ls: f"started {first}" in ls, 10, "the backlog")
        assert v.ctl("restart", "ticker").returncode == 0
        second = status_of(v, "ticker")["ticker"]["pid"]
        assert second != first
        follower.wait_for(lambda ls: f"started {second}" in ls, 10, "the new process's lines")
        follower.wait_for(
            lambda ls: ls[ls.index(f"started {second}") + 1 :].count("tick") >= 2,
            10,
            "ticks after the restart",
        )
        assert follower.proc.poll() is None  # still following
    finally:
        follower.stop()
    # `tail -f` is the supervisorctl spelling of the same thing.
    tail = LineReader(v.ctl_popen("tail", "-f", "ticker"))
    try:
        tail.wait_for(lambda ls: ls.count("tick") >= 2, 10, "tail -f lines")
    finally:
        tail.stop()
    assert v.terminate() == 0


def test_follower_ends_cleanly_when_vastinit_shuts_down(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "talker", 'command = "echo hello; exec sleep 60"')
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "talker", "ready")
    follower = LineReader(v.ctl_popen("logs", "-f"))
    try:
        follower.wait_for(lambda ls: "talker | hello" in ls, 10, "the backlog")
        assert v.terminate() == 0
        assert follower.proc.wait(10) == 0
    finally:
        follower.stop()


# ---- ready --------------------------------------------------------------------------------------


def test_ready_wait_returns_the_moment_the_unit_becomes_ready(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    flag = tmp_path / "go"
    write_unit(
        units_dir,
        "gate",
        f"""
        type = "oneshot"
        command = "while [ ! -e {flag} ]; do sleep 0.02; done"
        """,
    )
    write_unit(
        units_dir,
        "app",
        """
        command = ["sleep", "60"]
        [depends_on]
        gate = "succeeded"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "app", "waiting")

    not_yet = v.ctl("ready", "app")
    assert not_yet.returncode == 3
    assert not_yet.stderr.startswith("app: not ready (waiting:")
    short = v.ctl("ready", "--wait", "--timeout", "0.2", "app")
    assert short.returncode == 3, short

    waiter = v.ctl_popen("ready", "--wait", "app")
    try:
        wait_until(lambda: v.state("gate") == "running", 10, "gate running")
        assert waiter.poll() is None, "ready --wait returned before the unit was ready"
        flag.touch()
        began = time.monotonic()
        out, err = waiter.communicate(timeout=10)
        took = time.monotonic() - began
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(5)
    assert waiter.returncode == 0, err
    assert out == "ready (1 unit)\n"
    assert took < 1.5, f"ready --wait took {took:.2f}s after the gate opened"
    assert status_of(v, "app")["app"]["state"] == "ready"
    everything = v.ctl("ready")  # no names: every unit is fine
    assert everything.returncode == 0, everything
    assert v.terminate() == 0


# ---- show, signal, pid, shutdown ---------------------------------------------------------------


def test_show_prints_the_effective_unit_with_dropins_merged(
    units_dir: Path, vastinit_run: Start
) -> None:
    path = write_unit(
        units_dir,
        "api",
        """
        description = "an API"
        command = ["sleep", "60"]
        [stop]
        timeout = "5s"
        """,
    )
    (units_dir / "api.d").mkdir()
    (units_dir / "api.d" / "override.toml").write_text('[stop]\nsignal = "SIGINT"\n')
    v = vastinit_run(control=True)
    v.wait_control()
    shown = v.ctl("show", "api")
    assert shown.returncode == 0, shown
    first, _, rest = shown.stdout.partition("\n")
    assert first == f"# {path}"
    assert tomllib.loads(rest) == {
        "description": "an API",
        "command": ["sleep", "60"],
        "stop": {"timeout": "5s", "signal": "SIGINT"},
    }
    assert v.terminate() == 0


def test_signal_and_pid_reach_the_units_main_process(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(
        units_dir,
        "trapper",
        """command = "trap 'echo got USR1' USR1; echo armed; while true; do sleep 0.05; done"
        """,
    )
    write_unit(units_dir, "done", 'type = "oneshot"\ncommand = "exit 0"')
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_line("trapper", "armed")
    pid = int(v.ctl("pid", "trapper").stdout)
    assert pid == status_of(v, "trapper")["trapper"]["pid"]
    assert int(v.ctl("pid").stdout) == v.pid
    wait_status(v, "done", "exited")
    assert v.ctl("pid", "done").stdout == "0\n"

    sent = v.ctl("signal", "USR1", "trapper")
    assert (sent.returncode, sent.stdout) == (0, f"trapper: sent SIGUSR1 to pid {pid}\n")
    v.wait_line("trapper", "got USR1")
    refused = v.ctl("signal", "TERM", "done")
    assert refused.returncode == 1
    assert refused.stderr == "vastinit ctl: unit done has no running process (it is exited)\n"
    bogus = v.ctl("signal", "SIGBOGUS", "trapper")
    assert bogus.returncode == 1 and "unknown signal" in bogus.stderr
    assert v.terminate() == 0


def test_shutdown_stops_everything_and_removes_the_socket(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "web", "ready")
    result = v.ctl("shutdown")
    assert (result.returncode, result.stdout) == (0, "vastinit is shutting down\n")
    assert v.proc.wait(20) == 0
    assert "stopped" in v.states("web")
    assert not v.socket.exists()


# ---- the socket -------------------------------------------------------------------------------


def test_socket_is_0660_replaces_a_stale_file_and_refuses_a_second_vastinit(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    stale = tmp_path / "vastinit.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # left behind by a crashed run: nobody listens
    v = vastinit_run(control=True)
    v.wait_control()
    assert os.stat(v.socket).st_mode & 0o777 == 0o660
    wait_status(v, "web", "ready")

    second = vastinit_run(control=True)
    assert second.proc.wait(30) == 2
    assert second.proc.stderr is not None
    assert (
        second.proc.stderr.read().decode() == f"vastinit: another vastinit is serving {v.socket}\n"
    )
    assert v.ctl("status", "web").returncode == 0  # the first one is untouched
    assert v.terminate() == 0


def _raw(sock_path: Path, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes, return (HTTP status, body) of the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(sock_path))
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_malformed_and_oversized_requests_get_a_json_400(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()

    def post(path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return _raw(v.socket, head.encode() + body)

    cases = {
        "not json": post("/v1/start", b"{nope"),
        "not an object": post("/v1/start", b"[1, 2]"),
        "wrong type": post("/v1/start", b'{"units": "web"}'),
        "unknown field": post("/v1/restart", b'{"units": ["web"], "colour": 1}'),
        "bad timeout": post("/v1/stop", b'{"units": ["web"], "timeout": -1}'),
        "too large": post("/v1/reload", b'{"dry_run": false, "pad": "' + b"x" * 200_000 + b'"}'),
        "bad query": _raw(
            v.socket, b"GET /v1/logs?n=many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    }
    for what, (status, body) in cases.items():
        assert status == 400, (what, status, body)
        reply = json.loads(body)
        assert reply["code"] == "bad_request" and reply["error"], (what, reply)
    # Bytes that are not HTTP at all get aiohttp's own (plain text) 400 and a closed connection.
    status, body = _raw(v.socket, b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
    assert status == 400
    status, body = _raw(
        v.socket, b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, json.loads(body)["code"]) == (404, "not_found")
    # ... and the server is still serving.
    assert v.ctl("status", "web").returncode in (0, 3)
    assert v.state("web") == "ready"
    assert v.terminate() == 0


def test_a_hundred_clients_at_once_are_all_served_without_slowing_units(
    units_dir: Path, vastinit_run: Start
) -> None:
    from vastinit.control.client import Client

    write_unit(units_dir, "ticker", 'command = "while true; do echo tick; sleep 0.05; done"')
    for i in range(5):
        write_unit(units_dir, f"svc{i}", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "ticker", "ready")
    path = str(v.socket)
    followed: list[list[dict[str, Any]]] = [[] for _ in range(50)]
    statuses: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def follow(index: int) -> None:
        try:
            for batch in Client(path).stream("/v1/logs?unit=ticker&n=0&follow=1"):
                followed[index].extend(batch)
                if stop.is_set():
                    return
        except BaseException as exc:  # collected and reported by the test
            errors.append(exc)

    def status() -> None:
        try:
            for _ in range(5):
                statuses.append(len(Client(path).get("/v1/status")["units"]))
        except BaseException as exc:
            errors.append(exc)

    followers = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(50)]
    pollers = [threading.Thread(target=status, daemon=True) for _ in range(50)]
    for t in followers + pollers:
        t.start()
    for t in pollers:
        t.join(60)
    wait_until(lambda: all(len(f) >= 10 for f in followed), 20, "every follower to get lines")
    stop.set()
    for t in followers:
        t.join(10)
    assert not errors, errors[:3]
    assert statuses == [6] * 250
    # The unit printed every 50 ms throughout: no follower saw a gap a stall would leave.
    for lines in followed:
        stamps = [e["ts"] for e in lines]
        assert max(b - a for a, b in itertools.pairwise(stamps)) < 1.0
    assert v.terminate() == 0


# ---- supervisorctl ----------------------------------------------------------------------------


def supervisorctl(v: Vastinit, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``supervisorctl`` console script's main, as installed by pyproject."""
    code = "import sys; from vastinit.control.supervisorctl import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, "-c", "/etc/supervisor/supervisord.conf"]
    argv += ["-s", f"unix://{v.socket}", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=30)


def test_supervisorctl_habits_keep_working(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "sglang", 'command = "echo serving; exec sleep 60"')
    write_unit(units_dir, "provisioning", 'type = "oneshot"\ncommand = "exit 0"')
    v = vastinit_run(control=True)
    v.wait_control()
    first = wait_status(v, "sglang", "ready")["pid"]
    wait_status(v, "provisioning", "exited")

    status = supervisorctl(v, "status")
    assert status.returncode == 3, status  # as supervisord: EXITED is not RUNNING
    assert supervisorctl(v, "status", "sglang").returncode == 0
    nosuch = supervisorctl(v, "status", "nosuch")
    assert (nosuch.returncode, nosuch.stdout) == (4, "nosuch: ERROR (no such process)\n")
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert lines["sglang"].startswith(f"RUNNING   pid {first}, uptime 0:00:")
    assert lines["provisioning"].startswith("EXITED")

    restart = supervisorctl(v, "restart", "sglang")
    assert (restart.returncode, restart.stdout) == (0, "sglang: stopped\nsglang: started\n")
    second = status_of(v, "sglang")["sglang"]["pid"]
    assert second != first
    assert supervisorctl(v, "pid", "sglang").stdout == f"{second}\n"
    assert supervisorctl(v, "tail", "sglang").stdout.endswith("serving\n")
    assert supervisorctl(v, "reread").stdout == "No config updates to processes\n"
    # As supervisord's: `stop all` stops (and names) the running ones only.
    assert supervisorctl(v, "stop", "all").stdout.splitlines() == ["sglang: stopped"]
    assert supervisorctl(v, "stop", "sglang").stdout == "sglang: ERROR (not running)\n"
    assert supervisorctl(v, "status", "sglang").returncode == 3
    write_unit(units_dir, "extra", 'command = ["sleep", "60"]')
    assert supervisorctl(v, "reread").stdout == "extra: available\n"
    assert "extra" in supervisorctl(v, "avail").stdout
    assert supervisorctl(v, "update").stdout == "extra: added process group\n"
    wait_status(v, "extra", "ready")
    unknown = supervisorctl(v, "restart", "sglnag")
    assert (unknown.returncode, unknown.stdout) == (1, "sglnag: ERROR (no such process)\n")
    assert unknown.stderr == "supervisorctl: no unit 'sglnag' (did you mean sglang?)\n"
    assert v.terminate() == 0


def test_ctl_client_path_imports_nothing_heavy(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "web", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    wait_status(v, "web", "ready")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *v.ctl_argv("status")[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    heavy = {
        "aiohttp",
        "anyio",
        "structlog",
        "asyncio",
        "dataclasses",
        "tomli_w",
        "vastinit.errors",
    }
    assert not heavy & imported, heavy & imported
    assert v.terminate() == 0


def test_ctl_logs_reads_the_ring_across_a_sigkill(units_dir: Path, vastinit_run: Start) -> None:
    """A unit killed behind vastinit's back is restarted; its old and new lines both show."""
    write_unit(
        units_dir,
        "crashy",
        """
        command = "echo life $$$$; exec sleep 60"
        [restart]
        delay = "100ms"
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    first = wait_status(v, "crashy", "ready")["pid"]
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: (p := status_of(v, "crashy")["crashy"]["pid"]) not in (None, first) and p,
        10,
        "the restarted process",
    )
    lines = v.ctl("logs", "crashy").stdout.splitlines()
    assert lines[0] == f"life {first}" and len(lines) == 2
    assert status_of(v, "crashy")["crashy"]["restarts"] == 1
    assert v.terminate() == 0
