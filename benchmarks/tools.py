"""The two supervisors under test: config rendering, launch, "all running" detection, stop.

Both run under the same interpreter (``sys.executable -m vastinit run`` and
``sys.executable -m supervisor.supervisord``) from a fresh temp directory per run.

"All running" is read from what each tool writes anyway, never by asking its API (which
would cost the supervisor CPU while it is being measured):

- vastinit: its JSON event stream on stdout (``VASTINIT_LOG_FORMAT=json``), read by a thread
  here; a unit counts once its ``starting -> running`` event is seen;
- supervisord: its own log file, tailed here every 5 ms; a program counts once its
  ``success: NAME entered RUNNING state`` line is seen.

Times are the tools' own log timestamps (both have millisecond resolution) minus the
wall-clock time just before the launch, so how late this process reads a line does not
bias the figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import tomli_w

from benchmarks.common import (
    REPO,
    SUPERVISORD,
    VASTINIT,
    BenchError,
    descendants,
    first_child,
    wait_until,
)

_SCRUB = ("VASTINIT_", "NO_COLOR", "SUPERVISOR_")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without vastinit/supervisor settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(extra or {})
    return env


# -- configuration ---------------------------------------------------------------------------


def write_vastinit_unit(units: Path, name: str, table: Mapping[str, Any]) -> Path:
    """Write ``units/NAME.toml`` from a TOML table."""
    units.mkdir(parents=True, exist_ok=True)
    path = units / f"{name}.toml"
    path.write_text(tomli_w.dumps(dict(table)))
    return path


def write_supervisord_conf(
    work: Path,
    programs: Mapping[str, Mapping[str, str]],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    main: Mapping[str, str] | None = None,
) -> Path:
    """Write ``work/supervisord.conf``: nodaemon, silent (stdout is left to the programs),
    logging to ``work/supervisord.log``, a control socket in ``work``, the given programs;
    ``main`` overrides keys of the ``[supervisord]`` section.

    ``command`` values must be quoted for supervisord's splitting (see ``sd_command``).
    """
    section = {
        "nodaemon": "true",
        "silent": "true",
        "logfile": str(work / "supervisord.log"),
        "logfile_maxbytes": "0",
        "loglevel": "info",
        "pidfile": str(work / "supervisord.pid"),
        "childlogdir": str(work / "logs"),
        "minfds": "16384",
        **(main or {}),
    }
    lines = [
        "[supervisord]",
        *(f"{k}={v}" for k, v in section.items()),
        "",
        "[unix_http_server]",
        f"file={work / 'supervisor.sock'}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{work / 'supervisor.sock'}",
        "",
    ]
    for name, options in programs.items():
        lines.append(f"[program:{name}]")
        lines += [f"{k}={v}" for k, v in options.items()]
        lines.append("")
    for name, members in (groups or {}).items():
        lines += [f"[group:{name}]", f"programs={','.join(members)}", ""]
    (work / "logs").mkdir(parents=True, exist_ok=True)
    conf = work / "supervisord.conf"
    conf.write_text("\n".join(lines))
    return conf


def sd_command(argv: Sequence[str]) -> str:
    """An argv as a supervisord ``command=`` value (``%`` escaped: it is an expansion)."""
    return shlex.join(argv).replace("%", "%%")


# -- running supervisors ---------------------------------------------------------------------


class Supervisor(Protocol):
    """A launched supervisor: its process, its units' start times, its stop."""

    tool: str
    launched_at: float
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int: ...

    def running(self) -> dict[str, float]: ...

    def wait_running(self, n: int, timeout: float) -> float: ...

    def terminate(self, timeout: float) -> float: ...

    def close(self) -> None: ...

    def stderr(self) -> str: ...


class _Base:
    tool = ""

    def __init__(self, cmd: list[str], work: Path, stdout: int | IO[bytes], env: dict[str, str]):
        self.work = work
        self.pid1 = cmd[0] == "unshare"
        self._stderr = (work / f"{self.tool}.stderr").open("wb")
        self.launched_at = time.time()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=self._stderr, env=env, cwd=REPO
        )
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """The supervisor's pid (under ``unshare --fork``, unshare's child: PID 1 inside)."""
        if self._pid is None:
            self._pid = first_child(self.proc.pid) if self.pid1 else self.proc.pid
        return self._pid

    def running(self) -> dict[str, float]:
        raise NotImplementedError

    def wait_running(self, n: int, timeout: float) -> float:
        """Wait until ``n`` units are running; seconds from launch to the n-th (log time)."""

        def enough() -> dict[str, float] | None:
            seen = self.running()
            if len(seen) >= n:
                return seen
            if self.proc.poll() is not None:
                raise BenchError(f"{self.tool} exited ({self.proc.returncode}): {self.stderr()}")
            return None

        seen = wait_until(enough, timeout, f"{n} units running under {self.tool}", 0.005)
        return float(sorted(seen.values())[n - 1] - self.launched_at)

    def terminate(self, timeout: float) -> float:
        """SIGTERM the supervisor; seconds until its process has exited (via a pidfd)."""
        pid = self.pid
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError as exc:
            raise BenchError(f"{self.tool} is not running") from exc
        try:
            start = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(timeout * 1000):
                raise BenchError(f"{self.tool} did not exit within {timeout:g}s of SIGTERM")
            elapsed = time.monotonic() - start
        finally:
            os.close(pidfd)
        self.proc.wait(10)
        return elapsed

    def close(self) -> None:
        """Kill whatever is left: the supervisor and every process below it."""
        if self.proc.poll() is None:
            stray = descendants(self.proc.pid)
            self.proc.kill()
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)
        self._stderr.close()

    def stderr(self) -> str:
        """The tail of the supervisor's stderr (for error messages)."""
        with contextlib.suppress(OSError):
            return (self.work / f"{self.tool}.stderr").read_text(errors="replace")[-2000:]
        return ""


class VastinitRun(_Base):
    """``vastinit run`` on ``work/units``, logs in ``work/logs``, control socket
    ``work/vastinit.sock`` (supervisord runs its ``[unix_http_server]`` too).

    With ``stdout=None`` its stdout is a pipe read here as JSON events; otherwise it goes to
    the given fd in the default text format (``NAME | line``), as in a container.
    ``python_args`` go between the interpreter and ``-m vastinit`` (e.g. ``-m cProfile``).
    """

    tool = VASTINIT

    def __init__(
        self,
        work: Path,
        *,
        stdout: int | IO[bytes] | None = None,
        pid1: bool = False,
        python_args: Sequence[str] = (),
    ) -> None:
        cmd = [
            sys.executable,
            *python_args,
            "-m",
            "vastinit",
            "run",
            "--units",
            str(work / "units"),
        ]
        cmd += ["--log-dir", str(work / "logs"), "--socket", str(work / "vastinit.sock")]
        if pid1:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
        events = stdout is None
        env = clean_env({"VASTINIT_LOG_FORMAT": "json"} if events else None)
        super().__init__(cmd, work, subprocess.PIPE if stdout is None else stdout, env)
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        if events:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if b'"state": "running"' not in raw:
                continue  # only transitions to running matter; skip the JSON parse
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            unit = event.get("event_unit") or event.get("unit")
            with self._lock:
                self._running.setdefault(unit, float(event["ts"]))

    def running(self) -> dict[str, float]:
        """unit -> log time of its first ``running`` event, for units seen so far."""
        with self._lock:
            return dict(self._running)

    def close(self) -> None:
        super().close()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class SupervisordRun(_Base):
    """``supervisord -c CONF`` (nodaemon, silent); its log file is tailed for RUNNING lines."""

    tool = SUPERVISORD

    def __init__(
        self, work: Path, conf: Path, *, stdout: int | IO[bytes] | None = None, pid1: bool = False
    ) -> None:
        cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
        if pid1:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
        out = subprocess.DEVNULL if stdout is None else stdout
        super().__init__(cmd, work, out, clean_env())
        self._log = work / "supervisord.log"
        self._offset = 0
        self._partial = b""
        self._running: dict[str, float] = {}

    def running(self) -> dict[str, float]:
        """program -> log time of its ``entered RUNNING state`` line, for programs seen so far."""
        try:
            with self._log.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return dict(self._running)
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b" success: " in line and b"entered RUNNING state" in line:
                name = line.split(b" success: ", 1)[1].split(b" ", 1)[0].decode()
                self._running.setdefault(name, parse_sd_time(line))
        return dict(self._running)


def parse_sd_time(line: bytes) -> float:
    """The epoch time of a supervisord log line (``YYYY-mm-dd HH:MM:SS,mmm ...``, local time)."""
    text = line[:23].decode()
    base = time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S"))
    return base + int(text[20:23]) / 1000
