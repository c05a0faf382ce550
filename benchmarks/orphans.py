"""Workload 6, orphans: as PID 1 of a new PID namespace, a unit spawns 1,000 orphans.

Each tool runs as ``unshare --pid --fork --mount-proc SUPERVISOR``, so it is PID 1 inside
and every orphan is re-parented to it.  The unit is ``tests/programs/orphans.py 1000``: it
double-forks 1,000 grandchildren that sleep 50 ms and exit, then prints "spawned 1000
orphans" and sleeps.  From the moment that line is in the unit's log file (polled every
5 ms), the supervisor's children are watched: how long until only the unit itself is left
(every orphan reaped), and how many zombies are left 2 s after the line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    SUPERVISORD,
    VASTINIT,
    Options,
    Report,
    Sample,
    Target,
    alternate,
    figure,
    log,
    remove_workdir,
    wait_until,
    workdir,
)
from benchmarks.tools import (
    Supervisor,
    SupervisordRun,
    VastinitRun,
    sd_command,
    write_supervisord_conf,
    write_vastinit_unit,
)

NAME = "orphans"
TOOLS = (VASTINIT, SUPERVISORD)
ORPHANS_PY = REPO / "tests" / "programs" / "orphans.py"
ZOMBIE_AT_S = 2.0


def launch(tool: str, work: Path, argv: list[str]) -> Supervisor:
    """Launch ``tool`` as PID 1 of a new PID namespace with one unit ``orphans``."""
    if tool == VASTINIT:
        write_vastinit_unit(work / "units", "orphans", {"command": argv})
        return VastinitRun(work, pid1=True)
    program = {
        "command": sd_command(argv),
        "startsecs": "0",
        "stdout_logfile": str(work / "logs" / "orphans.log"),
        "stdout_logfile_maxbytes": "0",
    }
    conf = write_supervisord_conf(work, {"orphans": program})
    return SupervisordRun(work, conf, pid1=True)


def children(pid: int) -> list[int]:
    """The children of ``pid`` (zombies included) from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def zombies(pids: list[int]) -> int:
    """How many of ``pids`` are zombies now."""
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                count += f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (FileNotFoundError, ProcessLookupError):
            continue
    return count


def run_once(tool: str, n: int, reap_timeout: float, opts: Options) -> Sample:
    """One run; zombies left at 2 s and ms until every orphan was reaped."""
    work = workdir(f"orphans-{tool}")
    unit_log = work / "logs" / "orphans.log"
    sup = launch(tool, work, [sys.executable, str(ORPHANS_PY), str(n)])
    try:
        marker = f"spawned {n} orphans".encode()
        wait_until(
            lambda: unit_log.exists() and marker in unit_log.read_bytes(),
            timeout=120,
            what=f"the unit under {tool} to print {marker!r}",
        )
        t0 = time.monotonic()
        pid = sup.pid
        reaped_ms: float | None = None
        left_at_2s: int | None = None
        deadline = t0 + max(ZOMBIE_AT_S, reap_timeout)
        while time.monotonic() < deadline and (reaped_ms is None or left_at_2s is None):
            now = time.monotonic()
            kids = children(pid)
            if reaped_ms is None and len(kids) <= 1:  # only the unit itself is left
                reaped_ms = (now - t0) * 1000
            if left_at_2s is None and now - t0 >= ZOMBIE_AT_S:
                left_at_2s = zombies(kids)
            time.sleep(0.005)
        sample: Sample = {"zombies_at_2s": float(left_at_2s or 0)}
        # Not all reaped by the deadline: report the deadline (a lower bound).
        sample["reaped_ms"] = reaped_ms if reaped_ms is not None else reap_timeout * 1000
        return sample
    finally:
        sup.close()
        remove_workdir(work, opts)


def run(opts: Options) -> Report:
    """A B A B after a warm-up; zombies at 2 s (target 0) and time to reap all."""
    n = 1000
    reap_timeout = 5.0 if opts.quick else 15.0
    log(f"orphans: {n} orphans, as PID 1")
    runs = alternate(
        TOOLS,
        opts.runs,
        lambda tool, warm: run_once(tool, n, ZOMBIE_AT_S if warm else reap_timeout, opts),
        warmup=opts.warmup,
        progress=log,
    )
    figures = [
        figure(
            "orphans.zombies_at_2s",
            f"orphan zombies left 2 s after {n} orphans (as PID 1)",
            "",
            runs,
            "zombies_at_2s",
            target=Target("abs", 0, "0"),
        ),
        figure(
            "orphans.reaped_ms",
            f"time until all {n} orphans reaped (capped at {reap_timeout:g} s)",
            "ms",
            runs,
            "reaped_ms",
            target=Target("abs", 100, "<= 100 ms"),
        ),
    ]
    return Report(NAME, figures, {"": runs})
