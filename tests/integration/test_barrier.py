"""The bug barrier against a real `vastinit run`: signals, reloads and a dying supervisor
never leave units orphaned or vastinit dead (issue 10 items 1, 5, 6, 11c)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness import REPO, Vastinit, pid_alive, wait_until, write_unit

Start = Callable[..., Vastinit]


def status(v: Vastinit) -> dict[str, dict[str, object]]:
    result = v.ctl("status", "--json", timeout=10)
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


# ---- item 5: signals with a default action of "terminate" -------------------------------

SIGNALS = [
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGSTKFLT,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    signal.SIGSYS,
    signal.SIGRTMIN,
    signal.SIGRTMIN + 3,
    signal.SIGRTMAX,
]


def test_stray_signals_are_ignored_and_vastinit_keeps_running(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "app", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)  # not PID 1: the case under tini / docker --init
    v.wait_control()
    v.wait_state("app", "ready")
    pid = status(v)["app"]["pid"]
    for sig in SIGNALS:
        v.signal(sig)
        time.sleep(0.05)  # one at a time, so each one's default action would show
        assert v.proc.poll() is None, f"vastinit died of {sig!r}"
    assert status(v)["app"]["state"] == "ready"
    assert status(v)["app"]["pid"] == pid
    wait_until(
        lambda: sum("signal ignored" in ln for ln in v.lines) >= len(SIGNALS),
        5,
        "one log line per ignored signal",
    )
    assert v.terminate() == 0


# ---- item 1: a reload that fails for any reason is refused, vastinit lives on ----------


def test_a_reload_that_blows_up_is_refused_and_the_old_units_keep_running(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "app", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("app", "ready")
    pid = status(v)["app"]["pid"]
    # 5,000 nested arrays: the TOML parser itself fails (RecursionError on this tree).
    (units_dir / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    v.signal(signal.SIGHUP)
    wait_until(lambda: any("reload refused" in ln for ln in v.lines), 10, "the refusal")
    assert v.proc.poll() is None
    result = v.ctl("reload", timeout=20)
    assert result.returncode != 0
    assert v.proc.poll() is None
    now = status(v)
    assert set(now) == {"app"} and now["app"]["pid"] == pid and pid_alive(int(str(pid)))
    (units_dir / "deep.toml").unlink()
    write_unit(units_dir, "more", 'command = ["sleep", "60"]')
    assert v.ctl("reload", timeout=20).returncode == 0
    v.wait_state("more", "ready")
    assert v.terminate() == 0


# ---- item 6: a unit stopped by hand is never started by a reload ------------------------


def test_a_reload_during_a_stop_by_hand_leaves_the_unit_stopped(
    units_dir: Path, vastinit_run: Start
) -> None:
    # Takes ~1 s to stop on SIGTERM.
    slow = "command = \"trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done\"\n"
    write_unit(units_dir, "slow", slow)
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("slow", "ready")
    assert v.ctl("stop", "--no-wait", "slow").returncode == 0
    v.wait_state("slow", "stopping")
    write_unit(units_dir, "slow", slow + 'description = "changed"\n')
    assert v.ctl("reload", timeout=30).returncode == 0
    v.wait_state("slow", "stopped")
    time.sleep(0.5)  # a wrong start would follow the stop at once
    assert v.state("slow") == "stopped", v.states("slow")
    assert status(v)["slow"]["state"] == "stopped"
    assert v.terminate() == 0


# ---- item 11c: the notify directory is removed on a clean exit --------------------------


def test_the_notify_directory_is_removed_on_a_clean_exit(
    units_dir: Path, vastinit_run: Start
) -> None:
    sender = (
        "import os, socket, time; path = os.environ['NOTIFY_SOCKET']; print(path, flush=True); "
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', path); "
        "time.sleep(60)"
    )
    write_unit(
        units_dir,
        "notifier",
        f"command = [{json.dumps(sys.executable)}, '-c', {json.dumps(sender)}]\n"
        "[readiness]\nnotify = true\n",
    )
    v = vastinit_run()
    v.wait_state("notifier", "ready")
    wait_until(lambda: v.unit_lines("notifier"), 5, "the unit to print NOTIFY_SOCKET")
    path = Path(v.unit_lines("notifier")[0].strip())
    directory = path.parent
    assert directory.name.startswith("vastinit-notify."), directory
    assert directory.is_dir()
    assert v.terminate() == 0
    assert not directory.exists()


# ---- "only the loop itself may end PID 1, and then it stops every unit" -----------------


def test_a_supervisor_failure_stops_every_unit_and_removes_the_socket(tmp_path: Path) -> None:
    units = tmp_path / "units"
    pid_file = tmp_path / "pid"
    write_unit(
        units,
        "app",
        f'command = "echo $$$$ > {pid_file}; echo started; exec sleep 60"\n'
        '[readiness]\nlog = "started"\n',
    )
    sock = tmp_path / "v.sock"
    script = textwrap.dedent(
        f"""
        import anyio, sys
        import vastinit.supervisor.pid1 as pid1

        async def broken(manager, reload, signals):
            await manager.wait_for(lambda: manager.runner("app").state.value == "ready", 10)
            raise RuntimeError("bug in the signal task")

        pid1.serve_signals = broken
        from vastinit.app import main_run
        main_run(["--units", {str(units)!r}, "--log-dir", {str(tmp_path / "logs")!r},
                  "--socket", {str(sock)!r}])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 70, proc.stderr[-2000:]
    assert "bug in the signal task" in proc.stdout + proc.stderr
    pid = int(pid_file.read_text())
    assert not pid_alive(pid)
    assert not sock.exists()


# ---- a SIGTERM during start-up is a clean shutdown, never the default action ------------


def test_a_sigterm_right_after_the_socket_is_bound_is_a_clean_shutdown(tmp_path: Path) -> None:
    """The control socket is bound before the event loop runs (so a second vastinit stops
    at once); a SIGTERM that lands between the bind and the signal handlers must wait for
    them, not kill vastinit by the default action and leave the socket behind."""
    units = tmp_path / "units"
    write_unit(units, "app", 'command = ["sleep", "60"]\n')
    sock = tmp_path / "v.sock"
    script = textwrap.dedent(
        f"""
        import os, signal
        from vastinit.control import server

        bind = server.ControlSocket.bind.__func__

        def bind_then_sigterm(cls, path, **kw):
            bound = bind(cls, path, **kw)
            os.kill(os.getpid(), signal.SIGTERM)  # before any handler is installed
            return bound

        server.ControlSocket.bind = classmethod(bind_then_sigterm)
        from vastinit.app import main_run
        main_run(["--units", {str(units)!r}, "--log-dir", {str(tmp_path / "logs")!r},
                  "--socket", {str(sock)!r}])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "SIGTERM received" in proc.stdout
    assert not sock.exists()
