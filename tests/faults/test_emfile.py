"""EMFILE: a unit that exhausts its own descriptors, and vastinit itself out of descriptors
(``prlimit --nofile=256`` and 300 idle control clients) while a unit has to be restarted."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import StatusProbe
from tests.harness import Vastinit, wait_until, write_unit

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

PY = sys.executable
Start = Callable[..., Vastinit]

HOG = (
    "import os, time\n"
    "fds = []\n"
    "try:\n"
    "    while True: fds.append(os.open('/dev/null', os.O_RDONLY))\n"
    "except OSError as e: print('EMFILE after', len(fds), e.strerror, flush=True)\n"
    "time.sleep(60)\n"
)


def status(v: Vastinit, name: str) -> dict[str, Any]:
    result = v.ctl("status", "--json", name, timeout=10)
    assert result.returncode in (0, 3), result.stderr
    unit: dict[str, Any] = json.loads(result.stdout)["units"][0]
    return unit


def test_unit_exhausting_its_fds_does_not_touch_vastinit(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "hog", f"command = {json.dumps([PY, '-c', HOG])}\n")
    v = vastinit_run(control=True)
    v.wait_control()
    with StatusProbe(v.socket, tmp_path) as probe:
        v.wait_line("hog", "EMFILE after")
        first = status(v, "hog")["pid"]
        result = v.ctl("restart", "hog", timeout=20)
        assert result.returncode == 0, result.stderr
        v.wait_line("hog", "EMFILE after")
        wait_until(lambda: status(v, "hog")["pid"] not in (None, first), 10, "a new hog")
        time.sleep(1)  # and a second of status samples with the new hog at its limit
    probe.assert_responsive()
    assert v.terminate() == 0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_vastinit_out_of_fds_recovers_and_restarts_units(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    """vastinit runs with 256 descriptors; 300 idle clients take them all while `flappy`
    crash-restarts (each start needs pipes). No unit may be wedged: once the clients go,
    flappy runs again, `ctl restart` works, status answers, and the accept errors of the
    busy period are logged a bounded number of times (not one traceback each)."""
    write_unit(
        units_dir,
        "flappy",
        """
        command = "sleep 0.3; exit 1"
        [restart]
        delay = "200ms"
        max_delay = "200ms"
        limit = 10000
        """,
    )
    write_unit(units_dir, "steady", 'command = ["sleep", "600"]\n')
    v = vastinit_run(control=True, wrap=["prlimit", "--nofile=256:256", "--"])
    v.wait_control()
    v.wait_state("steady", "ready")
    v.wait_state("flappy", "running", count=2)
    clients: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(v.socket))
            except (BlockingIOError, InterruptedError):
                pass  # the listen backlog is full: still a pending client
            except OSError:
                s.close()
                continue
            clients.append(s)
        # Three seconds without descriptors: flappy has to be restarted several times.
        time.sleep(3)
        before = len(v.states("flappy"))
    finally:
        for s in clients:
            with contextlib.suppress(OSError):
                s.close()
    assert v.proc.poll() is None, f"vastinit exited ({v.proc.returncode}) out of descriptors"
    with StatusProbe(v.socket, tmp_path) as probe:
        # flappy is not wedged: it reaches running again after the clients are gone.
        v._wait(
            lambda: "running" in v.states("flappy")[before:],
            20,
            f"flappy to run again once descriptors are free; saw {v.states('flappy')[-8:]}",
        )
        first = status(v, "steady")["pid"]
        result = v.ctl("restart", "steady", timeout=20)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: status(v, "steady")["pid"] not in (None, first), 10, "a new steady")
        time.sleep(1)
    probe.assert_responsive()
    noisy = [ln for ln in v.lines if "accept" in ln.lower() or "Too many open files" in ln]
    print(
        f"out of fds: flappy {v.states('flappy')[:before].count('backoff')} backoffs by the end "
        f"of the starved period; {len(noisy)} lines about accept/EMFILE; status worst "
        f"{probe.worst_ms():.1f} ms after the clients closed"
    )
    assert len(noisy) <= 50, f"{len(noisy)} lines about accept/EMFILE, e.g. {noisy[:2]}"
    assert v.terminate() == 0
