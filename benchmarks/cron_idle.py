"""Workload ``cron``: the idle cost of crontab lines (vastinit only; no supervisord side).

vastinit runs in the box role with scratch crontab directories (``VASTINIT_CRON_*``),
either with no crontab at all or with one user crontab of ``--lines`` (50) lines that do
not fire in the window (each at a daily time at least two hours away). After its start
has settled, its CPU is measured over ``--window`` seconds (60): the sum of
``/proc/PID/task/*/schedstat`` run times (nanoseconds, every thread present at both ends;
threads that came and went are counted and reported), cross-checked against the tick-based
``/proc/PID/stat``. The two configurations alternate (none, lines, none, lines ...);
the figure is the median of each pair's difference. The target (issue 27): under 5 ms more
than with none: one timer per line that wakes at most once a minute and computes nothing
until something may be due, and one rescan of the crontab directories every 10 s.

``python -m benchmarks --only cron`` or, without supervisor installed,
``python -m benchmarks.cron_idle [--window S] [--runs N] [--lines N]``. Run it niced, on a
quiet machine: a window's CPU is a few milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    VASTINIT,
    Figure,
    Options,
    Report,
    Sample,
    Target,
    log,
    proc_cpu,
    wait_quiet,
)

NAME = "cron"
TARGET_MS = 5.0


def thread_times(pid: int) -> dict[int, int]:
    """Run time in ns of each thread of ``pid`` (``/proc/PID/task/TID/schedstat``)."""
    out: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def crontab_lines(count: int, now: datetime) -> str:
    """``count`` lines at distinct daily times two or more hours from ``now``."""
    lines = []
    for i in range(count):
        hour = (now.hour + 2 + i // 60) % 24
        lines.append(f"{i % 60} {hour} * * * echo line {i}\n")
    return "".join(lines)


def measure(lines: int, window: float, work: Path) -> Sample:
    """One vastinit with ``lines`` crontab lines: its CPU over ``window`` seconds."""
    work.mkdir(parents=True)
    (work / "units").mkdir()
    cron_d, spool = work / "cron.d", work / "spool"
    cron_d.mkdir()
    spool.mkdir()
    user = pwd.getpwuid(os.geteuid()).pw_name
    if lines:
        path = spool / user
        path.write_text(crontab_lines(lines, datetime.now().astimezone()))
        path.chmod(0o600)
    env = {
        **os.environ,
        "VASTINIT_ROLE": "box",
        "VASTINIT_CRONTABS": "on",
        "VASTINIT_CRONTAB": str(work / "no-crontab"),
        "VASTINIT_CRON_D": str(cron_d),
        "VASTINIT_CRON_SPOOL": str(spool),
        "VASTINIT_LOG_FORMAT": "json",
        "GPU_COUNT": "0",
    }
    cmd = [sys.executable, "-m", "vastinit", "run", "--units", str(work / "units")]
    cmd += ["--log-dir", str(work / "logs"), "--no-control"]
    out = (work / "stdout").open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        want = lines
        while want and time.monotonic() < deadline:
            text = (work / "stdout").read_text(errors="replace")
            if text.count('"state": "scheduled"') >= want:
                break
            time.sleep(0.1)
        wait_quiet(proc.pid, quiet=1.0)
        time.sleep(2.0)
        before, ticks_before = thread_times(proc.pid), proc_cpu(proc.pid)
        time.sleep(window)
        after, ticks_after = thread_times(proc.pid), proc_cpu(proc.pid)
        if proc.poll() is not None:
            raise RuntimeError(f"vastinit exited early: {proc.returncode}")
        both = set(before) & set(after)
        ns = sum(after[t] - before[t] for t in both)
        new = sum(after[t] for t in set(after) - set(before))
        return {
            "cpu_ms": (ns + new) / 1e6,
            "ticks_ms": (ticks_after - ticks_before) * 1000,
            "threads_gone": float(len(set(before) - set(after))),
            "units": float(text.count('"state": "scheduled"') if lines else 0),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()


def measure_pairs(lines: int, window: float, runs: int, keep: bool = False) -> dict[str, Any]:
    """``runs`` pairs (none, lines): every sample and the per-pair differences."""
    root = Path(tempfile.mkdtemp(prefix="vastinit-bench-cron-"))
    none: list[Sample] = []
    some: list[Sample] = []
    try:
        for i in range(runs):
            none.append(measure(0, window, root / f"none-{i}"))
            some.append(measure(lines, window, root / f"lines-{i}"))
            log(f"cron: pair {i + 1}/{runs}: none {none[-1]}, {lines} lines {some[-1]}")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    diffs = [s["cpu_ms"] - n["cpu_ms"] for n, s in zip(none, some, strict=True)]
    return {"none": none, "lines": some, "diff_ms": diffs}


def run(opts: Options) -> Report:
    """``python -m benchmarks --only cron``: 50 lines, a 60 s window (5 s with --quick)."""
    window = 5.0 if opts.quick else 60.0
    result = measure_pairs(50, window, opts.runs, opts.keep)
    label = f"idle CPU, 50 crontab lines vs none, {window:g} s"
    fig = Figure(
        "cron_idle_extra",
        label,
        "ms",
        {VASTINIT: result["diff_ms"]},
        Target("abs", TARGET_MS, f"< {TARGET_MS:g} ms more"),
        note="vastinit only: the difference of each (none, 50 lines) pair",
    ).summarise()
    samples = {"none": result["none"], "lines": result["lines"]}
    return Report(NAME, [fig], {VASTINIT: samples})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cron_idle", description=__doc__)
    p.add_argument("--window", type=float, default=60.0, help="seconds measured (default 60)")
    p.add_argument("--runs", type=int, default=3, help="(none, lines) pairs (default 3)")
    p.add_argument("--lines", type=int, default=50, help="crontab lines (default 50)")
    p.add_argument("--keep", action="store_true", help="keep the temp directories")
    args = p.parse_args(argv)
    result = measure_pairs(args.lines, args.window, args.runs, args.keep)
    none = [s["cpu_ms"] for s in result["none"]]
    some = [s["cpu_ms"] for s in result["lines"]]
    print(
        json.dumps(
            {
                "window_s": args.window,
                "lines": args.lines,
                "none_cpu_ms": none,
                "lines_cpu_ms": some,
                "diff_ms": result["diff_ms"],
                "median_diff_ms": statistics.median(result["diff_ms"]),
                "ticks_ms": {
                    "none": [s["ticks_ms"] for s in result["none"]],
                    "lines": [s["ticks_ms"] for s in result["lines"]],
                },
                "samples": result,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
