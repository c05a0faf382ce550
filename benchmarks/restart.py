"""Workload 4, restart latency: a unit that exits 1 at once, restarted with the least delay.

The unit is ``benchmarks/programs/stamp.c``: it appends CLOCK_MONOTONIC nanoseconds to a
file and exits 1, so consecutive lines are consecutive starts, timed by the unit itself in
the same way under both tools.  A run waits for RESTARTS + 1 starts and reports the median
gap between consecutive ones (ms).  vastinit: ``[restart] policy = "always"``,
``delay = "0s"`` (0 doubled stays 0), a limit no run reaches.  supervisord has no restart
delay setting: ``autorestart=true`` with ``startsecs=0`` is the quickest it restarts (an
exit from RUNNING goes to EXITED and is restarted on the next pass of its main loop).
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

from benchmarks.common import (
    SUPERVISORD,
    VASTINIT,
    Options,
    Report,
    Sample,
    Target,
    alternate,
    compile_c,
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

NAME = "restart"
TOOLS = (VASTINIT, SUPERVISORD)
STAMP_C = Path(__file__).resolve().parent / "programs" / "stamp.c"
RESTARTS = 20


def launch(tool: str, work: Path, argv: list[str]) -> Supervisor:
    """Launch ``tool`` with one unit ``crash`` running ``argv``, restarted at once."""
    if tool == VASTINIT:
        write_vastinit_unit(
            work / "units",
            "crash",
            {
                "command": argv,
                "restart": {"policy": "always", "delay": "0s", "limit": 1_000_000, "window": "1h"},
            },
        )
        return VastinitRun(work)
    program = {
        "command": sd_command(argv),
        "autostart": "true",
        "autorestart": "true",
        "startsecs": "0",
        "startretries": "1000000",
    }
    return SupervisordRun(work, write_supervisord_conf(work, {"crash": program}))


def starts(path: Path) -> list[int]:
    """The start times (ns) the unit stamped so far."""
    try:
        return [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return []


def run_once(tool: str, warmup: bool, restarts: int, opts: Options) -> Sample:
    """One run: wait for ``restarts`` + 1 starts; the median and max gap in ms."""
    work = workdir(f"restart-{tool}")
    stamps = work / "starts.txt"
    sup = launch(tool, work, [str(compile_c(STAMP_C)), str(stamps)])
    want = (3 if warmup else restarts) + 1
    try:
        seen = wait_until(
            lambda: len(got := starts(stamps)) >= want and got,
            timeout=10 + 3 * want,
            what=f"{want} starts under {tool}",
            interval=0.01,
        )
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(seen[:want])]
        return {"gap_ms": statistics.median(gaps), "max_gap_ms": max(gaps)}
    finally:
        sup.close()
        remove_workdir(work, opts)


def run(opts: Options) -> Report:
    """A B A B after a warm-up; the median gap's figure (absolute target 10 ms)."""
    restarts = 5 if opts.quick else RESTARTS
    log(f"restart: {restarts} restarts per run")
    runs = alternate(
        TOOLS,
        opts.runs,
        lambda tool, warm: run_once(tool, warm, restarts, opts),
        warmup=opts.warmup,
        progress=log,
    )
    figures = [
        figure(
            "restart.gap_ms",
            f"restart gap, zero delay (median of {restarts})",
            "ms",
            runs,
            "gap_ms",
            target=Target("abs", 10.0, "<= 10 ms"),
        ),
        figure("restart.max_gap_ms", "restart gap, worst of a run", "ms", runs, "max_gap_ms"),
    ]
    return Report(NAME, figures, {"": runs})
