"""A real ``vastinit run`` in a subprocess, observed through its JSON event stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"


def write_unit(directory: Path, name: str, text: str) -> Path:
    """Write ``NAME.toml`` (dedented) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
) -> Any:
    """Poll ``predicate`` until truthy; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Vastinit:
    """``vastinit run`` as a child process; its stdout is parsed as JSON lines."""

    def __init__(
        self,
        units: Path,
        tmp: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        pid1: bool = False,
        control: bool = False,
        wrap: Sequence[str] = (),
    ) -> None:
        self.units = units
        self.pid1 = pid1
        self.log_dir = tmp / "logs"
        self.socket = tmp / "vastinit.sock"
        full_env = {**os.environ, "VASTINIT_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        # A PID-1 vastinit is in the box role: it would read this machine's crontabs. Tests
        # of crontab units turn them on with scratch directories (tests/integration/cronfs).
        full_env.setdefault("VASTINIT_CRONTABS", "off")
        full_env.update(env or {})
        cmd = [
            sys.executable,
            "-m",
            "vastinit",
            "run",
            "--units",
            str(units),
            "--log-dir",
            str(self.log_dir),
        ]
        cmd += ["--socket", str(self.socket)] if control else ["--no-control"]
        cmd += args or []
        if pid1:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc", *cmd]
        # A wrapper that ends by exec'ing the rest (prlimit, `unshare -m sh -c '... exec "$@"'`).
        cmd = [*wrap, *cmd]
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=REPO
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = b""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    # vastinit's own events carry the unit they are about as event_unit.
                    if "event_unit" in obj:
                        obj["unit"] = obj["event_unit"]
                    self.events.append(obj)
                self._cond.notify_all()

    # ---- observation -------------------------------------------------------------------

    def states(self, unit: str) -> list[str]:
        with self._cond:
            return [e["state"] for e in self.events if e.get("unit") == unit and "state" in e]

    def state(self, unit: str) -> str | None:
        seen = self.states(unit)
        return seen[-1] if seen else None

    def transitions(self) -> list[tuple[str, str]]:
        with self._cond:
            return [(e["unit"], e["state"]) for e in self.events if "state" in e and "unit" in e]

    def event(self, unit: str, state: str) -> dict[str, Any] | None:
        with self._cond:
            for e in self.events:
                if e.get("unit") == unit and e.get("state") == state:
                    return e
        return None

    def unit_lines(self, unit: str) -> list[str]:
        """Output lines of ``unit`` as vastinit printed them on its stdout."""
        with self._cond:
            return [e["line"] for e in self.events if e.get("unit") == unit and "line" in e]

    def wait_state(self, unit: str, state: str, timeout: float = 10.0, count: int = 1) -> None:
        self._wait(
            lambda: self.states(unit).count(state) >= count,
            timeout,
            f"{unit} to reach {state} (x{count}); saw {self.states(unit)}",
        )

    def wait_line(self, unit: str, text: str, timeout: float = 10.0) -> None:
        self._wait(
            lambda: any(text in ln for ln in self.unit_lines(unit)),
            timeout,
            f"{unit} to print {text!r}",
        )

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not predicate()):
                    if self.proc.poll() is not None:
                        _, err = self.proc.communicate(timeout=5)
                        self.stderr += err or b""
                    raise AssertionError(
                        f"timed out waiting for {what}; vastinit exit={self.proc.poll()}\n"
                        f"stderr: {self.stderr.decode(errors='replace')[-2000:]}\n"
                        f"last lines: {self.lines[-15:]}"
                    )
                self._cond.wait(min(left, 0.1))

    # ---- control socket (`vastinit ctl`) ---------------------------------------------------

    def ctl_argv(self, *args: str) -> list[str]:
        """The argv of ``python -m vastinit ctl --socket SOCK ARGS``."""
        return [sys.executable, "-m", "vastinit", "ctl", "--socket", str(self.socket), *args]

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``vastinit ctl ARGS`` against this vastinit and return its result (text)."""
        return subprocess.run(
            self.ctl_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )

    def ctl_popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``vastinit ctl ARGS`` without waiting (``logs -f``, ``ready --wait``)."""
        return subprocess.Popen(
            self.ctl_argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def wait_control(self, timeout: float = 15.0) -> None:
        """Wait until the control socket accepts connections."""

        def accepting() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"vastinit exited with {self.proc.returncode}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(str(self.socket))
                except OSError:
                    return False
            return True

        wait_until(accepting, timeout, f"the control socket {self.socket}", interval=0.02)

    # ---- control -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """vastinit's pid as seen from here (under unshare it is unshare's only child)."""
        if not self.pid1:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM vastinit and wait for its exit status."""
        if self.proc.poll() is None:
            # unshare does not forward signals: send to vastinit itself.
            self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            self._reader.join(5)
        assert self.proc.stderr is not None
        self.stderr += self.proc.stderr.read() or b""
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
