"""The log path under load: 4 writers x 250,000 lines, one write(2) per line.

The mux runs in a child process (this file, run as a script) whose stdout is a pipe. One
test does not read it until the end, the way a stuck `docker logs` consumer looks to PID 1:
after the stall window the console drops lines (the files still get every one). The other
reads it as fast as it can, the way a live consumer does: then no line may be lost.
Run it by hand as a benchmark::

    python tests/integration/test_log_flood.py --bench 500000   # 4 x 500k lines
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vastinit.logs.flow import STALL_S

if TYPE_CHECKING:
    from vastinit.logs.mux import UnitLog

REPO = Path(__file__).resolve().parents[2]
FLOOD_C = REPO / "tests" / "programs" / "flood.c"
UNITS = 4
LINES = 250_000
UNIT_LINE = re.compile(rb"flood\d +\| \d{10} x{88}")


def flood_line(i: int) -> bytes:
    """Line ``i`` as flood writes it (see tests/programs/flood.c)."""
    return b"%010d " % i + b"x" * 88 + b"\n"


# -- the child side ----------------------------------------------------------------------


def _file_errors(ulog: UnitLog) -> int:
    assert ulog.file is not None
    return ulog.file.errors + ulog.file.lost_lines


def _runner(
    flood: str, count: int, units: int, log_dir: Path, report: Path | None = None
) -> dict[str, Any]:
    """Flood ``units`` pipes into a LogMux whose console is fd 1; return the measurements.

    With ``report``, the measurements are written there before the console is drained, so
    that the parent knows when to start reading our stdout.
    """
    import anyio

    from vastinit.logs.console import ConsoleSink
    from vastinit.logs.mux import LogMux

    result: dict[str, Any] = {}

    async def main() -> None:
        console = ConsoleSink(1, fmt="text")
        mux = LogMux(console, log_dir)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        procs, pumps = [], []
        for k in range(units):
            r, w = os.pipe2(os.O_CLOEXEC)
            procs.append(
                subprocess.Popen(
                    [flood, str(count), "--line-per-write"], stdout=w, stdin=subprocess.DEVNULL
                )
            )
            os.close(w)
            ulog = mux.unit_log(f"flood{k}", f"flood{k}.log", 1 << 40, 1)
            pumps.append(ulog.attach(r, "stdout"))
        for pump in pumps:
            await pump.wait_eof()
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        codes = [p.wait() for p in procs]
        result.update(
            codes=codes,
            wall_s=wall,
            cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            dropped=console.dropped,
            file_errors=[
                _file_errors(mux.unit_log(n, f"{n}.log", 1 << 40, 1)) for n in mux.units()
            ],
            tails=[mux.tail([n], 1)[0].text.decode() for n in mux.units()],
        )
        await mux.aclose()
        if report is not None:
            tmp = report.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.rename(report)
            await console.drain(60)
        console.close()

    anyio.run(main)
    return result


# -- the test side -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def flood_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) on PATH to build tests/programs/flood.c")
    out = tmp_path_factory.mktemp("flood") / "flood"
    subprocess.run([cc, "-O2", "-o", str(out), str(FLOOD_C)], check=True)
    return str(out)


def _first_difference(got: bytes, want: bytes) -> str:
    got_lines, want_lines = got.split(b"\n"), want.split(b"\n")
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=False)):
        if g != w:
            return f"line {i}: got {g[:40]!r}, want {w[:40]!r}"
    return f"{len(got_lines) - 1} lines, want {len(want_lines) - 1}"


def _start_mux(flood_bin: str, tmp_path: Path, err: Any) -> subprocess.Popen[bytes]:
    """The mux in a child: its measurements go to tmp_path/result.json, its files to logs/."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--run", flood_bin, str(LINES), str(UNITS)]
    cmd += [str(tmp_path / "logs"), str(tmp_path / "result.json")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _check_files(result: dict[str, Any], log_dir: Path) -> None:
    """Every unit exited 0 and its file holds every line, in order."""
    assert result["codes"] == [0] * UNITS
    assert result["file_errors"] == [0] * UNITS
    want = b"".join(flood_line(i) for i in range(LINES))
    for k in range(UNITS):
        got = (log_dir / f"flood{k}.log").read_bytes()
        assert got == want, f"flood{k}.log: {_first_difference(got, want)}"
        assert result["tails"][k] == flood_line(LINES - 1)[:-1].decode()


def _print(result: dict[str, Any], what: str) -> None:
    print(
        f"\n{UNITS} x {LINES} lines, one write(2) each, {what}: "
        f"{result['cpu_s']:.2f} CPU-s in the mux, {result['wall_s']:.2f} s wall, "
        f"{result['dropped']} console lines dropped"
    )


def test_flood_with_a_fast_stdout_reader_loses_no_line(flood_bin: str, tmp_path: Path) -> None:
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as err:
        # stdout is read as fast as this process can: busy, never stalled.
        proc = _start_mux(flood_bin, tmp_path, err)
        try:
            console, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the mux did not move {UNITS} x {LINES} lines in 120 s")
        finally:
            _stop(proc)
    assert proc.returncode == 0, stderr_file.read_text()[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    _print(result, "stdout read at once")
    _check_files(result, tmp_path / "logs")

    # stdout was busy, not stalled: backpressure, so not one line lost, none spliced.
    assert result["dropped"] == 0
    lines = console.split(b"\n")
    assert lines.pop() == b"", "the console output ends mid-line"
    assert len(lines) == UNITS * LINES, f"{len(lines)} lines on stdout, want {UNITS * LINES}"
    bad = [ln for ln in lines if not UNIT_LINE.fullmatch(ln)]
    assert bad == [], f"spliced or malformed lines: {bad[:3]!r}"
    want = b"".join(flood_line(i) for i in range(LINES))
    for k in range(UNITS):
        prefix = f"{f'flood{k}':8} | ".encode()  # padded to "vastinit", the longest name
        got = b"".join(ln[len(prefix) :] + b"\n" for ln in lines if ln.startswith(prefix))
        assert got == want, f"flood{k} on stdout: {_first_difference(got, want)}"


def test_flood_with_stalled_stdout_keeps_every_line_in_files(
    flood_bin: str, tmp_path: Path
) -> None:
    report = tmp_path / "result.json"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as err:
        # stdout is a pipe nobody reads until the floods are over: it stalls when full.
        proc = _start_mux(flood_bin, tmp_path, err)
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 90
            while not report.exists():
                if proc.poll() is not None:
                    pytest.fail(f"the mux exited early:\n{stderr_file.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the mux did not move {UNITS} x {LINES} lines in 90 s")
                time.sleep(0.05)
            console = proc.stdout.read()  # now unblock stdout: the queue drains, then EOF
            proc.wait(timeout=30)
        finally:
            _stop(proc)
    assert proc.returncode == 0, stderr_file.read_text()[-3000:]
    result = json.loads(report.read_text())
    _print(result, "stdout stalled")
    _check_files(result, tmp_path / "logs")

    # stdout stalled, so the console dropped lines, whole ones only, and said how many.
    assert result["dropped"] > 0
    lines = console.split(b"\n")
    assert lines.pop() == b"", "the console output ends mid-line"
    bad = [ln for ln in lines if not UNIT_LINE.fullmatch(ln)]
    notice = f"vastinit | dropped {result['dropped']} lines (stdout was blocked)".encode()
    assert bad == [notice], f"spliced, malformed or missing lines: {bad[:3]!r}"
    assert len(lines) - 1 + result["dropped"] == UNITS * LINES

    # The units were held back (backpressure) until stdout had made no progress for the
    # stall window, then ran free: the 100 MB cannot fit in the pipes and the queue, so
    # the floods take longer than the window, but not much longer (margin: a loaded host).
    assert STALL_S < result["wall_s"] < STALL_S + 30
    # Generous bound that only a pathology (per-line wake-ups, a busy loop) breaks.
    assert result["cpu_s"] < 10


if __name__ == "__main__":
    if sys.argv[1] == "--run":
        _runner(
            sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
        )
    elif sys.argv[1] == "--bench":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            binary = os.path.join(tmp, "flood")
            subprocess.run(["cc", "-O2", "-o", binary, str(FLOOD_C)], check=True)
            res = _runner(binary, int(sys.argv[2]), UNITS, Path(tmp) / "logs")
        res.pop("tails")
        print(json.dumps(res), file=sys.stderr)
