"""``python -m benchmarks.profile_flood``: where vastinit's CPU goes during the log flood.

Runs the flood workload's vastinit configuration once (4 units x N lines, all sinks on)
under a profiler and prints the hottest functions:

- ``--profiler cprofile`` (default): vastinit runs under ``python -m cProfile``; exact call
  counts, some overhead per Python call;
- ``--profiler py-spy``: ``py-spy record`` attaches to the running vastinit for the flood
  only (sampling), writing folded stacks (``--format raw``);
- ``--profiler perf``: ``perf record`` attaches for the flood only and the hottest symbols
  (C and kernel included) are printed.  This is the view that found the hot spot: the cost
  is in C (``bytes.count``, memmove, kernel copies), where cProfile sees one call per chunk.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import flood
from benchmarks.common import VASTINIT, Options, log


def _py_spy(out: Path) -> flood.Observer:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    def start(pid: int) -> Callable[[], None]:
        cmd = [exe, "record", "--pid", str(pid), "--rate", "500", "--format", "raw"]
        proc = subprocess.Popen([*cmd, "-o", str(out)], stderr=subprocess.DEVNULL)

        def stop() -> None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)

        return stop

    return start


def _perf(out: Path) -> flood.Observer:
    def start(pid: int) -> Callable[[], None]:
        cmd = ["perf", "record", "-F", "2000", "-g", "-p", str(pid), "-o", str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf attaches asynchronously; the flood must not start before it

        def stop() -> None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)

        return stop

    return start


def main(argv: list[str] | None = None) -> int:
    """Profile one flood; print the top functions (cProfile) or the folded stacks' path."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_flood")
    p.add_argument("--mode", choices=sorted(flood.MODES), default="line")
    p.add_argument("--lines", type=int, default=flood.LINES)
    p.add_argument("--profiler", choices=("cprofile", "py-spy", "perf"), default="cprofile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="where the profile goes (default: a temp file)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="vastinit-profile-")) / "flood.prof"
    opts = Options(runs=1)
    if args.profiler == "cprofile":
        sample = flood.run_once(
            VASTINIT,
            False,
            args.lines,
            args.mode,
            opts,
            python_args=["-m", "cProfile", "-o", str(out)],
        )
        log(f"sample: {sample}")
        text = io.StringIO()
        stats = pstats.Stats(str(out), stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())
    elif args.profiler == "perf":
        sample = flood.run_once(VASTINIT, False, args.lines, args.mode, opts, observer=_perf(out))
        log(f"sample: {sample}")
        report = ["perf", "report", "-i", str(out), "--no-children", "--sort", "sym"]
        perf_text = subprocess.run(
            [*report, "--stdio", "-g", "none"], capture_output=True, text=True, check=True
        ).stdout
        rows = [line for line in perf_text.splitlines() if "%" in line and not line.startswith("#")]
        print("\n".join(rows[: args.top]))
    else:
        sample = flood.run_once(VASTINIT, False, args.lines, args.mode, opts, observer=_py_spy(out))
        log(f"sample: {sample}")
        print(f"py-spy folded stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
