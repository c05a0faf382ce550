"""What every fault test needs: a status-latency probe, the counter unit, lost-line accounting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.harness import PROGRAMS, Vastinit

STATUS_LIMIT_MS = 200.0
"""`ctl status` must answer within this, throughout every fault (the issue's bound)."""

PROBE = Path(__file__).resolve().parent / "status_probe.py"
COUNTER = PROGRAMS / "counter.py"
LINE = re.compile(rb"L(\d{6}) x{80}\n")
"""A line of tests/programs/counter.py as it must appear in a file (a torn one does not match)."""


class StatusProbe:
    """``GET /v1/status`` sampled every ``interval`` s by a process of its own while in use::

    with StatusProbe(v.socket, tmp_path) as probe:
        ... the fault ...
    probe.assert_responsive()
    """

    def __init__(self, sock: Path, tmp: Path, interval: float = 0.05, name: str = "probe") -> None:
        self.sock = sock
        self.out = tmp / f"{name}.jsonl"
        self.interval = interval
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StatusProbe:
        self.out.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, str(PROBE), str(self.sock), str(self.out), str(self.interval)],
            stdin=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.stop()
        if isinstance(exc, AssertionError):
            problem = self.problem()
            if problem:
                # Say first that vastinit stopped answering: that is usually why a wait timed out.
                raise AssertionError(f"{problem}\n(and then: {exc})") from exc

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(10)

    def samples(self) -> list[dict[str, Any]]:
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        samples = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        return [s for s in samples if not s.get("warmup")]

    def worst_ms(self) -> float:
        return max((s["ms"] for s in self.samples()), default=0.0)

    def problem(self, min_samples: int = 5, limit_ms: float = STATUS_LIMIT_MS) -> str:
        """What was wrong with `ctl status` while sampled ("" if nothing)."""
        samples = self.samples()
        # A request still hanging when the probe was stopped has no line: too few samples.
        if len(samples) < min_samples:
            return f"only {len(samples)} status samples: vastinit stopped answering status"
        failed = [s for s in samples if not s["ok"]]
        if failed:
            return f"{len(failed)}/{len(samples)} status requests failed, e.g. {failed[:3]}"
        slow = sorted((s["ms"] for s in samples), reverse=True)[:5]
        if slow[0] >= limit_ms:
            return (
                f"status took up to {slow[0]:.0f} ms (worst five {slow}); limit "
                f"{limit_ms:.0f} ms, {len(samples)} samples"
            )
        return ""

    def assert_responsive(self, min_samples: int = 5, limit_ms: float = STATUS_LIMIT_MS) -> None:
        """Every sample answered 200 within ``limit_ms``; and there were enough of them."""
        problem = self.problem(min_samples, limit_ms)
        assert not problem, problem


def counter_unit(stop_file: Path, rate: int = 1000, extra: str = "") -> str:
    """A service that prints numbered 88-byte lines at ``rate``/s until ``stop_file`` exists."""
    return f"""
        command = ["{sys.executable}", "{COUNTER}", "{stop_file}", "{rate}"]
        [restart]
        policy = "never"
        {extra}
    """


def numbers(data: bytes) -> list[int]:
    """The counter line numbers found whole in ``data``, in file order."""
    return [int(m.group(1)) for m in LINE.finditer(data)]


def printed(v: Vastinit, unit: str) -> int:
    """How many lines the counter says it printed (its final ``done N`` line)."""
    for line in reversed(v.unit_lines(unit)):
        if line.startswith("done "):
            return int(line.split()[1])
    raise AssertionError(f"{unit} has not printed its 'done N' line")


def _lost_numbers(obj: Any) -> Iterable[int]:
    """Every integer under a key naming lost or dropped lines, anywhere in ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            lowered = str(key).lower()
            if isinstance(value, int) and not isinstance(value, bool):
                named = ("lost" in lowered or "dropped" in lowered) and "line" in lowered
                if named or lowered in ("lost", "dropped"):
                    yield value
            else:
                yield from _lost_numbers(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _lost_numbers(item)


_NOTICE = re.compile(r"(\d+) (?:log )?lines? (?:were |was )?(?:lost|dropped)")


def reported_lost(v: Vastinit, unit: str, *, file_text: bytes = b"") -> int:
    """The number of lost lines vastinit has reported for ``unit``'s log file: the largest count
    found in its events about the unit, in ``ctl status --json UNIT`` or as a notice line in the
    file itself. Names are matched loosely (any ``*lost*lines*``/``*dropped*lines*`` key, any
    "N lines lost/dropped" text), so that the test does not depend on the exact surface."""
    counts = [0]
    with v._cond:
        events = [e for e in v.events if e.get("unit") == unit and "line" not in e]
    for event in events:
        counts += _lost_numbers(event)
        counts += [int(n) for n in _NOTICE.findall(str(event.get("event", "")))]
    if v.proc.poll() is None and v.socket.exists():
        result = v.ctl("status", "--json", unit, timeout=10)
        if result.stdout.strip():
            counts += _lost_numbers(json.loads(result.stdout))
    counts += [int(n) for n in _NOTICE.findall(file_text.decode(errors="replace"))]
    return max(counts)


def vastinit_warnings(v: Vastinit, unit: str, *words: str) -> list[dict[str, Any]]:
    """vastinit's own warning/error events that mention ``unit`` and every one of ``words``."""
    with v._cond:
        events = list(v.events)
    found = []
    for e in events:
        if "line" in e or e.get("level") not in ("warning", "error", "critical"):
            continue
        text = json.dumps(e).lower()
        if unit in text and all(w.lower() in text for w in words):
            found.append(e)
    return found


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def vastinit_argv(units: Path, tmp: Path) -> list[str]:
    """``python -m vastinit run`` on ``units`` with its logs and socket in ``tmp``."""
    return [
        sys.executable,
        "-m",
        "vastinit",
        "run",
        "--units",
        str(units),
        "--log-dir",
        str(tmp / "logs"),
        "--socket",
        str(tmp / "vastinit.sock"),
    ]


def vastinit_env(**extra: str) -> dict[str, str]:
    base = {**os.environ, "VASTINIT_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    return {**base, "VASTINIT_CRONTABS": "off", **extra}


def read(path: Path) -> bytes:
    """The file's bytes; b"" while it does not exist yet."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
