"""Workload 5, shutdown: 50 well-behaved units (``sleep infinity``); SIGTERM to exit.

Per run: launch, wait until all 50 are running and the supervisor has been CPU-quiet for
0.3 s, send SIGTERM and time until the supervisor's process has exited, observed through a
pidfd (no polling interval).  vastinit's default stop rule (SIGTERM to the group, exit when
every group is empty) against supervisord in two layouts: 50 separate programs (each its
own group, which supervisord stops one at a time) and the same 50 programs in one
``[group:fleet]`` (stopped together).
"""

from __future__ import annotations

from benchmarks.common import (
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
    wait_quiet,
    workdir,
)
from benchmarks.fleet import SD_GROUP, launch_fleet

NAME = "shutdown"
TOOLS = (VASTINIT, SUPERVISORD, SD_GROUP)


def run_once(tool: str, n: int, opts: Options) -> Sample:
    """One launch of ``n`` units under ``tool``, then SIGTERM; seconds to exit."""
    work = workdir(f"shutdown-{tool}")
    sup = launch_fleet(tool, work, n)
    try:
        sup.wait_running(n, timeout=120)
        wait_quiet(sup.pid, quiet=0.3, timeout=10)
        return {"exit_s": sup.terminate(timeout=300)}
    finally:
        sup.close()
        remove_workdir(work, opts)


def run(opts: Options) -> Report:
    """A B C A B C after a warm-up; figures against both supervisord layouts."""
    n = 10 if opts.quick else 50
    log(f"shutdown: {n} units")
    # The warm-up only warms caches: 10 units spare it supervisord's slow program-by-program stop.
    runs = alternate(
        TOOLS,
        opts.runs,
        lambda tool, warm: run_once(tool, 10 if warm else n, opts),
        warmup=opts.warmup,
        progress=log,
    )
    figures = [
        figure(
            "shutdown.programs.exit_s",
            f"SIGTERM to exit, {n} units (supervisord: separate programs)",
            "s",
            runs,
            "exit_s",
            target=Target("ratio", 0.1),
        ),
        figure(
            "shutdown.group.exit_s",
            f"SIGTERM to exit, {n} units (supervisord: one group)",
            "s",
            runs,
            "exit_s",
            tools=(VASTINIT, SD_GROUP),
            target=Target("ratio", 0.1),
        ),
    ]
    return Report(NAME, figures, {str(n): runs})
