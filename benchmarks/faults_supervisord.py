"""supervisord 4.3 under the faults of tests/faults/, side by side (not run in CI).

Each scenario starts ``python -m supervisor.supervisord`` (the venv's) on a fresh temp dir,
applies one fault, samples ``getAllProcessInfo`` (what ``supervisorctl status`` calls) over
its unix socket every 50 ms -- the request itself, timed, 5 s timeout -- and records the
process states it reports and the lines lost. The result is printed as JSON lines, one per
fault; docs/reliability.md has the table. Run as root (a tmpfs in a private mount
namespace, prlimit)::

    nice -n 10 .venv/bin/python -m benchmarks.faults_supervisord [NAME ...]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from benchmarks.common import REPO, descendants, proc_rss_mb
from benchmarks.tools import clean_env, sd_command, write_supervisord_conf

PY = sys.executable
PROGRAMS = REPO / "tests" / "programs"
LINE = re.compile(rb"L(\d{6}) x{80}\n")


class Sd:
    """One supervisord on ``work`` (optionally under a wrapper that execs it)."""

    def __init__(self, work: Path, conf: Path, wrap: Sequence[str] = (), stdout: Any = None):
        self.work = work
        self.sock = work / "supervisor.sock"
        cmd = [*wrap, PY, "-m", "supervisor.supervisord", "-c", str(conf)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=(work / "stderr").open("wb"),
            env=clean_env(),
            cwd=REPO,
        )
        deadline = time.monotonic() + 15
        while not self.sock.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"supervisord did not start: {self.tail()}")
            time.sleep(0.05)
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def info(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.rpc().supervisor.getAllProcessInfo()}

    def state(self, name: str) -> str:
        try:
            return str(self.info()[name]["statename"])
        except Exception as exc:
            return f"no answer ({type(exc).__name__})"

    def timed_status(self) -> tuple[float, str]:
        start = time.perf_counter()
        try:
            self.info()
            error = ""
        except Exception as exc:
            error = type(exc).__name__
        return (time.perf_counter() - start) * 1000, error

    def sample(self) -> None:
        """Start sampling status every 50 ms in a thread."""

        def loop() -> None:
            while not self._stop.is_set():
                self.samples.append(self.timed_status())
                time.sleep(0.05)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def latency(self) -> str:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if not self.samples:
            return "no sample"
        ms = [m for m, _ in self.samples]
        failed = sum(1 for _, e in self.samples if e)
        text = f"median {statistics.median(ms):.1f} ms, max {max(ms):.0f} ms"
        return text + (f", {failed}/{len(ms)} failed" if failed else "")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "stderr").read_text(errors="replace")[-500:]
        return ""

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "supervisord.log").read_text(errors="replace")
        return ""

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            stray = descendants(self.proc.pid)
            self.proc.kill()
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)


def counter(stop: Path, rate: int) -> str:
    return sd_command([PY, str(PROGRAMS / "counter.py"), str(stop), str(rate)])


def conf(work: Path, programs: dict[str, dict[str, str]], **main: str) -> Path:
    return write_supervisord_conf(work, programs, main=main or None)


def wait(pred: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def count_lines(data: bytes) -> int:
    return len(LINE.findall(data))


# -- scenarios ----------------------------------------------------------------------------


def full_disk(work: Path) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = work / "stop"
    c = conf(
        work,
        {
            "writer": {
                "command": counter(stop, 1000),
                "autorestart": "false",
                "stdout_logfile": str(logs / "writer.log"),
            }
        },
    )
    setup = (
        f"mount -t tmpfs -o size=512k tmpfs {shlex.quote(str(logs))} && "
        f'head -c 400k /dev/zero > {shlex.quote(str(logs / "filler"))} && exec "$@"'
    )
    sd = Sd(work, c, wrap=["unshare", "-m", "sh", "-c", setup, "sh"])
    try:
        inside = Path(f"/proc/{sd.proc.pid}/root") / logs.relative_to("/")
        sd.sample()
        time.sleep(4)  # the disk fills after ~1 s
        full_state = sd.state("writer")
        (inside / "filler").unlink()
        time.sleep(2)
        stop.touch()
        wait(lambda: b"done " in (inside / "writer.log").read_bytes(), 10)
        data = (inside / "writer.log").read_bytes()
        m = re.search(rb"done (\d+)", data)
        total = int(m.group(1)) if m else -1
        alive = sd.proc.poll() is None
        errors = sd.log().count("No space left") + sd.tail().count("No space left")
        return {
            "fault": "full log dir",
            "writer_state_while_full": full_state,
            "supervisord_alive": alive,
            "printed": total,
            "in_file": count_lines(data),
            "lost": total - count_lines(data) if total >= 0 else "unknown (no done line)",
            "reported": f"{errors} 'No space left' messages",
            "status": sd.latency(),
        }
    finally:
        sd.close()


def stalled_fifo(work: Path) -> dict[str, Any]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.mkfifo(logs / "stuck.log")
    stop = work / "stop"
    c = conf(
        work,
        {
            "stuck": {
                "command": counter(stop, 1000),
                "autorestart": "false",
                "stdout_logfile": str(logs / "stuck.log"),
            },
            "other": {"command": counter(stop, 200), "autorestart": "false"},
        },
    )
    sd = Sd.__new__(Sd)
    # supervisord opens the log at spawn: with no FIFO reader it blocks in open() at start.
    with contextlib.suppress(RuntimeError):
        Sd.__init__(sd, work, c)
    try:
        sd.samples, sd._stop, sd._thread = [], threading.Event(), None
        sd.sample()
        time.sleep(5)
        st = sd.state("stuck")
        fd = os.open(logs / "stuck.log", os.O_RDONLY | os.O_NONBLOCK)
        got = bytearray()
        time.sleep(2)
        stop.touch()
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                chunk = os.read(fd, 1 << 16)
                got += chunk
                if b"done " in got:
                    break
            except BlockingIOError:
                time.sleep(0.02)
        os.close(fd)
        m = re.search(rb"done (\d+)", bytes(got))
        total = int(m.group(1)) if m else -1
        return {
            "fault": "stalled log file (FIFO)",
            "stuck_state_during": st,
            "status_during_stall": sd.latency(),
            "printed": total,
            "in_fifo": count_lines(bytes(got)),
            "lost": total - count_lines(bytes(got)) if total >= 0 else "unknown",
        }
    finally:
        sd.close()


def stdout_closed(work: Path) -> dict[str, Any]:
    stop = work / "stop"
    c = conf(
        work, {"writer": {"command": counter(stop, 1000), "autorestart": "false"}}, silent="false"
    )
    r, w = os.pipe()
    sd = Sd(work, c, stdout=w)
    os.close(w)
    try:
        os.read(r, 65536)
        os.close(r)
        sd.sample()
        time.sleep(4)
        stop.touch()
        logf = work / "logs"
        wait(lambda: any(b"done " in p.read_bytes() for p in logf.glob("writer-stdout*")), 10)
        data = b"".join(p.read_bytes() for p in logf.glob("writer-stdout*"))
        m = re.search(rb"done (\d+)", data)
        total = int(m.group(1)) if m else -1
        return {
            "fault": "stdout closed (EPIPE)",
            "supervisord_alive": sd.proc.poll() is None,
            "exit": sd.proc.poll(),
            "printed": total,
            "in_file": count_lines(data),
            "status": sd.latency(),
            "stderr": sd.tail()[-200:],
        }
    finally:
        sd.close()


def emfile(work: Path) -> dict[str, Any]:
    c = conf(
        work,
        {
            "flappy": {
                "command": "sh -c 'sleep 0.3; exit 1'",
                "startsecs": "0",
                "autorestart": "true",
                "startretries": "1000",
            },
            "steady": {"command": "sleep 600"},
        },
        minfds="64",
    )
    sd = Sd(work, c, wrap=["prlimit", "--nofile=256:256", "--"])
    clients = []
    try:
        time.sleep(1)
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                s.connect(str(sd.sock))
            clients.append(s)
        time.sleep(3)
        during = sd.timed_status()
        for s in clients:
            s.close()
        time.sleep(2)
        sd.sample()
        time.sleep(2)
        after = {n: p["statename"] for n, p in sd.info().items()}
        t0 = time.monotonic()
        restart_ok = True
        try:
            sd.rpc().supervisor.stopProcess("steady")
            sd.rpc().supervisor.startProcess("steady")
        except Exception as exc:
            restart_ok = f"{type(exc).__name__}: {exc}"
        emf = sd.log().count("Too many open files")
        return {
            "fault": "EMFILE (nofile 256, 300 idle clients)",
            "status_during": during,
            "states_after": after,
            "restart_steady": restart_ok,
            "restart_s": round(time.monotonic() - t0, 2),
            "emfile_log_lines": emf,
            "alive": sd.proc.poll() is None,
            "status_after": sd.latency(),
        }
    finally:
        sd.close()


def double_fork(work: Path) -> dict[str, Any]:
    pidfile = work / "daemon.pid"
    argv = [PY, str(PROGRAMS / "daemonize.py"), str(pidfile), "40"]
    c = conf(work, {"forker": {"command": sd_command(argv)}})
    sd = Sd(work, c)
    try:
        sd.sample()
        wait(lambda: sd.state("forker") in ("FATAL", "EXITED"), 15)
        time.sleep(1.5)
        st = sd.info()["forker"]
        logs = b"".join(p.read_bytes() for p in (work / "logs").glob("forker-stdout*"))
        zombies = [p for p, s in descendants(sd.proc.pid).items() if s == "Z"]
        return {
            "fault": "double-fork and exit",
            "state": st["statename"],
            "spawnerr": st["spawnerr"],
            "starts": logs.count(b"parent exiting"),
            "daemon_lines": logs.count(b"daemon line"),
            "zombies": len(zombies),
            "status": sd.latency(),
        }
    finally:
        sd.close()


def sigstop(work: Path) -> dict[str, Any]:
    c = conf(
        work,
        {
            "frozen": {
                "command": "sh -c 'echo stopping; kill -STOP $$; exec sleep 60'",
                "stopwaitsecs": "2",
                "startsecs": "0",
            }
        },
    )
    sd = Sd(work, c)
    try:
        time.sleep(1.5)
        st = sd.state("frozen")
        sd.sample()
        t0 = time.monotonic()
        sd.rpc().supervisor.stopProcess("frozen")
        took = time.monotonic() - t0
        after = sd.state("frozen")
        sd.rpc().supervisor.startProcess("frozen")
        return {
            "fault": "SIGSTOP itself",
            "state_while_stopped": st,
            "stop_s": round(took, 2),
            "after_stop": after,
            "restart": sd.state("frozen"),
            "status": sd.latency(),
        }
    finally:
        sd.close()


def sigterm_group(work: Path) -> dict[str, Any]:
    pids = work / "pids"
    argv = [PY, str(PROGRAMS / "stubborn.py"), str(pids)]
    c = conf(work, {"stubborn": {"command": sd_command(argv), "stopwaitsecs": "2"}})
    sd = Sd(work, c)
    try:
        wait(pids.exists, 10)
        members = [int(p) for p in pids.read_text().split()]
        sd.sample()
        t0 = time.monotonic()
        sd.rpc().supervisor.stopProcess("stubborn")
        took = time.monotonic() - t0
        time.sleep(0.3)
        alive = [
            p
            for p in members
            if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        ]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return {
            "fault": "SIGTERM-ignoring group (default stopasgroup=false)",
            "stop_s": round(took, 2),
            "survivors": f"{len(alive)} of {len(members)}",
            "status": sd.latency(),
        }
    finally:
        sd.close()


def crash_restarts(work: Path, seconds: float = 20.0) -> dict[str, Any]:
    c = conf(
        work,
        {
            "crasher": {
                "command": "/bin/false",
                "startsecs": "0",
                "autorestart": "true",
                "startretries": "1000000",
            }
        },
    )
    sd = Sd(work, c)
    try:
        time.sleep(2)
        rss0, fds0 = proc_rss_mb(sd.proc.pid), len(os.listdir(f"/proc/{sd.proc.pid}/fd"))
        n0 = sd.log().count("spawned: 'crasher'")
        sd.sample()
        time.sleep(seconds)
        n1 = sd.log().count("spawned: 'crasher'")
        rss1, fds1 = proc_rss_mb(sd.proc.pid), len(os.listdir(f"/proc/{sd.proc.pid}/fd"))
        return {
            "fault": "crash-restarts",
            "restarts_per_s": round((n1 - n0) / seconds, 1),
            "restarts_in_window": n1 - n0,
            "rss_mb": [round(rss0, 1), round(rss1, 1)],
            "fds": [fds0, fds1],
            "state": sd.state("crasher"),
            "status": sd.latency(),
        }
    finally:
        sd.close()


def reloads(work: Path) -> dict[str, Any]:
    c = conf(
        work,
        {
            "crashy": {
                "command": "sh -c 'exit 1'",
                "startsecs": "0",
                "autorestart": "true",
                "startretries": "1000000",
            },
            "steady": {"command": "sleep 600"},
        },
    )
    sd = Sd(work, c)
    try:
        time.sleep(1.5)
        pid0 = sd.info()["steady"]["pid"]
        sd.sample()
        times, errors = [], 0
        for i in range(100):
            text = c.read_text()
            text = re.sub(r"environment=.*\n", "", text)
            if i % 2 == 0:
                text = text.replace("[program:crashy]\n", f"[program:crashy]\nenvironment=G={i}\n")
            c.write_text(text)
            t0 = time.monotonic()
            try:
                _added, changed, _removed = sd.rpc().supervisor.reloadConfig()[0]
                for name in changed:  # what `supervisorctl update` does
                    sd.rpc().supervisor.stopProcessGroup(name)
                    sd.rpc().supervisor.removeProcessGroup(name)
                    sd.rpc().supervisor.addProcessGroup(name)
            except Exception:
                errors += 1
            times.append(time.monotonic() - t0)
        after = sd.info()
        return {
            "fault": "100 reloads (reloadConfig + update) while crash-looping",
            "reload_s": f"median {statistics.median(times):.2f}, max {max(times):.2f}",
            "errors": errors,
            "crashy": after["crashy"]["statename"],
            "steady_same_pid": after["steady"]["pid"] == pid0,
            "status": sd.latency(),
        }
    finally:
        sd.close()


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "full_disk": full_disk,
    "stalled_fifo": stalled_fifo,
    "stdout_closed": stdout_closed,
    "emfile": emfile,
    "double_fork": double_fork,
    "sigstop": sigstop,
    "sigterm_group": sigterm_group,
    "crash_restarts": crash_restarts,
    "reloads": reloads,
}


def main(argv: list[str]) -> None:
    import supervisor

    socket.setdefaulttimeout(5.0)  # a frozen supervisord: a failed sample, not a hung script

    print(json.dumps({"supervisor": supervisor.__file__, "version": _version()}), flush=True)
    for name in argv or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"sdfault-{name}-") as tmp:
            try:
                row = SCENARIOS[name](Path(tmp))
            except Exception as exc:
                row = {"fault": name, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(row, default=str), flush=True)


def _version() -> str:
    from importlib.metadata import version

    return version("supervisor")


if __name__ == "__main__":
    main(sys.argv[1:])
