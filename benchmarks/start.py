"""Workload 2, start: 50 and 500 units of ``sleep infinity``, launch to all running; RSS; idle.

Per run: launch the supervisor, time until the N-th unit is running (log time, see
``benchmarks.tools``), wait until the supervisor has been CPU-quiet for 0.3 s, read its
RSS, then (50 units only) the CPU-seconds it uses over an idle window (``--idle``, 30 s in
the final run) in which nothing happens.  Idle CPU is read from ``/proc/PID/task/*/schedstat``
(nanoseconds) as well as from ``/proc/PID/stat`` ticks, which are too coarse (10 ms) for a
supervisor that should use almost none.  The supervisor is then killed with its units (its
shutdown is the shutdown workload's business: 500 supervisord programs take minutes).
"""

from __future__ import annotations

import time

from benchmarks.common import (
    SUPERVISORD,
    VASTINIT,
    Figure,
    Options,
    Report,
    Sample,
    Target,
    alternate,
    figure,
    log,
    proc_cpu,
    proc_rss_mb,
    remove_workdir,
    wait_quiet,
    workdir,
)
from benchmarks.fleet import launch_fleet

NAME = "start"
TOOLS = (VASTINIT, SUPERVISORD)
SIZES = (50, 500)


def sched_cpu(pid: int) -> float:
    """CPU-seconds of ``pid`` (all threads) from schedstat: nanosecond resolution."""
    from pathlib import Path

    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def run_once(tool: str, warmup: bool, n: int, idle_s: float, opts: Options) -> Sample:
    """One launch of ``n`` sleeping units under ``tool``."""
    work = workdir(f"start{n}-{tool}")
    sup = launch_fleet(tool, work, n)
    try:
        sample: Sample = {"launch_s": sup.wait_running(n, timeout=300)}
        pid = sup.pid
        wait_quiet(pid, quiet=0.3, timeout=10)
        sample["rss_mb"] = proc_rss_mb(pid)
        if idle_s > 0 and not warmup:
            cpu0, sched0 = proc_cpu(pid), sched_cpu(pid)
            time.sleep(idle_s)  # the measurement window itself: nothing is waited for
            sample["idle_cpu_s"] = proc_cpu(pid) - cpu0
            sample["idle_cpu_ms_precise"] = (sched_cpu(pid) - sched0) * 1000
        return sample
    finally:
        sup.close()
        remove_workdir(work, opts)


def run(opts: Options) -> Report:
    """All sizes, A B A B; figures with the issue's targets."""
    figures: list[Figure] = []
    samples = {}
    sizes = (10, 50) if opts.quick else SIZES
    for n in sizes:
        idle = opts.idle_s if n == sizes[0] else 0.0
        log(f"start: {n} units" + (f", idle window {idle:g}s" if idle else ""))
        runs = alternate(
            TOOLS,
            opts.runs,
            lambda tool, warm, n=n, idle=idle: run_once(tool, warm, n, idle, opts),  # type: ignore[misc]
            warmup=opts.warmup,
            progress=log,
        )
        samples[str(n)] = runs
        figures.append(
            figure(
                f"start.{n}.launch_s",
                f"launch to all running, {n} units",
                "s",
                runs,
                "launch_s",
                target=Target("ratio", 0.3),
            )
        )
        figures.append(
            figure(
                f"start.{n}.rss_mb",
                f"RSS once running, {n} units",
                "MB",
                runs,
                "rss_mb",
                target=Target("ratio", 1.5),
            )
        )
        if idle:
            figures.append(
                figure(
                    f"start.{n}.idle_cpu_ms",
                    f"idle CPU over {idle:g} s, {n} units (schedstat)",
                    "ms",
                    runs,
                    "idle_cpu_ms_precise",
                    target=Target("ratio", 0.5),
                )
            )
    return Report(NAME, figures, samples)
