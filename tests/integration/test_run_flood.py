"""A real ``vastinit run`` under a log flood: files get every line whatever stdout does, and
stdout gets every line too while something reads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness import REPO, wait_until, write_unit
from tests.integration.test_log_flood import flood_bin, flood_line  # noqa: F401 (fixture)
from vastinit.logs.flow import STALL_S

UNITS = 4
LINES = 250_000  # 4 x 250k = 1,000,000 lines in total


def _write_units(units_dir: Path, binary: str) -> None:
    for i in range(UNITS):
        # Half the units write one line per write(2) (the reader's worst case), half in blocks.
        mode = ', "--line-per-write"' if i % 2 == 0 else ""
        write_unit(
            units_dir,
            f"flood{i}",
            f"""
            type = "oneshot"
            command = ["{binary}", "{LINES}"{mode}]
            [log]
            max_size = "1GiB"
        """,
        )


def _start(units_dir: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "vastinit", "run", "--units", str(units_dir)]
    argv += ["--log-dir", str(log_dir), "--no-control"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)


def _check_files(log_dir: Path) -> float:
    """Wait until every flood line is in the files, check them; the seconds it took."""
    started = time.monotonic()
    files = [log_dir / f"flood{i}.log" for i in range(UNITS)]
    wait_until(
        lambda: all(f.exists() and f.stat().st_size >= LINES * 100 for f in files),
        120,
        "every flood line in the files",
        interval=0.05,
    )
    elapsed = time.monotonic() - started
    want = b"".join(flood_line(n) for n in range(LINES))
    for f in files:
        data = f.read_bytes()
        assert len(data) == LINES * 100, f"{f.name}: {len(data)} bytes"
        # Spot-check the sequence exactly at both ends and a stride through the middle;
        # any lost, duplicated or reordered line shifts every later offset.
        for n in (0, 1, LINES // 3, LINES // 2, LINES - 2, LINES - 1):
            assert data[n * 100 : (n + 1) * 100] == flood_line(n), f"{f.name} line {n}"
        assert data == want, f.name
    return elapsed


def test_million_lines_reach_files_in_order_while_stdout_is_stalled(
    flood_bin: str,  # noqa: F811
    units_dir: Path,
    tmp_path: Path,
) -> None:
    _write_units(units_dir, flood_bin)
    # vastinit's stdout is a pipe nobody reads until the end: it fills, then stalls.
    proc = _start(units_dir, tmp_path / "logs")
    try:
        elapsed = _check_files(tmp_path / "logs")
        # The writers were held back (backpressure) only until stdout had made no progress
        # for the stall window, then ran free. Generous margin: start-up, a loaded host.
        assert elapsed < STALL_S + 30, f"flood took {elapsed:.1f}s with stdout stalled"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"lines (stdout was blocked)" in out, "no line said that stdout lines were dropped"
    # Whatever reached stdout is whole lines only: prefixed lines are never spliced.
    for line in out.split(b"\n"):
        if line.startswith(b"flood"):
            assert len(line.split(b"| ", 1)[1]) == 99, line[:120]


def test_million_lines_all_reach_a_stdout_that_is_read(
    flood_bin: str,  # noqa: F811
    units_dir: Path,
    tmp_path: Path,
) -> None:
    _write_units(units_dir, flood_bin)
    proc = _start(units_dir, tmp_path / "logs")
    assert proc.stdout is not None
    chunks: list[bytes] = []

    def read_stdout() -> None:  # a live consumer, as `docker logs` drains PID 1's stdout
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            chunks.append(chunk)

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        _check_files(tmp_path / "logs")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(30)
        proc.stdout.close()
    assert proc.returncode == 0
    assert not reader.is_alive(), "vastinit's stdout never reached EOF"
    out = b"".join(chunks)
    assert b"(stdout was blocked)" not in out, "lines were dropped from a stdout being read"
    lines = out.split(b"\n")
    assert lines.pop() == b"", "stdout ends mid-line"
    want = b"".join(flood_line(n) for n in range(LINES))
    for i in range(UNITS):
        # Every line, whole and in order, per unit (units interleave by chunks).
        prefix = f"flood{i} ".encode()
        got = b"".join(ln.split(b"| ", 1)[1] + b"\n" for ln in lines if ln.startswith(prefix))
        assert got == want, f"flood{i} on stdout: {len(got) // 100} lines, want {LINES}"
