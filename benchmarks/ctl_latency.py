"""Workload ctl: wall time of one ``status`` command line against 50 running units.

``vastinit ctl --socket S status`` against ``vastinit run`` (control socket on), and
supervisord's own client, ``python -m supervisor.supervisorctl -c CONF status`` (our
``supervisorctl`` console script takes that name), against supervisord with the same 50
``sleep infinity`` programs (``benchmarks.fleet``). Both clients run under the same
interpreter, each as a fresh process, as a person or a script runs them; the figure is the
median of ``CALLS`` calls per run, runs alternated A B A B. A call counts only if it exits 0
(everything running); its wall time covers interpreter start, imports, connect, request,
reply and printing the table. vastinit's bytecode is compiled first (``compile_bytecode``):
an installed package has its .pyc files, as supervisor's do.

Run alone: ``.venv/bin/python -m benchmarks.ctl_latency`` (needs ``pip install supervisor``).
"""

from __future__ import annotations

import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    SUPERVISORD,
    VASTINIT,
    BenchError,
    Figure,
    Options,
    Report,
    Sample,
    Target,
    alternate,
    figure,
    log,
    remove_workdir,
    render_text,
    wait_until,
    workdir,
)
from benchmarks.fleet import ARGV, launch_fleet, names
from benchmarks.tools import clean_env, write_vastinit_unit

NAME = "ctl"
UNITS = 50
CALLS = 20


def _time_call(argv: list[str]) -> float:
    """Seconds one client process takes, start to exit; BenchError unless it exits 0."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, cwd=REPO)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{argv[3:]} exited {done.returncode}: {done.stderr.decode()[-300:]}")
    return took


def _measure(argv: list[str], calls: int) -> Sample:
    times = [_time_call(argv) for _ in range(calls)]
    return {"status_ms": statistics.median(times) * 1000, "status_min_ms": min(times) * 1000}


def _vastinit_once(work: Path, n: int, calls: int) -> Sample:
    for name in names(n):
        write_vastinit_unit(work / "units", name, {"command": ARGV})
    sock = work / "vastinit.sock"
    argv = [sys.executable, "-m", "vastinit", "run", "--units", str(work / "units")]
    argv += ["--log-dir", str(work / "logs"), "--socket", str(sock)]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
        cwd=REPO,
    )
    ctl = [sys.executable, "-m", "vastinit", "ctl", "--socket", str(sock)]
    try:
        wait_until(sock.exists, 30, "the vastinit control socket")
        ready = subprocess.run([*ctl, "ready", "--wait", "--timeout", "60"], capture_output=True)
        if ready.returncode != 0:
            raise BenchError(f"vastinit units not ready: {ready.stderr.decode()}")
        return _measure([*ctl, "status"], calls)
    finally:
        proc.terminate()  # SIGTERM: vastinit stops its 50 units and exits
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _supervisord_once(work: Path, n: int, calls: int) -> Sample:
    sup = launch_fleet(SUPERVISORD, work, n)
    try:
        sup.wait_running(n, timeout=120)
        conf = work / "supervisord.conf"
        return _measure(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"], calls
        )
    finally:
        sup.close()


def run_once(tool: str, warmup: bool, opts: Options, n: int = UNITS) -> Sample:
    """One supervisor launch with ``n`` units, then ``CALLS`` timed status calls."""
    work = workdir(f"ctl-{tool}")
    calls = 3 if warmup or opts.quick else CALLS
    try:
        if tool == VASTINIT:
            return _vastinit_once(work, n, calls)
        return _supervisord_once(work, n, calls)
    finally:
        remove_workdir(work, opts)


def compile_bytecode() -> None:
    """Write vastinit's .pyc files, as an installed package has them (supervisor's came with
    pip); without them every call would compile the client from source."""
    compileall.compile_dir(REPO / "vastinit", quiet=1, force=False)


def run(opts: Options) -> Report:
    """``status`` wall time with 50 units, A B A B; target: at most half of supervisorctl's."""
    log(f"ctl: status against {UNITS} units, {CALLS} calls per run")
    compile_bytecode()
    runs = alternate(
        (VASTINIT, SUPERVISORD),
        opts.runs,
        lambda tool, warm: run_once(tool, warm, opts),
        warmup=opts.warmup,
        progress=log,
    )
    baseline = [_time_call([sys.executable, "-c", "pass"]) for _ in range(10)]
    figures: list[Figure] = [
        figure(
            "ctl.status_ms",
            f"`status` wall time, {UNITS} units",
            "ms",
            runs,
            "status_ms",
            target=Target("ratio", 0.5),
        ),
        figure(
            "ctl.status_min_ms",
            f"`status` fastest call, {UNITS} units",
            "ms",
            runs,
            "status_min_ms",
        ),
    ]
    note = f"bare interpreter start (python -c pass): {statistics.median(baseline) * 1000:.1f} ms"
    return Report(NAME, figures, {"50": runs}, [note])


if __name__ == "__main__":
    report = run(Options(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3))
    print(render_text(report.figures))
    print("\n".join(report.notes))
