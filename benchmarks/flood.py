"""Workload 1, log flood: 4 units each write 500,000 numbered 100-byte lines as fast as C can.

The writer is ``benchmarks/programs/stdio_flood.c`` (``cc -O2``): the lines of
``tests/programs/flood.c`` written through C stdio, once fully buffered (each write(2)
exactly 8 KiB, so lines are cut across writes, as any C program writing to a pipe cuts
them) and once line-buffered (one write(2) per line, what ``stdbuf -oL`` or a
``PYTHONUNBUFFERED`` program does).  flood.c's own block mode writes 8100-byte blocks of
whole lines, which never cut a line, and so would hide a supervisor that splices lines.
Each unit is ``sh -c 'touch ready.K; read _ < go; exec stdio_flood N [--line-buffered]'``:
the units start,
say so with a marker file and block on a FIFO, so that the supervisor's start-up is not
counted.  Once all four are blocked and the supervisor has been CPU-quiet for 0.3 s, one
newline per unit releases them all at once.

Measured, for the supervisor process only: CPU-seconds (utime+stime) from the release until
everything is written and it has been quiet for 0.3 s again; wall time from the release
until every line is in its sink; bytes/s (the 200 MB of lines over that wall time); RSS
growth (VmHWM at the end minus VmRSS at the release).  Every line is then checked.

The supervisor's own stdout is a pipe drained by ``cat`` into a file, as a container
runtime drains PID 1's stdout.  Configurations:

- ``vastinit``: everything on: each unit's file (``[log] max_size`` large enough not to
  rotate), the prefixed ``NAME | line`` stdout, and the in-memory ring (always on, 1 MiB).
- ``supervisord`` (file + stdout): one ``stdout_logfile`` per program (no rotation) and
  ``loglevel=debug`` with its main log on its stdout (``logfile=/dev/fd/1``, ``silent``):
  at debug level supervisord copies every chunk it reads into its main log, as
  ``DATE DEBG 'NAME' stdout output:`` followed by the chunk.  That is the only way one
  supervisord sends a program's output both to a file and to its own stdout (a program
  has one ``stdout_logfile``), so it is the "same sinks" configuration the CPU target is
  measured against.  Its stdout prefixes chunks, not lines.
- ``supervisord-file``: the per-program files only (supervisord's usual setup).
- ``supervisord-stdout``: ``stdout_logfile=/dev/fd/1``, ``stdout_logfile_maxbytes=0`` only
  (the usual container setup): the splice figure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import verify
from benchmarks.common import (
    SUPERVISORD,
    VASTINIT,
    BenchError,
    Figure,
    Options,
    Report,
    Sample,
    Target,
    alternate,
    compile_c,
    figure,
    log,
    proc_hwm_mb,
    proc_rss_mb,
    remove_workdir,
    wait_quiet,
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

NAME = "flood"
SD_FILE = "supervisord-file"
SD_STDOUT = "supervisord-stdout"
TOOLS = (VASTINIT, SUPERVISORD, SD_FILE, SD_STDOUT)
FLOOD_C = Path(__file__).resolve().parent / "programs" / "stdio_flood.c"
UNITS = 4
LINES = 500_000
MODES = {"line": "one line per write", "block": "8 KiB blocks"}
RING_BYTES = 1 << 20  # vastinit's default ring per unit (LogMux.ring_bytes)
CONSOLE_QUEUE = 8 << 20  # vastinit's stdout queue bound (ConsoleSink.max_queue)
READ_BYTES = 1 << 20  # vastinit's read size per pipe (logs.pump.READ_SIZE)


def unit_names() -> list[str]:
    """flood0 .. flood3."""
    return [f"flood{k}" for k in range(UNITS)]


def unit_argv(work: Path, k: int, count: int, mode: str) -> list[str]:
    """The unit's command: mark readiness, wait on the FIFO, then exec the writer."""
    flood = str(compile_c(FLOOD_C)) + f" {count}" + (" --line-buffered" if mode == "line" else "")
    script = f"touch {work}/ready.{k}; read _ < {work}/go; exec {flood}"
    return ["/bin/sh", "-c", script]


def launch(
    tool: str, work: Path, count: int, mode: str, stdout: int, python_args: Sequence[str] = ()
) -> Supervisor:
    """Write the four flood units for ``tool`` and launch it with ``stdout`` as its fd 1
    (``python_args``: interpreter options for vastinit, e.g. ``-m cProfile -o FILE``)."""
    if tool == VASTINIT:
        for k, name in enumerate(unit_names()):
            table = {
                "type": "oneshot",
                "command": unit_argv(work, k, count, mode),
                "log": {"max_size": "100GiB", "keep": 1},
            }
            write_vastinit_unit(work / "units", name, table)
        return VastinitRun(work, stdout=stdout, python_args=python_args)
    main = None
    if tool == SUPERVISORD:
        main = {"loglevel": "debug", "logfile": "/dev/fd/1", "logfile_maxbytes": "0"}
    programs = {}
    for k, name in enumerate(unit_names()):
        sink = "/dev/fd/1" if tool == SD_STDOUT else str(work / "logs" / f"{name}.log")
        programs[name] = {
            "command": sd_command(unit_argv(work, k, count, mode)),
            "autostart": "true",
            "autorestart": "false",
            "startsecs": "0",
            "stdout_logfile": sink,
            "stdout_logfile_maxbytes": "0",
            "stdout_logfile_backups": "0",
        }
    conf = write_supervisord_conf(work, programs, main=main)
    return SupervisordRun(work, conf, stdout=stdout)


Observer = Callable[[int], Callable[[], None]]
"""Called with the supervisor's pid just before the release; returns what to call after."""


def run_once(
    tool: str,
    warmup: bool,
    count: int,
    mode: str,
    opts: Options,
    *,
    python_args: Sequence[str] = (),
    observer: Observer | None = None,
) -> Sample:
    """One flood under ``tool``; the measurements and the output checks."""
    work = workdir(f"flood-{mode}-{tool}")
    go = work / "go"
    os.mkfifo(go)
    # Held open read-write: the units' open() of the FIFO never blocks, and the newlines
    # written below wait in the pipe for a unit that has not reached its `read` yet.
    go_fd = os.open(go, os.O_RDWR | os.O_NONBLOCK)
    captured = work / "stdout.txt"
    with captured.open("wb") as out:
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out)
    assert cat.stdin is not None
    sup = launch(tool, work, count, mode, cat.stdin.fileno(), python_args)
    cat.stdin.close()  # the supervisor holds the only write end now: cat ends when it exits
    try:
        sample = _measure(sup, work, go_fd, captured, count, tool, observer)
        sup.terminate(timeout=120)
        cat.wait(60)
        if not warmup:
            sample.update(_check(tool, work, captured, count))
        return sample
    finally:
        os.close(go_fd)
        sup.close()
        if cat.poll() is None:
            cat.kill()
            cat.wait()
        remove_workdir(work, opts)


def _measure(
    sup: Supervisor,
    work: Path,
    go_fd: int,
    captured: Path,
    count: int,
    tool: str,
    observer: Observer | None,
) -> Sample:
    def started() -> bool:
        if sup.proc.poll() is not None:
            raise BenchError(f"{tool} exited before the flood: {sup.stderr()}")
        return all((work / f"ready.{k}").exists() for k in range(UNITS))

    wait_until(started, 60, f"the flood units to start under {tool}")
    pid = sup.pid
    cpu0 = wait_quiet(pid, quiet=0.3, timeout=10)
    rss0 = proc_rss_mb(pid)
    stop_observer = observer(pid) if observer else None
    start = time.monotonic()
    os.write(go_fd, b"\n" * UNITS)

    total = UNITS * count * verify.LINE
    files = [work / "logs" / f"{name}.log" for name in unit_names()]

    def delivered() -> bool:
        if sup.proc.poll() is not None:
            raise BenchError(f"{tool} exited during the flood: {sup.stderr()}")
        if tool == SD_STDOUT:
            return _size(captured) >= total
        return all(_size(f) >= count * verify.LINE for f in files)

    wait_until(delivered, 600, f"{total} bytes delivered by {tool}", interval=0.01)
    wall = time.monotonic() - start
    # The rest of the work (stdout still draining, the units' exits) is part of the cost.
    last_size, last_change = _size(captured), time.monotonic()
    while time.monotonic() - last_change < 0.3:
        time.sleep(0.02)
        size = _size(captured)
        if size != last_size:
            last_size, last_change = size, time.monotonic()
    stdout_done = last_change - start
    cpu1 = wait_quiet(pid, quiet=0.3, timeout=30)
    if stop_observer:
        stop_observer()
    return {
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall,
        "mb_per_s": total / 1e6 / wall,
        "stdout_done_s": stdout_done,
        "rss_growth_mb": proc_hwm_mb(pid) - rss0,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _check(tool: str, work: Path, captured: Path, count: int) -> Sample:
    """Line faults: in the files (file configs) and in the captured stdout."""
    sample: Sample = {}
    if tool != SD_STDOUT:
        bad = 0
        for name in unit_names():
            faults = verify.check_file((work / "logs" / f"{name}.log").read_bytes(), count)
            bad += sum(faults.values())
        sample["file_faults"] = float(bad)
    if tool == VASTINIT:
        s = verify.check_prefixed_stdout(captured.read_bytes(), unit_names(), count)
    elif tool in (SD_STDOUT, SUPERVISORD):
        s = verify.check_raw_stdout(captured.read_bytes(), UNITS, count)
    else:
        return sample
    sample["stdout_spliced"] = float(s["spliced"])
    sample["stdout_faults"] = float(s["lost"] + s.get("reordered", 0) + s["duplicated"])
    sample["stdout_spliced_pct"] = 100.0 * s["spliced"] / (UNITS * count)
    if "announced" in s:
        sample["stdout_dropped_announced"] = float(s["announced"])
    return sample


def run(opts: Options) -> Report:
    """Both write modes, three configurations each, A B C A B C after a warm-up."""
    count = 50_000 if opts.quick else LINES
    figures: list[Figure] = []
    samples = {}
    for mode, what in MODES.items():
        log(f"flood: {UNITS} x {count} lines, {what}")
        runs = alternate(
            TOOLS,
            opts.runs,
            lambda tool, warm, mode=mode: run_once(  # type: ignore[misc]
                tool, warm, count // 10 if warm else count, mode, opts
            ),
            warmup=opts.warmup,
            progress=log,
        )
        samples[mode] = runs
        figures += _figures(mode, what, runs)
    return Report(NAME, figures, samples)


def _figures(mode: str, what: str, runs: dict[str, list[Sample]]) -> list[Figure]:
    cpu_target = 0.8 if mode == "line" else 1.0
    bound_mb = (UNITS * RING_BYTES + CONSOLE_QUEUE + UNITS * READ_BYTES) / 1e6
    head = f"log flood, {what}"
    return [
        figure(
            f"flood.{mode}.cpu_s",
            f"{head}: CPU-s, all sinks (supervisord: file + stdout)",
            "s",
            runs,
            "cpu_s",
            target=Target("ratio", cpu_target),
        ),
        figure(
            f"flood.{mode}.cpu_s.vs_file",
            f"{head}: CPU-s (supervisord: file only)",
            "s",
            runs,
            "cpu_s",
            tools=(VASTINIT, SD_FILE),
        ),
        figure(
            f"flood.{mode}.cpu_s.vs_stdout",
            f"{head}: CPU-s (supervisord: stdout only)",
            "s",
            runs,
            "cpu_s",
            tools=(VASTINIT, SD_STDOUT),
        ),
        figure(
            f"flood.{mode}.wall_s",
            f"{head}: wall time until every line is in its file (supervisord: file + stdout)",
            "s",
            runs,
            "wall_s",
        ),
        figure(
            f"flood.{mode}.mb_per_s",
            f"{head}: throughput (supervisord: file + stdout)",
            "MB/s",
            runs,
            "mb_per_s",
        ),
        figure(
            f"flood.{mode}.file_faults",
            f"{head}: lines lost/reordered/duplicated in files (supervisord: file + stdout)",
            "",
            runs,
            "file_faults",
            target=Target("abs", 0, "0"),
        ),
        figure(
            f"flood.{mode}.stdout_spliced",
            f"{head}: stdout lines spliced mid-line (supervisord: stdout only)",
            "",
            runs,
            "stdout_spliced",
            tools=(VASTINIT, SD_STDOUT),
            target=Target("abs", 0, "0"),
        ),
        figure(
            f"flood.{mode}.stdout_spliced.both",
            f"{head}: stdout lines spliced mid-line (supervisord: file + stdout)",
            "",
            runs,
            "stdout_spliced",
            target=Target("abs", 0, "0"),
        ),
        figure(
            f"flood.{mode}.stdout_faults",
            f"{head}: stdout lines lost/reordered/duplicated (supervisord: stdout only)",
            "",
            runs,
            "stdout_faults",
            tools=(VASTINIT, SD_STDOUT),
            target=Target("abs", 0, "0"),
        ),
        figure(
            f"flood.{mode}.rss_growth_mb",
            f"{head}: RSS growth (supervisord: file + stdout)",
            "MB",
            runs,
            "rss_growth_mb",
            target=Target("abs", bound_mb, f"<= fixed buffers ({bound_mb:.1f} MB)"),
            note="vastinit's fixed buffers: 1 MiB ring per unit, 8 MiB stdout queue, "
            "1 MiB read buffer per pipe",
        ),
    ]
